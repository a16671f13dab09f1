"""Rollouts: prompts with images through the processor, G sampled completions per prompt, log-probs.

Why: sampling dominates a GRPO step. `sample_groups` encodes each prompt's image and prefills its prompt
**once**, repeats the KV cache G times and decodes the G continuations together, instead of pushing G
copies of the same image through the vision tower as `generate(num_return_sequences=G)` does.
`completion_logprobs` computes per-token log-probs of the completions from hidden states, applying the
LM head a few rows at a time, so full-vocabulary float32 logits never exist for the whole batch.

Simplified versus `transformers.generate`: only temperature / top-k / top-p sampling and greedy decoding
(no beams, no repetition penalties). Qwen's vision and role control tokens are never sampled: a model
that emits `<|image_pad|>` would crash the next forward ("image features and image tokens do not match").
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from othinklab.errors import DataError
from othinklab.tasks.base import Sample

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
"""Either ends a completion (Qwen2-VL's generation config lists both as EOS)."""
NEVER_SAMPLED = ("<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
"""Control tokens masked out of every sampling distribution."""


def messages_for(sample: Sample) -> list[dict[str, Any]]:
    """R1-V's user turn: the image first, then the question with the format instruction; no system prompt."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.prompt_text}]}]


def prompt_text(processor: Any, sample: Sample) -> str:
    """The chat-templated prompt string, ending with the assistant header."""
    return processor.apply_chat_template(messages_for(sample), add_generation_prompt=True, tokenize=False)


def encode_prompts(
    processor: Any, samples: list[Sample], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Tokenise prompts and preprocess images as one left-padded batch (ready for the model)."""
    tok = processor.tokenizer
    old_side, tok.padding_side = tok.padding_side, "left"
    try:
        enc = processor(
            text=[prompt_text(processor, s) for s in samples],
            images=[s.image.convert("RGB") for s in samples],
            return_tensors="pt",
            padding=True,
        )
    finally:
        tok.padding_side = old_side
    return {k: v.to(device) for k, v in enc.items()}


def token_ids(processor: Any, names: tuple[str, ...]) -> list[int]:
    """Ids of the named special tokens that exist in this tokenizer's vocabulary."""
    tok = processor.tokenizer
    vocab = tok.get_vocab()
    return [vocab[n] for n in names if n in vocab]


@dataclass
class RowShard:
    """This process's rows of a batch sampled across data-parallel processes.

    Sampling draws the random numbers of the *whole* batch (`total` rows) and uses rows `start:start +
    rows`, and decoding runs until every process's rows are done (`all_done`), so N processes draw
    exactly the tokens one process would: the same seed gives the same run at any world size.
    """

    start: int
    total: int
    all_done: Callable[[torch.Tensor], bool]


@dataclass
class Rollout:
    """G completions for each of B prompts; rows `[g*G:(g+1)*G]` belong to prompt g."""

    prompt: dict[str, torch.Tensor]
    """The encoded prompts (B rows), as `encode_prompts` returned them."""
    completion_ids: torch.Tensor
    """(B*G, T) sampled token ids, padded after the stop token."""
    completion_mask: torch.Tensor
    """(B*G, T) 1 for tokens that count (up to and including the stop token)."""
    texts: list[str]
    """Decoded completions, special tokens removed."""
    truncated: torch.Tensor
    """(B*G,) True where the completion hit `max_new_tokens` without a stop token."""
    group_size: int

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)


def _filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then nucleus filtering (masked entries become -inf)."""
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        remove = probs.cumsum(dim=-1) - probs > top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def _text_model_parts(model: Any) -> tuple[Any, Any]:
    """(the multimodal backbone returning hidden states, the LM head), through a peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.lm_head


@torch.no_grad()
def sample_groups(
    model: Any,
    processor: Any,
    samples: list[Sample],
    num_generations: int = 8,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    stop_at_eos: bool = True,
    shard: RowShard | None = None,
) -> Rollout:
    """Sample `num_generations` completions per sample from one shared prefill per prompt.

    `stop_at_eos=False` masks the stop tokens out too, so every completion runs to `max_new_tokens`
    (benchmarks use it to compare equal work).
    """
    was_training = model.training
    model.eval()  # no dropout while sampling; and gradient checkpointing turns the KV cache off in train mode
    try:
        return _sample_groups(
            model,
            processor,
            samples,
            num_generations,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            greedy,
            generator,
            stop_at_eos,
            shard,
        )
    finally:
        model.train(was_training)


def _sample_groups(
    model: Any,
    processor: Any,
    samples: list[Sample],
    num_generations: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    greedy: bool,
    generator: torch.Generator | None,
    stop_at_eos: bool,
    shard: RowShard | None = None,
) -> Rollout:
    device = next(model.parameters()).device
    backbone, lm_head = _text_model_parts(model)
    G = int(num_generations)
    enc = encode_prompts(processor, samples, device)
    check_context(model, enc, samples, max_new_tokens)
    stop = torch.tensor(token_ids(processor, STOP_TOKENS), device=device, dtype=torch.long)
    banned = token_ids(processor, NEVER_SAMPLED) + ([] if stop_at_eos else stop.tolist())
    pad_id = processor.tokenizer.pad_token_id

    backbone.rope_deltas = None  # stale deltas from an earlier batch must not leak in
    out = backbone(**enc, use_cache=True)
    cache = out.past_key_values
    hidden = out.last_hidden_state[:, -1:]
    # Share the prefill: repeat the cache, the mask and the rotary offsets G times.
    cache.batch_repeat_interleave(G)
    attn = enc["attention_mask"].repeat_interleave(G, dim=0)
    deltas = backbone.rope_deltas.repeat_interleave(G, dim=0)
    hidden = hidden.repeat_interleave(G, dim=0)
    rows = attn.shape[0]
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens = []
    for t in range(max_new_tokens):
        logits = lm_head(hidden[:, -1]).float()
        if banned:
            logits[:, banned] = float("-inf")
        if greedy:
            nxt = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(_filter_logits(logits, temperature, top_k, top_p), dim=-1)
            nxt = _draw(probs, generator, shard)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens.append(nxt)
        done = done | torch.isin(nxt, stop)
        if (shard.all_done(done) if shard else bool(done.all())) or t == max_new_tokens - 1:
            break
        attn = torch.cat([attn, (~done | torch.isin(nxt, stop)).long()[:, None]], dim=1)
        # Qwen2-VL's text positions count real (unpadded) tokens, offset by the prefill's rope deltas.
        pos = (attn.sum(dim=1, keepdim=True) - 1 + deltas).view(1, rows, 1).expand(3, rows, 1)
        out = backbone(
            input_ids=nxt[:, None], attention_mask=attn, past_key_values=cache, position_ids=pos, use_cache=True
        )
        hidden = out.last_hidden_state
    ids = torch.stack(tokens, dim=1)
    is_stop = torch.isin(ids, stop)
    # mask = tokens up to and including the first stop token
    after_stop = (is_stop.long().cumsum(dim=1) - is_stop.long()) > 0
    mask = (~after_stop).long()
    ids = ids.masked_fill(after_stop, pad_id)
    truncated = ~is_stop.any(dim=1)
    texts = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    backbone.rope_deltas = None
    return Rollout(enc, ids, mask, texts, truncated, G)


def check_context(model: Any, enc: dict[str, torch.Tensor], samples: list[Sample], max_new_tokens: int) -> None:
    """Refuse prompts that cannot fit the model's context with their completion, naming the sample."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    limit = getattr(cfg, "max_position_embeddings", None)
    if not limit:
        return
    lengths = enc["attention_mask"].sum(dim=1).tolist()
    for sample, n in zip(samples, lengths):
        if n + max_new_tokens > limit:
            raise DataError(
                f"prompt of sample {sample.id!r} is {n} tokens (image included); with {max_new_tokens} completion "
                f"tokens it exceeds the model's context of {limit} tokens: shorten the question, lower "
                "model.max_pixels or grpo.max_completion_length"
            )


def _draw(probs: torch.Tensor, generator: torch.Generator | None, shard: RowShard | None) -> torch.Tensor:
    """One token per row from `probs`; with a shard, from this shard's rows of the whole batch's noise.

    `torch.multinomial(probs, 1)` is an exponential race, `argmax(probs / E)` with `E ~ Exp(1)` drawn
    for every row in order; drawing `E` for all `shard.total` rows and keeping ours reproduces it.
    """
    if shard is None:
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
    noise = torch.empty((shard.total, probs.shape[1]), device=probs.device, dtype=probs.dtype)
    noise.exponential_(1.0, generator=generator)
    return (probs / noise[shard.start : shard.start + probs.shape[0]]).argmax(dim=-1)


def repeat_prompt(prompt: dict[str, torch.Tensor], group_size: int) -> dict[str, torch.Tensor]:
    """Repeat each prompt row (and its image patches) `group_size` times, for full-sequence forwards."""
    out = {}
    grid = prompt.get("image_grid_thw")
    for k, v in prompt.items():
        if k == "pixel_values" and grid is not None:
            per_image = grid.prod(dim=-1).tolist()
            chunks = torch.split(v, per_image)
            out[k] = torch.cat([c for c in chunks for _ in range(group_size)])
        else:
            out[k] = v.repeat_interleave(group_size, dim=0)
    return out


def completion_logprobs(
    model: Any,
    prompt: dict[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    group_size: int = 1,
    chunk_size: int = 8,
    disable_adapter: bool = False,
) -> torch.Tensor:
    """Per-token log-probs `(B*G, T)` of `completion_ids` after their prompts; differentiable.

    `prompt` has B rows and is repeated `group_size` times. `disable_adapter=True` gives the reference
    model's log-probs under LoRA (same weights, adapters off, no second copy). The LM head runs on
    `chunk_size` rows at a time over the completion positions only.
    """
    backbone, lm_head = _text_model_parts(model)
    full = repeat_prompt(prompt, group_size) if group_size > 1 else dict(prompt)
    P = full["input_ids"].shape[1]
    T = completion_ids.shape[1]
    full["input_ids"] = torch.cat([full["input_ids"], completion_ids], dim=1)
    full["attention_mask"] = torch.cat(
        [full["attention_mask"], completion_mask.to(full["attention_mask"].dtype)], dim=1
    )
    if "mm_token_type_ids" in full:
        full["mm_token_type_ids"] = torch.cat(
            [full["mm_token_type_ids"], torch.zeros_like(completion_ids, dtype=full["mm_token_type_ids"].dtype)], dim=1
        )
    ctx = model.disable_adapter() if disable_adapter else nullcontext()
    with ctx:
        backbone.rope_deltas = None
        hidden = backbone(**full, use_cache=False).last_hidden_state[:, P - 1 : P + T - 1]
        backbone.rope_deltas = None
        out = []
        for start in range(0, hidden.shape[0], max(1, chunk_size)):
            logits = lm_head(hidden[start : start + chunk_size]).float()
            labels = completion_ids[start : start + chunk_size].unsqueeze(-1)
            out.append(logits.gather(-1, labels).squeeze(-1) - torch.logsumexp(logits, dim=-1))
    return torch.cat(out, dim=0)
