"""Held-out evaluation: greedy accuracy (the paper's metric) next to sampled accuracy, with 95% intervals.

Why: at small scale greedy accuracy swings by +-0.1 between evaluations (docs/design.md), so a single greedy
number hides whether RL moved the policy. Every figure here comes with its eval size and a Wilson
interval, sampled accuracy (k samples per prompt at the training temperature) is reported beside it, and
per-sample records are returned so failures can be inspected.

From the same n samples per prompt (no extra generation), `summarize` also reports the unbiased pass@k
(Chen et al. 2021: `1 - C(n-c, k) / C(n, k)` per prompt, averaged) for k = 1, 2, 4, ..., n and maj@n (the
majority vote of the extracted answers is right), each with sampled accuracy's prompt-counting Wilson
interval. A sample counts as correct when its accuracy reward is >= 0.5.

`evaluate_tasks` is the one entry point; `per_prompt` keeps each prompt's correctness so two models scored
on the same prompts can be compared pair by pair (`othinklab.stats`).
"""

from __future__ import annotations

import math
import time
from collections import Counter
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


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from `n` samples of which `c` are correct (Chen et al. 2021): the chance that k of
    them drawn without replacement include a correct one.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), round(pass_at_k(4, 1, 2), 4), pass_at_k(4, 0, 2)
    (0.25, 1.0, 0.5, 0.0)
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_ks(n: int) -> list[int]:
    """The k reported for n samples: 1, 2, 4, ... up to n, and n itself.

    >>> pass_ks(8), pass_ks(6), pass_ks(1)
    ([1, 2, 4, 8], [1, 2, 4, 6], [1])
    """
    ks = [2**i for i in range(n.bit_length()) if 2**i <= n]
    return ks if ks and ks[-1] == n else [*ks, n]


def majority_correct(predicted: list[Any], correct: list[bool]) -> float:
    """1.0 if the most common extracted answer (ties: the one seen first; no answer never votes) is right.

    >>> majority_correct(["3", "4", "4", None], [False, True, True, False])
    1.0
    >>> majority_correct([None, float("nan")], [False, False])
    0.0
    """
    votes = Counter(p for p in predicted if _votes(p))
    if not votes:
        return 0.0
    top = max(votes.values())
    winner = next(p for p in predicted if _votes(p) and votes[p] == top)
    return float(next(ok for p, ok in zip(predicted, correct) if p == winner))


def _votes(answer: Any) -> bool:
    """An extracted answer takes part in the vote (None, NaN from a DataFrame and "" do not)."""
    return answer is not None and answer == answer and answer != ""


def sampled_prompt_scores(records: pd.DataFrame) -> pd.DataFrame:
    """Per prompt (index `id`, evaluation order) of sampled records: `pass@k` for every k of `pass_ks(n)`
    and `maj@n`, with n the prompt's sample count (the smallest n over prompts names the columns)."""
    groups = list(records.groupby("id", sort=False))
    if not groups:
        return pd.DataFrame()
    n = min(len(g) for _, g in groups)
    rows = {}
    for pid, g in groups:
        correct = [a >= 0.5 for a in g["accuracy"]]
        row = {f"pass@{k}": pass_at_k(len(g), sum(correct), k) for k in pass_ks(n)}
        if "predicted" in g:  # records without extracted answers get no majority vote
            row[f"maj@{n}"] = majority_correct(list(g["predicted"]), correct)
        rows[pid] = row
    return pd.DataFrame.from_dict(rows, orient="index")


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
    """Accuracy (with its 95% Wilson interval), format rate, mean reward and length of some records. Sampled
    accuracy averages per prompt first, and its interval counts prompts (not samples) as `n`."""
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
        **_pass_columns(records, n),
    }


def _pass_columns(records: pd.DataFrame, n: int) -> dict[str, float]:
    """pass@k and maj@n with their Wilson intervals (prompts counted), for records with several samples
    per prompt; `{}` for greedy (one completion per prompt)."""
    if not len(records) or records.groupby("id").size().min() < 2:
        return {}
    out: dict[str, float] = {}
    for col, per in sampled_prompt_scores(records).items():
        value = float(per.mean())
        out[col] = value
        out[f"{col}_lo"], out[f"{col}_hi"] = wilson_interval(value * n, n)
    return out


def evaluate_tasks(
    model: Any,
    processor: Any,
    samples_by_task: dict[str, list[Sample]] | list[Sample],
    num_samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 32,
    format_weight: float = 1.0,
    seed: int = 0,
    prompt: str | None = None,
) -> pd.DataFrame:
    """Greedy and (`num_samples` per prompt) sampled records for one or several eval tasks in one pass each,
    with `eval_task` and `mode` columns; `summary_table` makes them one row per mode.

    `samples_by_task`: `{eval task: samples}`, or a plain list (one task, named `""`). `prompt`: the format
    asked for (`None` keeps each sample's own). All tasks' prompts share the batches, so a small eval set
    per task still fills them; each pass draws from a generator seeded with `seed` (reproducible per seed).
    """
    if not isinstance(samples_by_task, dict):
        samples_by_task = {"": list(samples_by_task)}
    keyed = [
        (task, s)
        for task, samples in samples_by_task.items()
        for s in (with_prompt(samples, prompt) if prompt else samples)
    ]
    if not keyed:
        raise ValueError("evaluate_tasks needs at least one sample")
    flat = [s for _, s in keyed]
    by_id = {s.id: task for task, s in keyed}
    if len(by_id) != len(flat):
        raise ValueError("evaluate_tasks needs unique sample ids across tasks (records are keyed by id)")
    common = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, format_weight=format_weight, seed=seed)
    parts = [generate_records(model, processor, flat, greedy=True, **common).assign(mode="greedy")]
    if num_samples > 0:
        sampled = generate_records(
            model, processor, flat, num_samples=num_samples, greedy=False, temperature=temperature, **common
        )
        parts.append(sampled.assign(mode="sampled"))
    records = pd.concat(parts, ignore_index=True)
    return records.assign(eval_task=records["id"].map(by_id))


def summary_table(records: pd.DataFrame) -> pd.DataFrame:
    """One `summarize` row per mode (`greedy`, then `sampled` when drawn) of `evaluate_tasks` records."""
    return pd.DataFrame([summarize(records[records["mode"] == m], m) for m in dict.fromkeys(records["mode"])])


def per_prompt(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (eval_task, prompt id): greedy correctness (0/1) and the sampled correct fraction, in
    the order the prompts were evaluated (the pairing key of `othinklab.stats`)."""
    order = list(dict.fromkeys(records["id"]))
    acc = records.groupby(["eval_task", "id", "mode"], sort=False)["accuracy"].mean().unstack("mode")
    acc = acc.reindex(columns=["greedy", "sampled"])
    acc.columns.name = None
    acc = acc.reset_index()
    sampled = records[records["mode"] == "sampled"]
    if len(sampled) and sampled.groupby("id").size().min() >= 2:  # pass@k and maj@n per prompt
        scores = pd.concat({t: sampled_prompt_scores(g) for t, g in sampled.groupby("eval_task", sort=False)})
        acc = acc.merge(scores, left_on=["eval_task", "id"], right_index=True, how="left")
    acc["_order"] = acc["id"].map({k: i for i, k in enumerate(order)})
    return acc.sort_values("_order").drop(columns="_order").reset_index(drop=True)


def format_summary(table: pd.DataFrame, label: str = "") -> list[str]:
    """One line per mode of a `summary_table`: accuracy with its 95% interval, format, reward, n; then, for
    the sampled mode, one line per pass@k / maj@n with its interval."""
    prefix = f"{label:<7}" if label else ""
    lines = []
    for _, r in table.iterrows():
        lines.append(
            f"  {prefix}{r['mode']:<13} accuracy {r['accuracy']:.3f} [95% CI {r['accuracy_lo']:.3f}, {r['accuracy_hi']:.3f}]  "
            f"format {r['format']:.3f}  reward {r['reward']:.3f} ± {1.96 * r['reward_se']:.3f}  (n={r['n']} prompts)"
        )
        for col in pass_columns(r):
            lines.append(
                f"  {prefix}{'':<13} {col:<8} {r[col]:.3f} [95% CI {r[col + '_lo']:.3f}, {r[col + '_hi']:.3f}]"
            )
    return lines


def pass_columns(row: Any) -> list[str]:
    """The pass@k and maj@n names present (and not NaN) in a summary row, dict or per-prompt frame, k ascending."""
    keys = [k for k in row.keys() if str(k).startswith(("pass@", "maj@")) and "_" not in str(k)]
    if isinstance(row, pd.DataFrame):
        return [k for k in keys if row[k].notna().any()]
    return [k for k in keys if isinstance(row[k], float | int) and not math.isnan(row[k])]


def cross_task_matrix(results: pd.DataFrame, metric: str = "greedy_accuracy") -> pd.DataFrame:
    """Rows: (train task, method); columns: eval task; cells: `metric` averaged over seeds. `results` has one
    row per (method, train_task, seed, eval_task), as `othinklab grid` writes."""
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
    t0 = time.perf_counter()
    table = summary_table(evaluate_tasks(model, processor, samples, seed=seed, **settings))
    out: dict[str, float] = {}
    for _, r in table.iterrows():
        mode = r["mode"]
        out.update({f"eval/{mode}_{k}": float(r[k]) for k in ("accuracy", "accuracy_lo", "accuracy_hi", "format")})
        out.update({f"eval/{col}": float(r[col]) for col in pass_columns(r)})
    out["eval/n"] = float(len(samples))
    out["eval/seconds"] = time.perf_counter() - t0
    return out
