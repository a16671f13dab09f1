"""What one GRPO step writes: its `metrics.jsonl` row, its completions for `rollouts.jsonl` and the
failed reward calls for `reward_errors.jsonl`.

Why: the training step computes; this module turns a step's generation batches into rows, so the
step's phases stay short and a new column (or a new log sink, via `RunLog`'s callbacks) has one home.
Under data parallelism every rank summarises its own batches; rank 0 merges them and alone writes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from othinklab.checkpoint import RUN_LOGS
from othinklab.grpo import zero_spread_fraction
from othinklab.kl import kl_estimate
from othinklab.metrics import JsonlWriter
from othinklab.runs import image_name, save_image
from othinklab.token_text import token_pieces


def batch_summary(b: Any) -> dict[str, Any]:
    """What the metrics row needs from one generation batch (a `trainer.GenerationBatch`), small enough
    to gather across ranks."""
    r = b.rollout
    return {
        "rewards": b.rewards,
        "adv": b.advantages,
        "accuracy": [s.accuracy for s in b.scores],
        "format": [s.format for s in b.scores],
        "lengths": r.lengths.cpu(),
        "truncated": r.truncated.cpu(),
        "errors": sum(e is not None for e in b.errors),
    }


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch summaries of all ranks as one (rank order = the single-process order)."""
    out: dict[str, Any] = {}
    for k in parts[0]:
        vals = [p[k] for p in parts]
        if isinstance(vals[0], torch.Tensor):
            out[k] = torch.cat(vals)
        elif isinstance(vals[0], list):
            out[k] = [x for v in vals for x in v]
        else:
            out[k] = sum(vals)
    return out


def metrics_row(
    step: int,
    beta: float,
    batches: list[dict],
    G: int,
    stats: dict[str, float],
    outcome: Any,
    times: dict,
    step_s: float,
) -> dict[str, Any]:
    """The step's `metrics.jsonl` row (every key is defined in `metrics.METRICS`), from merged summaries and
    the optimizer step's `outcome` (a `trainer.StepOutcome`: gradient norm, learning rate, finite)."""
    m = merge(batches)  # the step's batches as one, as the ranks' are merged
    rewards, adv, acc, fmt = m["rewards"], m["adv"], m["accuracy"], m["format"]
    lengths, truncated = m["lengths"].float(), m["truncated"].float()
    return {
        "step": step,
        "kl/beta": beta,
        "kl/value": stats.get("kl/value", float("nan")),
        "reward/total": rewards.mean().item(),
        "reward/accuracy": sum(acc) / len(acc),
        "reward/format": sum(fmt) / len(fmt),
        "reward/std": rewards.view(-1, G).std(dim=1).mean().item(),
        "reward/errors": m["errors"],
        "advantage/abs_mean": adv.abs().mean().item(),
        "advantage/max": adv.max().item(),
        "groups/zero_spread": zero_spread_fraction(rewards, G),
        "groups/zero_spread_accuracy": zero_spread_fraction(torch.tensor(acc, dtype=torch.float32), G),
        "completion/length": lengths.mean().item(),
        "completion/truncated": truncated.mean().item(),
        "clip/fraction": stats.get("clip/fraction", 0.0),
        "clip/low_fraction": stats.get("clip/low_fraction", 0.0),
        "clip/high_fraction": stats.get("clip/high_fraction", 0.0),
        "policy/entropy": stats.get("policy/entropy", float("nan")),
        "ratio/mean": stats.get("ratio/mean", 1.0),
        "loss/total": stats["loss/total"],
        "loss/policy": stats.get("loss/policy", 0.0),
        "loss/kl": stats.get("loss/kl", 0.0),
        "grad/norm": outcome.grad_norm,
        "lr": outcome.lr,
        "time/step_s": step_s,
        "time/rollout_s": times["rollout"],
        "time/reference_s": times["reference"],
        "time/policy_s": times["policy"],
        "time/optimizer_s": times["optimizer"],
        "skipped/nonfinite": 0.0 if outcome.finite else 1.0,
    }


def rollout_rows(
    step: int, b: Any, G: int, processor: Any, logp: torch.Tensor | None = None
) -> tuple[list[dict], dict[str, Any]]:
    """One row per completion, with its tokens, their log-probs `logp` (the policy's, from the loss pass)
    and per-token KL to the reference (k3) so the rollout inspector can colour them; and the prompt images
    by file name (saved once)."""
    r, tok, ref = b.rollout, processor.tokenizer, b.ref_logp
    kl = kl_estimate(logp, ref, "k3") if logp is not None and ref is not None else None
    rows, images = [], {}
    for i, text in enumerate(r.texts):
        s, sc = b.samples[i // G], b.scores[i]
        n = int(r.lengths[i])
        name = image_name(s)
        images.setdefault(name, s.image)
        rows.append(
            {
                "step": step,
                "prompt_id": s.id,
                "group": b.group_offset + i // G,
                "sample": i % G,
                "problem": s.problem,
                "answer": s.answer,
                "completion": text,
                "reward": sc.total,
                "accuracy": sc.accuracy,
                "format": sc.format,
                "advantage": float(b.advantages[i]),
                "length": n,
                "truncated": bool(r.truncated[i]),
                "reward_error": b.errors[i],
                "image": f"images/{name}",
                "tokens": token_pieces(tok, r.completion_ids[i, :n].tolist()),  # readable: no U+FFFD pieces
                "token_logprobs": [round(float(v), 4) for v in logp[i, :n]] if logp is not None else None,
                "token_kl": [round(float(v), 5) for v in kl[i, :n]] if kl is not None else None,
            }
        )
    return rows, images


def error_rows(step: int, b: Any, G: int) -> list[dict[str, Any]]:
    """Completions whose reward function failed, with the error (written even when rollouts are not)."""
    return [
        {
            "step": step,
            "prompt_id": b.samples[i // G].id,
            "sample": i % G,
            "completion": b.rollout.texts[i],
            "solution": b.samples[i // G].solution,
            "error": err,
        }
        for i, err in enumerate(b.errors)
        if err is not None
    ]


class RunLog:
    """A run's append-only logs (written by rank 0 only) and the per-step callbacks.

    `callbacks` get each step's metrics row after it is on disk: the hook for live plots, experiment
    trackers or early stopping.
    """

    def __init__(self, run: Path, is_main: bool, callbacks: list[Callable[[dict[str, Any]], None]] | None = None):
        self.run = run
        self.is_main = is_main
        self.callbacks = list(callbacks or [])
        self.writers = {name: JsonlWriter(run / name) for name in RUN_LOGS} if is_main else {}

    def write_step(self, row: dict[str, Any], gathered: list[Any]) -> None:
        """Append the metrics row and every rank's rollout and error rows, save new images, call back."""
        if not self.is_main:
            return
        self.writers["metrics.jsonl"].write(row)
        for rank_rows, rank_errors in gathered:
            for (rollouts, images), errors in zip(rank_rows, rank_errors):
                for name, image in images.items():
                    save_image(self.run / "images", name, image)
                for rr in rollouts:
                    self.writers["rollouts.jsonl"].write(rr)
                for er in errors:
                    self.writers["reward_errors.jsonl"].write(er)
        for w in self.writers.values():
            w.flush()
        for cb in self.callbacks:
            cb(row)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
