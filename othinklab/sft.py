"""Supervised fine-tuning on task samples: the objective and loop of the paper's SFT baseline (the run is
`sft_run.run_sft`) and of the tiny base's warm-up (`warmup`, which sits below the model loader).

Why: the target is the sample's own `<think>reasoning</think><answer>x</answer>` (R1-V's SFT data has
reasoning traces in the same format), the loss covers completion tokens only, and the batch layout
(left-padded prompt, then right-padded completion) is exactly the GRPO policy pass's, so the two methods
differ only in their objective.

Simplified versus R1-V's SFT: AdamW at a constant learning rate (R1-V: cosine with 10% warm-up), and a
token-mean negative log-likelihood over the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from othinklab.logprobs import completion_logprobs
from othinklab.sampling import encode_prompts
from othinklab.tasks.base import Sample


def encode_targets(
    processor: Any, samples: list[Sample], device: torch.device | str = "cpu", targets: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded target ids `(B, T)` (`target()`, or `targets`, + `<|im_end|>`) and their mask."""
    tok = processor.tokenizer
    eos = "<|im_end|>"
    texts = targets if targets is not None else [s.target() for s in samples]
    ids = [tok(t + eos, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(len(x) for x in ids)
    out = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return out.to(device), mask.to(device)


def sft_loss(
    model: Any, processor: Any, samples: list[Sample], chunk_size: int = 8, targets: list[str] | None = None
) -> torch.Tensor:
    """Mean negative log-likelihood of the targets' tokens given their prompts."""
    device = next(model.parameters()).device
    prompt = encode_prompts(processor, samples, device)
    ids, mask = encode_targets(processor, samples, device, targets)
    logp = completion_logprobs(model, prompt, ids, mask, chunk_size=chunk_size)
    return -(logp * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class SFTResult:
    """What a supervised run produced: per-step losses and the wall time."""

    losses: list[float]
    seconds: float


def train_sft(
    model: Any,
    processor: Any,
    batches: Iterator[list[Sample]],
    steps: int,
    learning_rate: float = 5e-4,
    max_grad_norm: float = 1.0,
    on_step: Callable[[int, float], None] | None = None,
    target_fn: Callable[[Sample], str] | None = None,
) -> SFTResult:
    """`steps` AdamW steps of `sft_loss` on successive batches; returns the losses.

    `target_fn(sample) -> str` replaces `sample.target()` as the supervised text (the tiny base's
    warm-up uses it to leave some targets without the tags, so the base's format is imperfect).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    model.train()
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        batch = next(batches)
        targets = [target_fn(s) for s in batch] if target_fn is not None else None
        loss = sft_loss(model, processor, batch, targets=targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return SFTResult(losses, time.perf_counter() - start)


def mixed_stream(tasks: list[Any], batch_size: int, split: str = "train", seed: int = 0) -> Iterator[list[Sample]]:
    """Endless seeded batches, each split evenly across `tasks` (fresh samples every batch)."""
    step = 0
    while True:
        batch: list[Sample] = []
        for j, task in enumerate(tasks):
            n = batch_size // len(tasks) + (1 if j < batch_size % len(tasks) else 0)
            batch += task.samples(n, split=split, seed=seed * 1_000_003 + step)
        step += 1
        yield batch
