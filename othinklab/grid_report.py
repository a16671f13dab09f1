"""The grid's reports: results, paired claims with intervals and verdicts, seed spread, tables.

Why: a claim such as "GRPO-D beats GRPO on counting" is about a *paired* difference (same seeds, same eval
prompts), so each is reported as that difference in accuracy points with a 95% interval counting seeds and
prompts as random (`othinklab.stats`), a verdict read off the interval only, and the paper's own numbers.
Nothing here trains or evaluates: reports are rebuilt from the grid's cache or shipped files at any time
(the shipped ones and the documentation's blocks by `scripts/make_reports.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from othinklab.plots import METHOD_ORDER
from othinklab.stats import mean_interval, paired_difference, seed_spread, variance_components
from othinklab.tasks import EVAL_SPLITS

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "results"
"""Where the powered run's results, claims and provenance are shipped with the project."""
EVAL_OF = {task: f"{task}:{split}" for task, split in EVAL_SPLITS.items()}
"""Train task -> the eval task it is judged on (the paper's split)."""
METRICS = ("greedy", "sampled", "pass@8")
"""Paired metrics of every claim: greedy, sampled accuracy, and pass@8 where a run drew 8 samples per prompt."""
ARM_SETTINGS = (
    "schedule", "beta", "beta_min", "beta_max", "explore_frac", "estimator", "placement",
    "reset_reference_every", "learning_rate",
)  # fmt: skip
"""KL and optimiser settings every results and per-prompt row of a trained GRPO arm carries as columns
(blank for untrained and SFT rows), so an arm is described by its settings, not only by its name."""


@dataclass(frozen=True)
class Claim:
    """`better` beats `worse` when both are trained on `train_task` and scored on `eval_task`."""

    better: str
    """Method claimed higher (an untrained method such as `base` ignores `train_task`)."""
    worse: str
    """Method claimed lower."""
    train_task: str
    """Train task of the trained side(s); `none` when both sides are untrained."""
    eval_task: str
    """Eval task both are scored on (`counting:ood`, `geometry:test`)."""
    label: str = ""
    """Short statement for the tables; derived from the fields when empty."""

    def text(self) -> str:
        where = "" if self.train_task == "none" else f"trained on {self.train_task}, "
        return self.label or f"{self.better} > {self.worse} ({where}eval {self.eval_task})"


def paper_claims(train_tasks: tuple[str, ...] = ("counting", "geometry")) -> tuple[Claim, ...]:
    """The paper's claims: GRPO-D beats GRPO and SFT on the trained task, RL (GRPO-D and GRPO) beats SFT
    on the other task, each method vs the base (same and other task); plus the prompt's cost on the base."""
    claims: list[Claim] = []
    for t in train_tasks:
        same, other = EVAL_OF[t], [e for k, e in EVAL_OF.items() if k != t]
        claims += [
            Claim("grpo_d", "grpo", t, same, f"GRPO-D > GRPO, same task ({t})"),
            Claim("grpo_d", "sft", t, same, f"GRPO-D > SFT, same task ({t})"),
        ]
        for e in other:
            claims += [
                Claim("grpo_d", "sft", t, e, f"GRPO-D > SFT, cross-task ({t} -> {e.split(':')[0]})"),
                Claim("grpo", "sft", t, e, f"GRPO > SFT, cross-task ({t} -> {e.split(':')[0]})"),
            ]
        for m in ("sft", "grpo", "grpo_d"):
            claims.append(Claim(m, "base", t, same, f"{m} > base, same task ({t})"))
            claims += [Claim(m, "base", t, e, f"{m} > base, cross-task ({t} -> {e.split(':')[0]})") for e in other]
    claims += [
        Claim("base_direct", "base", "none", e, f"direct prompt > think prompt, base ({e})") for e in EVAL_OF.values()
    ]
    return tuple(claims)


# --------------------------------------------------------------------------- reading the cache
MAX_CACHE_BYTES = 200_000_000
"""Largest cell cache read (bytes); a cell with 1000 prompts is well under 1 MB."""


def _read_bounded(path: Path) -> Any:
    """A cache file's JSON, reading at most `MAX_CACHE_BYTES` (raises on unreadable or truncated files)."""
    return json.loads(Path(path).read_bytes()[:MAX_CACHE_BYTES].decode("utf-8"))


def read_json_cache(path: Path) -> dict[str, Any]:
    """A JSON cache file's mapping, or {} (to recompute) if missing, truncated, unreadable or not a mapping."""
    try:
        data = _read_bounded(path)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def read_cell(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the cell, None), or (None, why its cache file cannot be used: unreadable, truncated, an older format),
    so `run_grid` recomputes the cell rather than letting the report drop it."""
    try:
        cell = _read_bounded(path)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, f"unreadable or truncated ({type(exc).__name__})"
    if not isinstance(cell, dict) or not isinstance(cell.get("per_prompt"), dict):
        return None, "an older format without per-prompt results"
    rows = cell.get("rows")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "method" in r for r in rows):
        return None, "no summary rows"
    return cell, None


def load_cells(out: Path, keys: set[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary rows, per-prompt rows) of the cached cells under `out/cache` (only `keys` if given)."""
    from othinklab.errors import UserError

    rows, per = [], []
    files = sorted((Path(out) / "cache").glob("*.json"))
    missing = sorted(set(keys or ()) - {f.stem for f in files})
    if missing:  # a report never silently drops a cell
        raise UserError(
            f"grid cache {str(Path(out) / 'cache')!r} lacks {len(missing)} cell(s) ({', '.join(missing[:4])}); "
            "rerun `othinklab grid` with the same preset and output directory to compute them"
        )
    for f in files:
        if keys is not None and f.stem not in keys:
            continue
        cell, problem = read_cell(f)
        if cell is None:
            raise UserError(
                f"grid cache file {str(f)!r} is {problem}; rerun `othinklab grid` with the same preset and output "
                "directory (it recomputes such cells) or delete the file"
            )
        rows += cell["rows"]
        r0 = cell["rows"][0]
        settings = {k: r0[k] for k in ARM_SETTINGS if k in r0}  # one arm per cell: the same for every eval task
        for ev, d in cell["per_prompt"].items():
            extra = [k for k in d if k.startswith(("pass@", "maj@"))]
            per += [
                {"method": r0["method"], "train_task": r0["train_task"], "seed": r0["seed"], "eval_task": ev,
                 "id": i, "greedy": g, "sampled": s, **{k: d[k][j] for k in extra}, **settings}
                for j, (i, g, s) in enumerate(zip(d["ids"], d["greedy"], d["sampled"]))
            ]  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(per)


def _order(df: pd.DataFrame) -> pd.DataFrame:
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return df.sort_values(
        ["train_task", "method", "seed", "eval_task"],
        key=lambda c: c.map(lambda m: rank.get(m, len(rank))) if c.name == "method" else c,
    ).reset_index(drop=True)


def results_table(rows: pd.DataFrame) -> pd.DataFrame:
    """results.csv: one row per (method, train task, seed, eval task); an untrained model is listed under
    every train task (it is the same model, evaluated once)."""
    if rows.empty:
        return rows
    untrained = rows[rows["train_task"] == "none"]
    tasks = sorted(set(rows["train_task"]) - {"none"}) or list(EVAL_OF)
    parts = [rows[rows["train_task"] != "none"]] + [untrained.assign(train_task=t) for t in tasks]
    return _order(pd.concat(parts, ignore_index=True))


# --------------------------------------------------------------------------- claims
def side_matrix(per: pd.DataFrame, method: str, train_task: str, eval_task: str, metric: str) -> pd.DataFrame:
    """Seeds x prompt ids (sorted) of one method's per-prompt correctness (`metric`: greedy, sampled or a
    pass@k; empty where the run did not record it, e.g. pass@8 from fewer than 8 samples per prompt)."""
    sub = per[(per["method"] == method) & (per["eval_task"] == eval_task)]
    if metric not in sub.columns or sub[metric].isna().any():
        return pd.DataFrame()
    if (sub["train_task"] != "none").any():
        sub = sub[sub["train_task"] == train_task]
    if sub.empty:
        return pd.DataFrame()
    return sub.groupby(["seed", "id"])[metric].mean().unstack("id").sort_index(axis=1)


def compute_claims(per: pd.DataFrame, claims: tuple[Claim, ...]) -> pd.DataFrame:
    """One row per (claim, metric): both sides' accuracy, the paired difference with its 95% interval
    and verdict, the half-width and the seeds a +-5-point interval would need (with its range over the
    seed variance's 95% interval), and the paper's numbers. An untrained side (train task `none`: one
    model whatever the seed) is broadcast over the other side's seeds; two trained sides pair by seed."""
    from othinklab.plots import paper_results, paper_value

    paper = paper_results()
    rows = []
    groups = {k: g for k, g in per.groupby(["method", "eval_task"])}
    untrained = set(per.loc[per["train_task"] == "none", "method"])

    @cache
    def side(method: str, task: str, ev: str, metric: str) -> pd.DataFrame:
        g = groups.get((method, ev))
        return pd.DataFrame() if g is None else side_matrix(g, method, task, ev, metric)

    for c in claims:
        for metric in METRICS:
            a = side(c.better, c.train_task, c.eval_task, metric)
            b = side(c.worse, c.train_task, c.eval_task, metric)
            if a.empty or b.empty:
                continue
            if list(a.columns) != list(b.columns):
                raise ValueError(f"{c.text()}: the two sides were not scored on the same eval prompts")
            for name, side_ in ((c.better, a), (c.worse, b)):
                if name in untrained and len(side_) != 1:
                    raise ValueError(f"{c.text()}: untrained {name!r} has {len(side_)} rows; it is one model")
            if c.better not in untrained and c.worse not in untrained:
                common = a.index.intersection(b.index)
                a, b = a.loc[common], b.loc[common]
            r = paired_difference(a.to_numpy(), b.to_numpy())
            vc = variance_components(100.0 * (a.to_numpy() - b.to_numpy()))  # broadcast: untrained has one row
            need = vc.seeds_range(5.0) if r.n_seeds > 1 else (None, None, None)
            pb = paper_value(paper, c.better, c.train_task, c.eval_task) if metric == "greedy" else float("nan")
            pw = paper_value(paper, c.worse, c.train_task, c.eval_task) if metric == "greedy" else float("nan")
            rows.append(
                {
                    "claim": c.text(),
                    "metric": metric,
                    "better": c.better,
                    "worse": c.worse,
                    "train_task": c.train_task,
                    "eval_task": c.eval_task,
                    "paper_better": pb,
                    "paper_worse": pw,
                    "paper_diff": pb - pw,
                    "ours_better": round(100 * float(a.to_numpy().mean()), 2),
                    "ours_worse": round(100 * float(b.to_numpy().mean()), 2),
                    "diff": round(r.diff, 2),
                    "lo": round(r.lo, 2),
                    "hi": round(r.hi, 2),
                    "verdict": r.verdict,
                    "n_seeds": r.n_seeds,
                    "n_prompts": r.n_prompts,
                    "halfwidth": round(vc.halfwidth(), 2),
                    "seeds_for_5pts": need[1],
                    "seeds_for_5pts_lo": need[0],
                    "seeds_for_5pts_hi": need[2],
                }
            )
    return pd.DataFrame(rows)


def spread_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Seed-to-seed spread (points) of every trained cell's greedy and sampled accuracy (`rows` as cached:
    untrained models, listed under train task `none`, have no seeds to spread over)."""
    out = []
    for (m, t, e), sub in rows[rows["train_task"] != "none"].groupby(["method", "train_task", "eval_task"], sort=False):
        for metric in METRICS:
            col = metric if metric.startswith("pass@") else f"{metric}_accuracy"
            if col in sub.columns and sub[col].notna().all():
                out.append({"method": m, "train_task": t, "eval_task": e, "metric": metric,
                            **seed_spread(sub[col].to_numpy())})  # fmt: skip
    return pd.DataFrame(out)


def seeds_text(r: Any) -> str:
    """`12 (5-40)`: seeds for a +-5-point interval and its range; `-` none (more prompts needed first),
    `>10k` beyond 10,000 seeds."""

    def one(v: Any) -> str:
        return ">10k" if v is None or pd.isna(v) else str(int(v))

    if getattr(r, "n_seeds", 2) < 2 or r.seeds_for_5pts is None or pd.isna(r.seeds_for_5pts):
        return "-"
    if not hasattr(r, "seeds_for_5pts_lo"):  # a claims table from before the range was recorded
        return one(r.seeds_for_5pts)
    return f"{one(r.seeds_for_5pts)} ({one(r.seeds_for_5pts_lo)}-{one(r.seeds_for_5pts_hi)})"


def claims_markdown(claims: pd.DataFrame, note: str = "") -> str:
    """claims.md: one table per metric (claim, paper, ours, difference [95% interval], verdict, seeds)."""
    out = [note] if note else []
    for metric in METRICS:
        sub = claims[claims["metric"] == metric]
        if sub.empty:
            continue
        paper = "paper (2B, greedy)" if metric == "greedy" else "paper"
        out += [
            f"**{metric} accuracy** (points)\n",
            f"| claim | {paper} | ours | difference [95% CI] | verdict | seeds for ±5 (range) |",
            "|---|---|---|---|---|---|",
        ]
        for r in sub.itertuples():
            pp = "-" if np.isnan(r.paper_diff) else f"{r.paper_better:.1f} vs {r.paper_worse:.1f} ({r.paper_diff:+.1f})"
            out.append(
                f"| {r.claim} | {pp} | {r.ours_better:.1f} vs {r.ours_worse:.1f} | "
                f"{r.diff:+.1f} [{r.lo:+.1f}, {r.hi:+.1f}] | {r.verdict} | {seeds_text(r)} |"
            )
        out.append("")
    return "\n".join(out)


def claims_figure(claims: pd.DataFrame, metric: str = "greedy") -> Any:
    """Each claim's paired difference with its 95% interval (points), a line at 0, colour by verdict."""
    import matplotlib.pyplot as plt

    sub = claims[claims["metric"] == metric].iloc[::-1]
    colours = {"holds": "tab:green", "reversed": "tab:red", "not separable": "tab:gray", "borderline": "tab:olive"}
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(sub) + 1.2))
    y = np.arange(len(sub))
    for yi, r in zip(y, sub.itertuples()):
        ax.errorbar(r.diff, yi, xerr=[[r.diff - r.lo], [r.hi - r.diff]], fmt="o", color=colours.get(r.verdict, "k"))
        if not np.isnan(r.paper_diff):
            ax.plot(r.paper_diff, yi, "kx")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, sub["claim"])
    ax.set_xlabel(f"{metric} accuracy difference (points); x = the paper's 2B difference")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- tables and files
def _cell_text(sub: pd.DataFrame, per: pd.DataFrame) -> str:
    """Mean greedy accuracy over seeds (percent), seed range, and the 95% interval counting seeds and
    prompts as random (`stats.mean_interval`, the claims' variance). An untrained model counts once."""
    r = sub.iloc[0]
    m = side_matrix(per, r["method"], r["train_task"], r["eval_task"], "greedy")
    mean, lo, hi = mean_interval(100.0 * m.to_numpy())
    seeds = sub["greedy_accuracy"] * 100
    spread = f" ({seeds.min():.1f}-{seeds.max():.1f})" if len(m) > 1 else ""
    return f"{mean:.1f}{spread} [{max(lo, 0.0):.1f}, {min(hi, 100.0):.1f}]"


def grid_tables(df: pd.DataFrame, per: pd.DataFrame, label: str = "") -> tuple[str, str]:
    """(same_task.md, cross_task.md) text from results.csv's and per_prompt.csv's tables (`label` ends
    the note above each)."""
    methods = [m for m in METHOD_ORDER if m in set(df["method"])] + sorted(set(df["method"]) - set(METHOD_ORDER))
    note = (
        f"Greedy accuracy (%) on {int(df['n'].iloc[0])} held-out prompts per task, mean over "
        f"{df['seed'].nunique()} seed(s) (range), [95% interval over seeds and prompts, as the claims'; an "
        f"untrained model is one model, its interval over prompts only]. `base_direct` is the base under "
        f"the answer-only prompt.{label}\n\n"
    )
    tasks = [t for t in EVAL_OF if t in set(df["train_task"])]
    head = " | ".join(f"{t} -> {EVAL_OF[t]}" for t in tasks)
    lines = [f"| method | {head} |", "|---" * (len(tasks) + 1) + "|"]
    for m in methods:
        cells = [df[(df.method == m) & (df.train_task == t) & (df.eval_task == EVAL_OF[t])] for t in tasks]
        lines.append(f"| {m} | " + " | ".join(_cell_text(s, per) if len(s) else "-" for s in cells) + " |")
    same = note + "\n".join(lines) + "\n"
    evals = sorted(set(df["eval_task"]))
    lines = [f"| train task | method | {' | '.join(evals)} |", "|---|---" + "|---" * len(evals) + "|"]
    for t in tasks:
        for m in methods:
            cells = [df[(df.method == m) & (df.train_task == t) & (df.eval_task == e)] for e in evals]
            lines.append(f"| {t} | {m} | " + " | ".join(_cell_text(s, per) if len(s) else "-" for s in cells) + " |")
    return same, note + "\n".join(lines) + "\n"


def claims_note(df: pd.DataFrame, label: str = "") -> str:
    """The line above claims.md's tables: sizes, how the interval and the verdict are made."""
    return (
        f"Paired differences (claimed better - claimed worse, accuracy points) over {df['seed'].nunique()} seed(s) "
        f"x {int(df['n'].iloc[0])} eval prompts per task; 95% interval counting seeds (Student's t) and prompts "
        "as random; verdict from the interval only (holds: above 0, reversed: below 0, borderline: an end within "
        f"0.2 of 0, else not separable). Seeds for ±5: the estimate (its range over the seed variance's 95% "
        f"interval).{label}\n"
    )


def write_reports(
    out: Path, claims: tuple[Claim, ...], keys: set[str] | None = None, preset: str = ""
) -> dict[str, Path]:
    """results.csv, per_prompt.csv, claims.csv/.md, seed_spread.csv, same/cross-task tables and a figure."""
    import matplotlib.pyplot as plt

    from othinklab.plots import cross_task_bars, paper_results
    from othinklab.runs import atomic_write

    out = Path(out)
    rows, per = load_cells(out, keys)
    df = results_table(rows)
    names = {
        "results": "results.csv",
        "per_prompt": "per_prompt.csv",
        "claims": "claims.csv",
        "claims_md": "claims.md",
        "seed_spread": "seed_spread.csv",
        "same_task": "same_task.md",
        "cross_task": "cross_task.md",
        "figure": "grid.png",
    }
    paths = {k: out / n for k, n in names.items()}
    atomic_write(paths["results"], df.to_csv(index=False))
    atomic_write(paths["per_prompt"], per.to_csv(index=False))
    table = compute_claims(per, claims)
    atomic_write(paths["claims"], table.to_csv(index=False))
    plumbing = " **Smoke preset: plumbing only, the numbers are noise.**" if preset.endswith("smoke") else ""
    atomic_write(paths["claims_md"], claims_markdown(table, claims_note(df, plumbing)))
    atomic_write(paths["seed_spread"], spread_table(rows).to_csv(index=False))
    same, cross = grid_tables(df, per, plumbing)
    atomic_write(paths["same_task"], same)
    atomic_write(paths["cross_task"], cross)
    fig = cross_task_bars(df, paper=paper_results())
    atomic_write(paths["figure"], lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- shipped results
def load_shipped_results(path: str | Path | None = None) -> dict[str, Any]:
    """The shipped run (`data/results/` unless `path`): `results`, `per_prompt` and `claims` tables, `provenance`
    dict, and the same/cross-task tables as text. Raises FileNotFoundError naming what is missing."""
    d = Path(path) if path else SHIPPED_DIR
    need = [d / "results.csv", d / "per_prompt.csv", d / "claims.csv", d / "provenance.json"]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no shipped grid results: missing {', '.join(missing)}")
    results, per = pd.read_csv(d / "results.csv"), pd.read_csv(d / "per_prompt.csv")
    same, cross = grid_tables(results, per)
    return {
        "results": results,
        "per_prompt": per,
        "claims": pd.read_csv(d / "claims.csv"),
        "provenance": json.loads((d / "provenance.json").read_text()),
        "same_task": same,
        "cross_task": cross,
    }
