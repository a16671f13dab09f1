"""Metric names with one-line definitions, append-only JSONL logs, and readers returning DataFrames.

Why: a run's story ("why did reward collapse at step 140?") is read from two files: `metrics.jsonl`
(one row per optimizer step) and `rollouts.jsonl` (every sampled completion). Writes are line-buffered
appends flushed per step, so a kill leaves at most one torn last line, which the readers skip.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

METRICS: dict[str, str] = {
    "step": "optimizer steps completed before this row's update (s in Eq. 3, from 0)",
    "kl/beta": "beta(s) used in this step's loss",
    "kl/value": "mean per-token KL(pi_theta || pi_ref) over completion tokens (estimator kl.estimator), even when beta is 0",
    "reward/total": "mean R = R_acc + alpha * R_format over the step's completions",
    "reward/accuracy": "mean accuracy reward (fraction of completions with the right answer)",
    "reward/format": "mean format reward (fraction of completions in <think>..</think><answer>..</answer> form)",
    "reward/std": "mean within-group standard deviation of the total reward",
    "advantage/abs_mean": "mean |A_i| over completions (0 when every group is constant)",
    "advantage/max": "largest advantage in the step",
    "groups/zero_spread": "fraction of groups whose G rewards are all equal (no learning signal)",
    "groups/zero_spread_accuracy": "fraction of groups whose G accuracy rewards are all equal (all right or all wrong: no accuracy signal)",
    "completion/length": "mean completion length in tokens (stop token included)",
    "completion/truncated": "fraction of completions cut at grpo.max_completion_length",
    "clip/fraction": "fraction of completion tokens where the ratio clip is active (0 while num_iterations=1)",
    "clip/low_fraction": "fraction of completion tokens clipped at 1 - epsilon (ratio below it, negative advantage)",
    "clip/high_fraction": "fraction of completion tokens clipped at 1 + epsilon_high (ratio above it, positive advantage)",
    "policy/entropy": "mean per-token entropy (nats) of the policy's next-token distribution over completion tokens, from the loss pass (no extra forward)",
    "ratio/mean": "mean pi_theta / pi_old over tokens (1 while num_iterations=1)",
    "loss/total": "the minimised loss of Eq. 4",
    "loss/policy": "the clipped-surrogate part of the loss",
    "loss/kl": "beta(s) * KL part of the loss",
    "grad/norm": "global gradient norm before clipping",
    "skipped/nonfinite": "1 if this step's loss or gradient was NaN/inf and its update was skipped, else 0",
    "reward/errors": "completions whose reward function raised or returned a non-number (scored 0; see reward_errors.jsonl)",
    "lr": "learning rate used in this step",
    "time/step_s": "wall seconds of the whole step",
    "time/rollout_s": "seconds spent sampling completions",
    "time/reference_s": "seconds spent on reference (and old-policy) log-probs",
    "time/policy_s": "seconds spent on the policy forward and backward",
    "time/optimizer_s": "seconds spent in the optimizer step",
    "eval/greedy_accuracy": "greedy accuracy on train.eval_prompts held-out prompts after this row's update "
    "(only in rows where train.eval_every makes an evaluation due; time/step_s then includes it)",
    "eval/greedy_accuracy_lo": "lower end of the greedy accuracy's 95% Wilson interval",
    "eval/greedy_accuracy_hi": "upper end of the greedy accuracy's 95% Wilson interval",
    "eval/greedy_format": "fraction of greedy completions in the required format",
    "eval/sampled_accuracy": "accuracy of eval.num_samples completions per prompt at eval.temperature (mean per prompt)",
    "eval/sampled_accuracy_lo": "lower end of the sampled accuracy's 95% Wilson interval (prompts counted)",
    "eval/sampled_accuracy_hi": "upper end of the sampled accuracy's 95% Wilson interval (prompts counted)",
    "eval/sampled_format": "fraction of sampled completions in the required format",
    "eval/n": "held-out prompts evaluated",
    "eval/seconds": "wall seconds of the evaluation",
    **{
        f"eval/pass@{k}": f"unbiased pass@{k} (Chen et al. 2021) from the eval.num_samples sampled completions per prompt"
        for k in (1, 2, 4, 8, 16, 32, 64)
    },
    **{
        f"eval/maj@{n}": f"fraction of prompts whose majority-vote answer over {n} sampled completions is right"
        for n in (2, 4, 8, 16, 32, 64)
    },
}
"""Every key `metrics.jsonl` rows may hold, with its definition (pass@k / maj@n for power-of-two
eval.num_samples up to 64)."""


def _json_default(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def _clean(value: Any) -> Any:
    """NaN/inf -> None (JSON `null`): strict JSON readers reject `NaN`."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


class JsonlWriter:
    """Append-only JSONL file; each `write` is one complete line, written out by `flush` (once per step)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, row: dict[str, Any]) -> None:
        self._fh.write(json.dumps({k: _clean(v) for k, v in row.items()}, default=_json_default) + "\n")

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self._fh.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete rows of a JSONL file; a torn or corrupt line (from a kill) is skipped."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    with open(p, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn last line
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """`metrics.jsonl` of a run as a DataFrame (one row per step)."""
    return pd.DataFrame(read_jsonl(Path(run_dir) / "metrics.jsonl"))


def read_rollouts(run_dir: str | Path) -> pd.DataFrame:
    """`rollouts.jsonl` of a run as a DataFrame (one row per sampled completion)."""
    return pd.DataFrame(read_jsonl(Path(run_dir) / "rollouts.jsonl"))


def truncate_from_step(path: str | Path, step: int) -> int:
    """Drop rows with `row['step'] >= step` (logged after the checkpoint a resume starts from), and a torn
    or malformed tail; returns the number of rows kept.

    Rows are appended in step order, so only the tail is read, backwards, back to the last row logged
    before `step` (a long run's `rollouts.jsonl` is too big to parse whole); the file is then cut there in
    one `ftruncate` and synced. Rows before it are never rewritten."""
    p = Path(path)
    if not p.is_file():
        return 0
    with open(p, "rb+") as fh:
        end = fh.seek(0, os.SEEK_END)
        cut = _end_of_last_row_before(fh, end, step)
        if cut < end:
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())
        fh.seek(0)
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def _end_of_last_row_before(fh: Any, end: int, step: int, chunk: int = 1 << 20) -> int:
    """Byte offset just after the last complete line that is a row with an integer step < `step` (0: none)."""
    pos, buf = end, b""
    while b"\n" not in buf and pos > 0:  # skip a torn last line (no newline yet)
        n = min(chunk, pos)
        pos -= n
        fh.seek(pos)
        buf = fh.read(n) + buf
    if b"\n" not in buf:
        return 0
    buf = buf[: buf.rfind(b"\n") + 1]
    while buf:
        i = buf.rfind(b"\n", 0, len(buf) - 1)
        if i < 0 and pos > 0:  # the line starts in an earlier chunk
            n = min(chunk, pos)
            pos -= n
            fh.seek(pos)
            buf = fh.read(n) + buf
            continue
        try:
            row = json.loads(buf[i + 1 :])
        except ValueError:
            row = None
        value = row.get("step") if isinstance(row, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value < step:
            return pos + len(buf)
        buf = buf[: i + 1]
    return 0
