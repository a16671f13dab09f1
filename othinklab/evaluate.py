"""Held-out evaluation: greedy accuracy (the paper's metric) next to sampled accuracy, with 95% intervals.

Why: at small scale greedy accuracy swings by +-0.1 between evaluations (docs/design.md), so a single greedy
number hides whether RL moved the policy. Every figure here comes with its eval size and a Wilson
interval, and sampled accuracy (k samples per prompt at the training temperature) is reported beside it.
Per-sample records are returned so failures can be inspected.

`evaluate_tasks` is the grid's fast path: every eval task's prompts go through the shared-prefill sampler
together (one greedy pass, one sampled pass per model), and `per_prompt` keeps each prompt's correctness
so two models scored on the same prompts can be compared pair by pair (`othinklab.stats`).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from othinklab.rewards import extract_answer, score
from othinklab.sampling import sample_groups
from othinklab.tasks.base import Sample, with_prompt


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (well-behaved near 0 and 1).

    >>> [round(x, 3) for x in wilson_interval(5, 10)]
    [0.237, 0.763]
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def generate_records(
    model: Any,
    processor: Any,
    samples: list[Sample],
    num_samples: int = 1,
    greedy: bool = True,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 32,
    format_weight: float = 1.0,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (sample, completion): text, extracted answer, reward terms."""
    rows = []
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    per_call = max(1, batch_size // (1 if greedy else num_samples))
    for start in range(0, len(samples), per_call):
        batch = samples[start : start + per_call]
        r = sample_groups(
            model,
            processor,
            batch,
            num_generations=1 if greedy else num_samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            greedy=greedy,
            generator=gen,
        )
        G = r.group_size
        for i, text in enumerate(r.texts):
            s = batch[i // G]
            sc = score(text, s.solution, format_weight)
            rows.append(
                {
                    "id": s.id,
                    "task": s.task,
                    "sample": i % G,
                    "completion": text,
                    "predicted": extract_answer(text),
                    "answer": s.answer,
                    "accuracy": sc.accuracy,
                    "format": sc.format,
                    "reward": sc.total,
                    "length": int(r.lengths[i]),
                    "truncated": bool(r.truncated[i]),
                }
            )
    return pd.DataFrame(rows)


def summarize(records: pd.DataFrame, mode: str) -> dict[str, Any]:
    """Accuracy (with its 95% Wilson interval), format rate, mean reward and length of some records.

    Sampled accuracy averages per prompt first, and its interval counts prompts (not samples) as `n`.
    """
    per_prompt = records.groupby("id")[["accuracy", "format", "reward"]].mean()
    n = len(per_prompt)
    acc = float(per_prompt["accuracy"].mean()) if n else float("nan")
    lo, hi = wilson_interval(acc * n, n)
    return {
        "mode": mode,
        "n": n,
        "accuracy": acc,
        "accuracy_lo": lo,
        "accuracy_hi": hi,
        "format": float(per_prompt["format"].mean()) if n else float("nan"),
        "reward": float(per_prompt["reward"].mean()) if n else float("nan"),
        "reward_se": float(per_prompt["reward"].std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
        "length": float(records["length"].mean()) if len(records) else float("nan"),
    }


def evaluate(
    model: Any,
    processor: Any,
    samples: list[Sample],
    num_samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 32,
    format_weight: float = 1.0,
    seed: int = 0,
    return_records: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Greedy and sampled (`num_samples` per prompt) results on `samples`, one row per mode."""
    common = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, format_weight=format_weight, seed=seed)
    greedy = generate_records(model, processor, samples, greedy=True, **common)
    rows = [summarize(greedy, "greedy")]
    records = [greedy.assign(mode="greedy")]
    if num_samples > 0:
        sampled = generate_records(
            model, processor, samples, num_samples=num_samples, greedy=False, temperature=temperature, **common
        )
        rows.append(summarize(sampled, f"sampled@T={temperature:g}"))
        records.append(sampled.assign(mode="sampled"))
    table = pd.DataFrame(rows)
    return (table, pd.concat(records, ignore_index=True)) if return_records else table


def evaluate_tasks(
    model: Any,
    processor: Any,
    samples_by_task: dict[str, list[Sample]],
    num_samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 32,
    format_weight: float = 1.0,
    seed: int = 0,
    prompt: str = "think",
) -> pd.DataFrame:
    """Greedy and sampled records for several eval tasks in one pass each, with `eval_task` and `mode`
    columns. All tasks' prompts share the batches, so a small eval set per task still fills them; the
    sampled pass draws from one generator seeded with `seed` (reproducible per seed)."""
    keyed = [(task, s) for task, samples in samples_by_task.items() for s in with_prompt(samples, prompt)]
    if not keyed:
        raise ValueError("evaluate_tasks needs at least one sample")
    tasks = {id(s): task for task, s in keyed}
    flat = [s for _, s in keyed]
    if len({s.id for s in flat}) != len(flat):
        raise ValueError("evaluate_tasks needs unique sample ids across tasks (records are keyed by id)")
    by_id = {s.id: tasks[id(s)] for s in flat}
    common = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, format_weight=format_weight, seed=seed)
    parts = [generate_records(model, processor, flat, greedy=True, **common).assign(mode="greedy")]
    if num_samples > 0:
        sampled = generate_records(
            model, processor, flat, num_samples=num_samples, greedy=False, temperature=temperature, **common
        )
        parts.append(sampled.assign(mode="sampled"))
    records = pd.concat(parts, ignore_index=True)
    return records.assign(eval_task=records["id"].map(by_id))


def per_prompt(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (eval_task, prompt id): greedy correctness (0/1) and the sampled correct fraction, in
    the order the prompts were evaluated (the pairing key of `othinklab.stats`)."""
    order = list(dict.fromkeys(records["id"]))
    acc = records.groupby(["eval_task", "id", "mode"], sort=False)["accuracy"].mean().unstack("mode")
    acc = acc.reindex(columns=["greedy", "sampled"])
    acc.columns.name = None
    acc = acc.reset_index()
    acc["_order"] = acc["id"].map({k: i for i, k in enumerate(order)})
    return acc.sort_values("_order").drop(columns="_order").reset_index(drop=True)


def format_summary(table: pd.DataFrame, label: str = "") -> list[str]:
    """One line per mode of an `evaluate` table: accuracy with its 95% interval, format, reward, n."""
    prefix = f"{label:<7}" if label else ""
    return [
        f"  {prefix}{r['mode']:<13} accuracy {r['accuracy']:.3f} [95% CI {r['accuracy_lo']:.3f}, {r['accuracy_hi']:.3f}]  "
        f"format {r['format']:.3f}  reward {r['reward']:.3f} ± {1.96 * r['reward_se']:.3f}  (n={r['n']} prompts)"
        for _, r in table.iterrows()
    ]


def cross_task_matrix(results: pd.DataFrame, metric: str = "greedy_accuracy") -> pd.DataFrame:
    """Rows: (train task, method); columns: eval task; cells: `metric` averaged over seeds.

    `results` has one row per (method, train_task, seed, eval_task), as `othinklab grid` writes.
    """
    table = results.groupby(["train_task", "method", "eval_task"])[metric].mean().unstack("eval_task")
    table.columns.name = None
    return table


def periodic_eval(
    model: Any,
    processor: Any,
    samples: list[Sample],
    steps_done: int,
    every: int,
    total: int,
    settings: dict,
    seed: int,
) -> dict[str, float]:
    """`eval/...` keys for the metrics row of the update that made `steps_done` steps, when evaluation is due
    (every `every` steps and after the last; `{}` otherwise or without `samples`).

    The same prompts and sampling seed each time (common random numbers), so a change between two evaluations
    is the policy's, not the draw's. Generation uses its own seeded generator: training's random stream,
    and so its metrics, are the same with or without these evaluations.
    """
    if not samples or not every or (steps_done % every and steps_done != total):
        return {}
    import time

    t0 = time.perf_counter()
    table = evaluate(model, processor, samples, seed=seed, **settings)
    out: dict[str, float] = {}
    for _, r in table.iterrows():
        mode = "greedy" if r["mode"] == "greedy" else "sampled"
        out[f"eval/{mode}_accuracy"] = float(r["accuracy"])
        out[f"eval/{mode}_accuracy_lo"] = float(r["accuracy_lo"])
        out[f"eval/{mode}_accuracy_hi"] = float(r["accuracy_hi"])
        out[f"eval/{mode}_format"] = float(r["format"])
    out["eval/n"] = float(len(samples))
    out["eval/seconds"] = time.perf_counter() - t0
    return out
