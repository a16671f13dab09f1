"""Maintainer script: rebuild the shipped reports and the documentation's generated blocks from the data.

Why outside the package: users never need it. It reads the shipped per-prompt files (`data/results/` and
`data/results/ablations/<preset>/`), never trains or evaluates, and rewrites the claims tables, the
same/cross-task tables, `ablations.md`, and the blocks between the markers in docs/results.md (and in
README.md with `--readme`). `--check` only reports what would change (exit 1 if anything would).

    .venv/bin/python scripts/make_reports.py            # data/results/* and docs/results.md
    .venv/bin/python scripts/make_reports.py --readme   # also README.md's blocks, where it has the markers
    .venv/bin/python scripts/make_reports.py --check
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from othinklab.ablation_presets import ABLATIONS, FULL
from othinklab.grid_report import (
    EVAL_OF,
    METRICS,
    claims_markdown,
    claims_note,
    compute_claims,
    grid_tables,
    paper_claims,
    seeds_text,
)
from othinklab.mechanism import kl_correlation, unique_runs
from othinklab.stats import BORDERLINE_POINTS
from othinklab.tasks import EVAL_SPLITS

ROOT = Path(__file__).resolve().parent.parent
GRID_DIR = ROOT / "data" / "results"
ABLATION_DIR = GRID_DIR / "ablations"
GRID_MARKERS = ("<!-- grid-results:begin -->", "<!-- grid-results:end -->")
ABLATION_MARKERS = ("<!-- ablation-results:begin -->", "<!-- ablation-results:end -->")
DEMO_MARKERS = ("<!-- demo-results:begin -->", "<!-- demo-results:end -->")
KL_LAB_MARKERS = ("<!-- kl-lab-results:begin -->", "<!-- kl-lab-results:end -->")
DEMO_DIR = GRID_DIR / "demo"
VERDICTS = ("holds", "reversed", "borderline", "not separable")
MODEL = (
    "**How to read the intervals.** The model behind every interval: a paired difference is the sum of a "
    "mean, a seed effect, a prompt effect and a residual, independent and additive, on a balanced design "
    "(every seed scored on the same prompts), with roughly symmetric seed effects; the seed part is at "
    "Student's t with seeds - 1 degrees of freedom. With 3-5 seeds nothing can check the symmetry: under "
    "strongly skewed seed effects a null difference is called about 10% of the time instead of 5% "
    f"(`tests/test_stats.py`). A verdict with an interval end within {BORDERLINE_POINTS} points of 0 is "
    "`borderline`. The shared sampling seed is not a variance reduction (paired residuals were measured "
    "uncorrelated, -0.04 to +0.07)."
)


# --------------------------------------------------------------------------- shipped files
def _write(path: Path, text: str, check: bool, changed: list[str]) -> None:
    if not path.exists() or path.read_text() != text:
        changed.append(str(path.relative_to(ROOT)))
        if not check:
            path.write_text(text)


def rebuild_grid(check: bool, changed: list[str], d: Path = GRID_DIR) -> None:
    """claims.csv/.md and the same/cross-task tables from results.csv and per_prompt.csv."""
    df, per = pd.read_csv(d / "results.csv"), pd.read_csv(d / "per_prompt.csv")
    table = compute_claims(per, paper_claims())
    _write(d / "claims.csv", table.to_csv(index=False), check, changed)
    _write(d / "claims.md", claims_markdown(table, claims_note(df)), check, changed)
    same, cross = grid_tables(df, per)
    _write(d / "same_task.md", same, check, changed)
    _write(d / "cross_task.md", cross, check, changed)


def rebuild_ablations(check: bool, changed: list[str], root: Path = ABLATION_DIR) -> None:
    """Every shipped preset's claims.csv/.md (its own claims) and the study's ablations.md."""
    parts = []
    for name in shipped_presets(root, "per_prompt.csv"):
        d = root / name
        df, per = pd.read_csv(d / "results.csv"), pd.read_csv(d / "per_prompt.csv")
        table = compute_claims(per, ABLATIONS[name].all_claims())
        md = claims_markdown(table, claims_note(df))
        _write(d / "claims.csv", table.to_csv(index=False), check, changed)
        _write(d / "claims.md", md, check, changed)
        parts.append(f"## {name}\n\n{ABLATIONS[name].description}\n\n{md}")
    if parts:
        _write(root / "ablations.md", "# Ablations\n\n" + "\n\n".join(parts), check, changed)


def shipped_presets(root: Path, needs: str) -> list[str]:
    """The ablation presets shipped under `root` (the KL lab first, then the older studies), by a file each holds."""
    return [n for n in ("kl-lab", *FULL) if (root / n / needs).exists()]


# --------------------------------------------------------------------------- generated blocks
def _machine(prov: dict) -> str:
    m = prov.get("machine", {})
    isa = "/".join(m.get("cpu_isa", [])) or m.get("processor", "?")
    return f"{m.get('cpu_count', '?')} CPU cores ({m.get('cpu_model', 'model not recorded')}, {isa})"


def chance_verdicts(n: int, level: float = 0.95) -> tuple[float, int]:
    """If every one of `n` comparisons had a true difference of 0 (and they were independent): the
    expected count of `reversed` verdicts, and the count that chance alone reaches at most 95% of the time.

    >>> chance_verdicts(44)
    (1.1, 3)
    """
    p = (1 - level) / 2
    k, cum = 0, 0.0
    while True:
        cum += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if cum >= 0.95:
            return round(n * p, 2), k
        k += 1


def chance_line(claims: pd.DataFrame) -> str:
    """How many `reversed` (and as many `holds`) verdicts chance alone gives among each metric's comparisons."""
    counts = claims.groupby("metric", sort=False)["verdict"].agg(["size", lambda v: int((v == "reversed").sum())])
    n = int(counts["size"].max())
    expected, most = chance_verdicts(n)
    got = ", ".join(f"{m} {int(r.iloc[1])}" for m, r in counts.iterrows())
    return (
        f"**Chance.** If all {n} comparisons of a metric were truly 0 and independent, chance alone would give "
        f"about {expected:g} `reversed` (at most {most} in 95% of studies), and as many `holds`; reversed here: "
        f"{got}. The comparisons share arms, so they are not independent: a rough yardstick, not a correction."
    )


def headline(claims: pd.DataFrame) -> str:
    """GRPO-D vs GRPO on both primary metrics, side by side, with the seeds a ±5-point answer needs."""
    gg = claims[(claims["better"] == "grpo_d") & (claims["worse"] == "grpo")]
    parts = []
    for task, sub in gg.groupby("train_task", sort=False):
        cells = [
            f"{r.metric} {r.diff:+.1f} [{r.lo:+.1f}, {r.hi:+.1f}] {r.verdict}, ±{(r.hi - r.lo) / 2:.1f} with "
            f"{r.n_seeds} seeds, {seeds_text(r)} seeds for ±5"
            for r in sub.itertuples()
        ]
        parts.append(f"{task}: " + "; ".join(cells))
    return (
        "**GRPO-D vs GRPO, the paper's headline, on both primary metrics** (greedy, the paper's; sampled, "
        "the fraction of correct samples at T = 1, which averages over the policy instead of reading one "
        "argmax), points: " + ". ".join(parts) + "."
    )


def verdict_summary(claims: pd.DataFrame) -> str:
    """Which claims hold, are reversed, borderline or not separable, per metric, with their intervals."""
    out = []
    for metric in METRICS:
        sub = claims[claims["metric"] == metric]
        if sub.empty:
            continue
        parts = []
        for v in VERDICTS:
            hit = sub[sub["verdict"] == v]
            items = "; ".join(f"{r.claim} {r.diff:+.1f} [{r.lo:+.1f}, {r.hi:+.1f}]" for r in hit.itertuples())
            parts.append(f"*{v}* ({len(hit)}): {items or 'none'}")
        out.append(f"**{metric.capitalize()} accuracy.** " + ". ".join(parts) + ".")
    return "\n\n".join(out)


def grid_block(d: Path = GRID_DIR) -> str:
    """The grid's block, from the shipped files."""
    results, per = pd.read_csv(d / "results.csv"), pd.read_csv(d / "per_prompt.csv")
    claims = pd.read_csv(d / "claims.csv")
    prov = json.loads((d / "provenance.json").read_text())
    same, cross = grid_tables(results, per)
    head = (
        f"Generated from `data/results/` by `scripts/make_reports.py` (trained at commit "
        f"{str(prov.get('commit', '?'))[:7]}, `{prov.get('command', '?')}`, {prov.get('wall_seconds', 0) / 60:.0f} "
        f"min on {_machine(prov)})."
    )
    body = [head, headline(claims), verdict_summary(claims), chance_line(claims), MODEL, same, cross]
    body.append(claims_markdown(claims))
    return "\n".join([GRID_MARKERS[0], "\n\n".join(b.strip() for b in body), GRID_MARKERS[1]])


def ablation_block(root: Path = ABLATION_DIR) -> str:
    """The ablation study's block: each arm minus its reference on both tasks and on every paired metric,
    the tally against chance, and the KL mechanism's correlations, from the shipped files."""
    names = shipped_presets(root, "claims.csv")
    every = pd.concat([pd.read_csv(root / n / "claims.csv").assign(preset=n) for n in names], ignore_index=True)
    mech = unique_runs(pd.concat([pd.read_csv(root / n / "mechanism.csv") for n in names], ignore_index=True))
    prov = {n: json.loads((root / n / "provenance.json").read_text()) for n in names}
    first = prov[names[0]]
    sizes = first.get("sizes", {})
    commits = ", ".join(sorted({str(p.get("commit", "?"))[:7] for p in prov.values()}))
    wall = sum(p.get("wall_seconds", 0) for p in prov.values()) / 60
    head = (
        f"Generated from `data/results/ablations/` by `scripts/make_reports.py` (trained at commit {commits}; "
        f"`{first.get('command', 'othinklab ablate')}`: {wall:.0f} min of training, evaluation and KL measurement on "
        f"{_machine(first)}; {len(sizes.get('seeds', []))} seeds x {sizes.get('steps', '?')} steps on counting, "
        f"{sizes.get('num_eval', '?')} eval prompts per task, {sizes.get('eval_samples', '?')} samples per prompt). "
        "Points: arm minus reference, paired on seeds and prompts, 95% interval, verdict from the interval."
    )
    out = [head]
    for metric in METRICS:
        claims = every[every["metric"] == metric]
        if claims.empty:
            continue
        lines = [
            f"**{metric}**" + (" (accuracy)" if metric in ("greedy", "sampled") else " (unbiased, from the samples)"),
            "",
            "| preset | arm | vs | same task (counting:ood) | verdict | other task (geometry:test) | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for (preset, better, worse), sub in claims.groupby(["preset", "better", "worse"], sort=False):
            cells = []
            for t in (sub[sub["eval_task"] == EVAL_OF["counting"]], sub[sub["eval_task"] != EVAL_OF["counting"]]):
                r = t.iloc[0] if len(t) else None
                cells += (
                    ["-", "-"] if r is None else [f"{r['diff']:+.1f} [{r['lo']:+.1f}, {r['hi']:+.1f}]", r["verdict"]]
                )
            lines.append(f"| {preset} | {better} | {worse} | {' | '.join(cells)} |")
        tally = claims["verdict"].value_counts()
        count = ", ".join(f"{int(tally.get(v, 0))} {v}" for v in VERDICTS)
        lines += [
            "",
            f"Of {len(claims)} {metric} comparisons: {count} (`holds`: the arm is better, `reversed`: worse).",
        ]
        out.append("\n".join(lines))
    out.append(chance_line(every))
    corr = []
    for x, y, label in (
        ("kl_same", "cross_task_change", "forgetting vs KL on the trained task's prompts (RL's Razor)"),
        ("kl_cross", "cross_task_change", "forgetting vs KL on the other task's prompts"),
        ("kl_same", "same_task_gain", "same-task gain vs KL on the trained task's prompts"),
    ):
        c = kl_correlation(mech, y, x=x)
        corr.append(f"{label}: r = {c['r']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}], {c['verdict']}")
    out.append(
        f"Mechanism, over {len(mech)} trained runs (each run's KL to the base, k3 on its own samples, against its "
        f"greedy change from the base in points; Pearson r, 95% bootstrap interval over runs): {'; '.join(corr)}."
    )
    return "\n".join([ABLATION_MARKERS[0], "\n\n".join(out), ABLATION_MARKERS[1]])


def kl_lab_block(root: Path = ABLATION_DIR) -> str:
    """The README's short KL-lab table: each arm minus GRPO-D on the trained task, one column per metric."""
    claims = pd.read_csv(root / "kl-lab" / "claims.csv")
    claims = claims[claims["eval_task"] == EVAL_OF["counting"]]
    metrics = [m for m in METRICS if (claims["metric"] == m).any()]
    lines = [
        "| arm (trained on counting) | " + " | ".join(f"{m}, minus GRPO-D [95% CI]" for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for arm, sub in claims.groupby("better", sort=False):
        by = sub.set_index("metric")
        cells = [
            f"{by.loc[m, 'diff']:+.1f} [{by.loc[m, 'lo']:+.1f}, {by.loc[m, 'hi']:+.1f}] {by.loc[m, 'verdict']}"
            for m in metrics
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    mech = unique_runs(pd.read_csv(root / "kl-lab" / "mechanism.csv"))
    c = kl_correlation(mech, "cross_task_change", x="kl_same")
    tail = (
        f"Points on counting:ood, 5 seeds, paired. RL's Razor over {len(mech)} runs: forgetting of geometry vs KL on "
        f"the trained task's prompts r = {c['r']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}], {c['verdict']}. Generated "
        "by `scripts/make_reports.py --readme` from `data/results/ablations/kl-lab/`."
    )
    return "\n".join([KL_LAB_MARKERS[0], *lines, "", tail, KL_LAB_MARKERS[1]])


def demo_block(d: Path = DEMO_DIR) -> str:
    """The README's demo table: seed 0's figures first, then the range over every shipped seed."""
    df = pd.read_csv(d / "seeds.csv")
    prov = json.loads((d / "provenance.json").read_text())
    seeds = sorted(df["seed"].unique())
    n = int(df["n"].iloc[0])

    def cell(when: str, mode: str) -> tuple[str, str]:
        sub = df[(df["when"] == when) & (df["mode"] == mode)].set_index("seed")
        r0 = sub.loc[seeds[0]]
        first = f"{r0['accuracy']:.3f} [{r0['accuracy_lo']:.3f}, {r0['accuracy_hi']:.3f}]"
        acc = sub["accuracy"]
        return first, f"{acc.mean():.3f} ({acc.min():.3f}-{acc.max():.3f}, sd {acc.std(ddof=1):.3f})"

    steps = prov.get("steps", 120)
    task = prov.get("task", "counting")
    split = f"{task}:{EVAL_SPLITS[task]}"
    lines = [
        f"| held-out {split}, n = {n} | greedy, seed {seeds[0]} [95% CI] | greedy, seeds "
        f"{seeds[0]}-{seeds[-1]}: mean (range, sd) | sampled (4/prompt, T=1), seed {seeds[0]} [95% CI] | sampled, "
        f"seeds {seeds[0]}-{seeds[-1]}: mean (range, sd) |",
        "|---|---|---|---|---|",
    ]
    for when, label in (("before", "tiny base"), ("after", f"after GRPO-D, {steps} steps")):
        g0, gr = cell(when, "greedy")
        s0, sr = cell(when, "sampled")
        if when == "after":
            g0 = f"**{g0.split(' ')[0]}** {g0.split(' ', 1)[1]}"
        lines.append(f"| {label} | {g0} | {gr} | {s0} | {sr} |")
    gain = df[df["mode"] == "greedy"].pivot(index="seed", columns="when", values="accuracy")
    gain = 100 * (gain["after"] - gain["before"])
    tail = (
        f"Greedy gain over the base per seed: {', '.join(f'{g:+.1f}' for g in gain)} points. Generated by "
        f"`scripts/make_reports.py --readme` from `data/results/demo/` (`{prov.get('command', '?')}` at commit "
        f"{str(prov.get('commit', '?'))[:7]}, {prov.get('wall_seconds', 0) / 60:.0f} min on {_machine(prov)})."
    )
    return "\n".join([DEMO_MARKERS[0], *lines, "", tail, DEMO_MARKERS[1]])


def replace_block(text: str, markers: tuple[str, str], block: str) -> str | None:
    """`text` with its `begin ... end` block replaced by `block`; None if it has no such block."""
    begin, end = markers
    if begin not in text or end not in text:
        return None
    return text[: text.index(begin)] + block + text[text.index(end) + len(end) :]


def update_blocks(files: list[Path], check: bool, changed: list[str]) -> None:
    """Rewrite both blocks wherever a file has their markers (docs/results.md must have both)."""
    blocks = [(GRID_MARKERS, grid_block()), (ABLATION_MARKERS, ablation_block())]
    if (DEMO_DIR / "seeds.csv").exists():
        blocks.append((DEMO_MARKERS, demo_block()))
    if (ABLATION_DIR / "kl-lab" / "claims.csv").exists():
        blocks.append((KL_LAB_MARKERS, kl_lab_block()))
    for f in files:
        text = f.read_text()
        for markers, block in blocks:
            new = replace_block(text, markers, block)
            if new is None and f.name == "results.md" and markers not in (DEMO_MARKERS, KL_LAB_MARKERS):
                raise SystemExit(f"{f} has no {markers[0]} ... {markers[1]} block")
            text = text if new is None else new
        _write(f, text, check, changed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", action="store_true", help="also rewrite README.md's blocks (where it has markers)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if anything would change")
    args = ap.parse_args(argv)
    changed: list[str] = []
    rebuild_grid(args.check, changed)
    rebuild_ablations(args.check, changed)
    if args.check:  # the blocks read the rebuilt claims: compare them only once those are current
        if not changed:
            update_blocks([ROOT / "docs" / "results.md"] + ([ROOT / "README.md"] if args.readme else []), True, changed)
    else:
        update_blocks([ROOT / "docs" / "results.md"] + ([ROOT / "README.md"] if args.readme else []), False, changed)
    print(("would change: " if args.check else "changed: ") + (", ".join(changed) or "nothing"))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
