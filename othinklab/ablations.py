"""KL-schedule and loss-variant ablations on the embedded default, and the mechanism view behind them.

Why: OThink-MR1 fixes w/t = 0.3 and two beta ranges and never ablates them, and users now compare GRPO
variants the paper predates (Dr. GRPO, DAPO's clip-higher and token mean, no std scaling, masking
truncated completions). The presets here run those comparisons on the grid with the same seeds and the
same eval prompts as the GRPO-D default, so every claim is a *paired* difference with an interval.
The mechanism view asks what the KL term is for: does a run that stays close to the base (small
measured KL on the eval prompts) keep more of the other task?

Simplified versus a full study: one train task (counting, the paper's few-shot-sensitive one) and
short runs, so every preset together fits in under an hour on 2 CPU cores (see `estimate_seconds`);
clipping variants need `grpo.num_iterations > 1` (with one update per batch the ratio is 1 and clipping
does nothing), so the clip-higher variant reuses each batch twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from othinklab.grid import PAPER_METHODS, PRESETS, Method, Preset, estimate_seconds
from othinklab.grid_report import EVAL_OF, Claim
from othinklab.kl import kl_estimate
from othinklab.logprobs import completion_logprobs
from othinklab.sampling import sample_groups
from othinklab.tasks import Sample

# --------------------------------------------------------------------------- the presets
BASE, GRPO, GRPO_D = (next(m for m in PAPER_METHODS if m.name == n) for n in ("base", "grpo", "grpo_d"))
"""The paper's base, GRPO (constant beta 0.04 on counting) and GRPO-D (Eq. 3, 0.04..0.1, w/t 0.3): the
default every variant is paired against."""
COUNTING_D = ("kl.schedule=grpo_d", "kl.beta_min=0.04", "kl.beta_max=0.1", "kl.explore_frac=0.3")
"""GRPO-D's counting settings written out, so a variant states every KL setting it runs with."""


def _variant(name: str, *overrides: str) -> Method:
    """A GRPO method on the counting task: GRPO-D's settings, then `overrides` (later items win)."""
    return Method(name, "grpo", overrides=(*COUNTING_D, *overrides))


EXPLORE = tuple(_variant(f"grpo_d_w{w}", f"kl.explore_frac={w}") for w in (0.1, 0.5, 0.7))
"""w/t of Eq. 3 beside the paper's 0.3 (the default `grpo_d`)."""
BETA_RANGES = (
    _variant("beta_0.0-0.02", "kl.beta_min=0.0", "kl.beta_max=0.02"),  # the paper's geometry range
    _variant("beta_half", "kl.beta_min=0.02", "kl.beta_max=0.05"),
    _variant("beta_double", "kl.beta_min=0.08", "kl.beta_max=0.2"),
)
"""beta_min..beta_max of Eq. 3 beside the paper's counting range 0.04..0.1 (the default)."""
SCHEDULES = (
    _variant("linear_up", "kl.schedule=linear", "kl.beta_start=0.04", "kl.beta_end=0.1"),
    _variant("linear_down", "kl.schedule=linear", "kl.beta_start=0.1", "kl.beta_end=0.04"),
    _variant("cosine_down", "kl.schedule=cosine", "kl.beta_start=0.1", "kl.beta_end=0.04"),
    _variant("adaptive", "kl.schedule=adaptive", "kl.beta=0.04", "kl.target_kl=0.02", "kl.horizon=10"),
)
"""Schedule shapes over the same beta range as GRPO-D; constant beta is the paper's GRPO (`grpo`).
The adaptive controller gets a 10-step horizon: with the default 100 it could barely move in a short run."""
LOSSES = (
    _variant("scale_batch", "grpo.scale_rewards=batch"),
    _variant("scale_none", "grpo.scale_rewards=none"),
    _variant("dr_grpo", "grpo.scale_rewards=none", "grpo.aggregation=dr_grpo"),
    _variant("token_mean", "grpo.aggregation=token"),
    _variant("mask_truncated", "grpo.mask_truncated_completions=true"),
    _variant("two_updates", "grpo.num_iterations=2"),
    _variant("clip_higher", "grpo.num_iterations=2", "grpo.epsilon_high=0.28"),
)
"""Loss variants on GRPO-D's schedule. Clipping only acts when a batch is reused, so clip-higher runs two
updates per batch and is paired against `two_updates` (same reuse, symmetric clip) as well."""


def _claims(methods: tuple[Method, ...], against: str = "grpo_d") -> tuple[Claim, ...]:
    """Each variant vs `against`, on the trained task and on the other one (paired: same seeds, prompts)."""
    out = []
    for m in methods:
        for ev in EVAL_OF.values():
            where = "same task" if ev == EVAL_OF["counting"] else f"cross-task ({ev.split(':')[0]})"
            out.append(Claim(m.name, against, "counting", ev, f"{m.name} vs {against}, {where}"))
    return tuple(out)


SIZES = dict(
    seeds=(0, 1, 2),
    steps=30,
    prompts_per_step=6,
    num_generations=8,
    max_completion_length=48,
    num_eval=100,
    eval_samples=1,
    train_tasks=("counting",),
)
"""Shared by the full presets: 3 seeds, 30 steps of 6 prompts x G=8, 100 eval prompts per task x 1 sample,
counting only (the cross-task column is geometry). Chosen so all four presets fit in under an hour on 2 cores."""
KL_PROMPTS = 30
"""Eval prompts per eval task on which the mechanism view measures each run's KL to the base."""
KL_SAMPLES = 2
"""Sampled completions per prompt for that measurement."""

ABLATIONS: dict[str, Preset] = {
    "ablate-explore": Preset(
        **SIZES,
        methods=(BASE, GRPO_D, *EXPLORE),
        claims=_claims(EXPLORE),
        description="GRPO-D's w/t in {0.1, 0.3, 0.5, 0.7} on counting, paired against the paper's 0.3",
    ),
    "ablate-beta": Preset(
        **SIZES,
        methods=(BASE, GRPO_D, *BETA_RANGES),
        claims=_claims(BETA_RANGES),
        description="GRPO-D's beta range: the paper's two (0.04-0.1, 0.0-0.02), half and double of 0.04-0.1",
    ),
    "ablate-schedule": Preset(
        **SIZES,
        methods=(BASE, GRPO_D, GRPO, *SCHEDULES),
        claims=_claims((GRPO, *SCHEDULES)),
        description="schedule shapes (constant, linear up/down, cosine, adaptive) against GRPO-D",
    ),
    "ablate-loss": Preset(
        **SIZES,
        methods=(BASE, GRPO_D, *LOSSES),
        claims=_claims(LOSSES) + _claims(LOSSES[-1:], against="two_updates"),
        description="Dr. GRPO, DAPO token mean and clip-higher, no/batch std scaling, truncation masking",
    ),
    "ablate-smoke": Preset(
        seeds=(0,),
        steps=2,
        prompts_per_step=2,
        num_generations=4,
        max_completion_length=24,
        num_eval=8,
        eval_samples=1,
        train_tasks=("counting",),
        methods=(BASE, GRPO_D, LOSSES[2], LOSSES[-1]),
        claims=_claims((LOSSES[2], LOSSES[-1])),
        description="plumbing check for the tests (2 steps): its numbers are noise",
    ),
}
"""The ablation presets, registered in the grid's presets (`othinklab grid --preset ablate-explore`)."""
FULL = ("ablate-explore", "ablate-beta", "ablate-schedule", "ablate-loss")
"""The study: every full preset; `othinklab ablate` runs them in this order."""
PRESETS.update(ABLATIONS)

MEASURE_SECONDS_PER_SEQUENCE = 1.2 / 64
"""Cost of measuring KL on one sequence: sampling plus two no-grad log-prob passes, about a training one."""
LOAD_SECONDS = 3.0
"""Loading a run's checkpoint onto the base for the measurement."""


def ablation_seconds(preset: Preset) -> float:
    """Expected wall time of a fresh preset alone on 2 CPU cores: the grid's estimate plus the KL
    measurement of every trained run (an estimate from per-sequence costs, not a timing).

    >>> {k: round(ablation_seconds(ABLATIONS[k]) / 60, 1) for k in FULL}
    {'ablate-explore': 8.5, 'ablate-beta': 8.5, 'ablate-schedule': 12.7, 'ablate-loss': 16.9}
    >>> round(sum(ablation_seconds(ABLATIONS[k]) for k in FULL) / 60)
    46
    """
    runs = sum(m.trainer != "none" for m in preset.methods) * len(preset.seeds) * len(preset.train_tasks)
    kl_seqs = runs * len(EVAL_OF) * min(KL_PROMPTS, preset.num_eval) * KL_SAMPLES
    return estimate_seconds(preset) + kl_seqs * MEASURE_SECONDS_PER_SEQUENCE + runs * LOAD_SECONDS


# --------------------------------------------------------------------------- mechanism: KL to the base
@torch.no_grad()
def kl_to_base(
    model: Any,
    processor: Any,
    samples: list[Sample],
    num_samples: int = 2,
    max_new_tokens: int = 48,
    seed: int = 0,
    batch_size: int = 16,
    base_model: Any = None,
    chunk: int = 8,
) -> dict[str, float]:
    """Mean per-token KL(trained || base) on the trained policy's own sampled completions of `samples`.

    The trained policy samples `num_samples` completions per prompt (temperature 1); both models score
    those tokens with the same log-prob pass training uses; `kl_k3` (Eq. 5, low variance) and `kl_k1`
    (log-ratio) are both unbiased for the per-token KL on the policy's own samples. Under LoRA the base is
    the adapter-disabled model (`base_model=None`); a fully fine-tuned model needs `base_model`.
    """
    if base_model is None and not hasattr(model, "disable_adapter"):
        raise ValueError("kl_to_base: the model has no LoRA adapter to disable; pass base_model")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    sums = {"k1": 0.0, "k3": 0.0}
    tokens = 0.0
    try:
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            r = sample_groups(model, processor, batch, num_samples, max_new_tokens, temperature=1.0, generator=gen)
            args = (r.prompt, r.completion_ids, r.completion_mask, r.group_size, chunk)
            logp = completion_logprobs(model, *args)
            if base_model is None:
                ref = completion_logprobs(model, *args, disable_adapter=True)
            else:
                ref = completion_logprobs(base_model, *args)
            mask = r.completion_mask.to(logp.dtype)
            for kind in sums:
                sums[kind] += float((kl_estimate(logp, ref, kind) * mask).sum())
            tokens += float(mask.sum())
    finally:
        model.train(was_training)
    n = max(tokens, 1.0)
    return {"kl_k3": sums["k3"] / n, "kl_k1": sums["k1"] / n, "kl_tokens": tokens}


def load_trained(run_dir: str | Path) -> tuple[Any, Any]:
    """A run directory's latest complete checkpoint on top of its base model, in eval mode."""
    from othinklab import checkpoint as ckpt_io
    from othinklab.config import load_config
    from othinklab.errors import UserError
    from othinklab.models import load_model

    run = Path(run_dir)
    latest = ckpt_io.latest_checkpoint(run / "checkpoints")
    if not (run / "config.yaml").exists() or latest is None:
        raise UserError(f"run directory {str(run)!r} has no config.yaml or no complete checkpoint to measure")
    model, processor = load_model(load_config(run / "config.yaml").model)
    ckpt_io.load_weights(model, latest)
    return model.eval(), processor


def mechanism_frame(results: pd.DataFrame, kl: pd.DataFrame, metric: str = "greedy_accuracy") -> pd.DataFrame:
    """One row per trained run: its KL to the base against its same-task gain and cross-task change.

    `results` has one row per (method, train_task, seed, eval_task) with `metric` (0-1), the base among
    the methods (as `othinklab grid` writes); `kl` has one row per (method, train_task, seed) with
    `kl_same` (KL measured on the train task's eval prompts) and optionally `kl_cross` (on the other
    task's). Gains are in accuracy points against the base on the same eval prompts.
    """
    base = results[results["method"] == "base"].groupby("eval_task")[metric].mean()
    if base.empty:
        raise ValueError("mechanism_frame: the results hold no 'base' rows to measure gains against")
    rows = []
    for (method, task, seed), sub in results[results["method"] != "base"].groupby(["method", "train_task", "seed"]):
        acc = sub.set_index("eval_task")[metric]
        same = [e for e in acc.index if e.split(":")[0] == task]
        other = [e for e in acc.index if e.split(":")[0] != task]
        row = {
            "method": method,
            "train_task": task,
            "seed": seed,
            "same_task_gain": 100 * float(sum(acc[e] - base.get(e, float("nan")) for e in same) / max(1, len(same))),
            "cross_task_change": 100
            * float(sum(acc[e] - base.get(e, float("nan")) for e in other) / max(1, len(other)))
            if other
            else float("nan"),
        }
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    keys = ["method", "train_task", "seed"]
    return out.merge(kl, on=keys, how="left")


def measure_runs(out: str | Path, results: pd.DataFrame, kl_prompts: int = KL_PROMPTS, seed: int = 0) -> pd.DataFrame:
    """KL to the base of every trained run listed in a grid's `results`, on the grid's eval prompts.

    One row per (method, train_task, seed) with `kl_same` (on the train task's eval prompts) and
    `kl_cross` (on the other task's). Each run's numbers are cached in `<out>/kl/<run>.json` next to a hash
    of its config, so a rerun measures only new or retrained runs.
    """
    import hashlib
    import json

    from othinklab.grid import eval_samples
    from othinklab.runs import atomic_write

    out = Path(out)
    prompts = {ev: s[:kl_prompts] for ev, s in eval_samples(int(results["n"].max())).items()}
    trained = results[(results["method"] != "base") & results["run_dir"].fillna("").astype(bool)]
    rows = []
    for (method, task, seed_, run_dir), _ in trained.groupby(["method", "train_task", "seed", "run_dir"]):
        run = Path(run_dir)
        stamp = hashlib.sha256((run / "config.yaml").read_bytes()).hexdigest()[:16]
        cache = out / "kl" / f"{run.name}.json"
        cached = json.loads(cache.read_text()) if cache.exists() else {}
        if cached.get("config") != stamp or cached.get("kl_prompts") != kl_prompts:
            model, processor = load_trained(run)
            kl = {ev: kl_to_base(model, processor, s, KL_SAMPLES, seed=seed)["kl_k3"] for ev, s in prompts.items()}
            cached = {"config": stamp, "kl_prompts": kl_prompts, "kl": kl}
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache, json.dumps(cached, indent=1))
        same = EVAL_OF[task]
        cross = [v for ev, v in cached["kl"].items() if ev != same]
        rows.append(
            {
                "method": method,
                "train_task": task,
                "seed": seed_,
                "kl_same": cached["kl"][same],
                "kl_cross": sum(cross) / len(cross) if cross else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=["method", "train_task", "seed", "kl_same", "kl_cross"])


def run_ablation(name: str, output_dir: str | Path = "grid_runs", progress: bool = False) -> dict[str, Path]:
    """`othinklab grid --preset <name>` (train, evaluate, paired claims), then the mechanism view:
    `mechanism.csv` (KL to the base vs same-task gain and cross-task change per run) and `mechanism.png`."""
    import matplotlib.pyplot as plt

    from othinklab.errors import UserError
    from othinklab.grid import run_grid
    from othinklab.grid_report import load_results
    from othinklab.plots import kl_vs_transfer
    from othinklab.runs import atomic_write

    if name not in ABLATIONS:
        raise UserError(f"ablation preset {name!r} is unknown; choose one of {', '.join(ABLATIONS)}")
    paths = run_grid(
        name, output_dir, progress=progress, command=f"othinklab ablate --preset {name} --output-dir {output_dir}"
    )
    out = Path(output_dir) / name
    results = load_results(out)
    mech = mechanism_frame(results, measure_runs(out, results))
    paths["mechanism"] = atomic_write(out / "mechanism.csv", mech.to_csv(index=False))
    fig = kl_vs_transfer(mech)
    paths["mechanism_figure"] = atomic_write(out / "mechanism.png", lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)
    return paths


def run_ablations(names: tuple[str, ...] = FULL, output_dir: str | Path = "grid_runs", progress: bool = False) -> Path:
    """Every preset in `names` (the whole study by default), then one `ablations.md` beside them with
    each preset's claims table: what `othinklab ablate` runs."""
    from othinklab.runs import atomic_write

    parts = []
    for name in names:
        paths = run_ablation(name, output_dir, progress)
        parts.append(f"## {name}\n\n{ABLATIONS[name].description}\n\n{paths['claims_md'].read_text()}")
    return atomic_write(Path(output_dir) / "ablations.md", "# Ablations\n\n" + "\n\n".join(parts))


# --------------------------------------------------------------------------- shipped results and README
SHIPPED_ABLATIONS = Path(__file__).resolve().parent.parent / "data" / "results" / "ablations"
"""Where the study's reports (per preset: claims, results, mechanism, provenance) ship with the project."""
README_BEGIN, README_END = "<!-- ablation-results:begin -->", "<!-- ablation-results:end -->"
"""Markers around the README's generated ablation block."""


def kl_correlation(mech: pd.DataFrame, y: str = "cross_task_change", n_boot: int = 2000, seed: int = 0) -> dict:
    """Pearson r between each run's KL to the base (`kl_same`) and `y`, with a 95% percentile bootstrap
    interval over runs and the verdict on its sign (`positive`, `negative`, `not separable`).

    >>> m = pd.DataFrame({"kl_same": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "cross_task_change": [5, 4, 3, 2, 1, 0]})
    >>> kl_correlation(m)["r"], kl_correlation(m)["verdict"]
    (-1.0, 'negative')
    """
    import numpy as np

    ok = mech[["kl_same", y]].dropna().to_numpy(dtype=float)
    n = len(ok)
    if n < 3 or np.ptp(ok[:, 0]) == 0 or np.ptp(ok[:, 1]) == 0:
        return {"r": float("nan"), "lo": float("nan"), "hi": float("nan"), "verdict": "not separable", "n_runs": n}
    r = float(np.corrcoef(ok[:, 0], ok[:, 1])[0, 1])
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        b = ok[rng.integers(0, n, n)]
        if np.ptp(b[:, 0]) > 0 and np.ptp(b[:, 1]) > 0:
            reps.append(np.corrcoef(b[:, 0], b[:, 1])[0, 1])
    lo, hi = (float(x) for x in np.quantile(reps, [0.025, 0.975]))
    verdict = "positive" if lo > 0 else "negative" if hi < 0 else "not separable"
    return {"r": round(r, 3), "lo": round(lo, 3), "hi": round(hi, 3), "verdict": verdict, "n_runs": n}


def load_study(root: str | Path | None = None) -> dict[str, Any]:
    """The shipped study (`data/results/ablations/` unless `root`): every full preset's claims, mechanism
    and provenance found there. Raises FileNotFoundError naming what is missing."""
    import json

    d = Path(root) if root else SHIPPED_ABLATIONS
    names = [n for n in FULL if (d / n / "claims.csv").exists()]
    if not names:
        raise FileNotFoundError(f"no shipped ablation results: no {d}/<preset>/claims.csv for {', '.join(FULL)}")
    need = [d / n / f for n in names for f in ("mechanism.csv", "provenance.json")]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        raise FileNotFoundError(f"incomplete ablation results: missing {', '.join(missing)}")
    return {
        "names": names,
        "claims": pd.concat([pd.read_csv(d / n / "claims.csv").assign(preset=n) for n in names], ignore_index=True),
        "mechanism": pd.concat(
            [pd.read_csv(d / n / "mechanism.csv").assign(preset=n) for n in names], ignore_index=True
        ),
        "provenance": {n: json.loads((d / n / "provenance.json").read_text()) for n in names},
    }


def unique_runs(mech: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, train task, seed): the reference `grpo_d` is trained in every preset with the
    same config and seed, so pooling presets would count those runs several times.

    >>> unique_runs(pd.DataFrame({"method": ["a", "a", "b"], "train_task": ["c"] * 3, "seed": [0, 0, 0]})).shape
    (2, 3)
    """
    return mech.drop_duplicates(["method", "train_task", "seed"]).reset_index(drop=True)


def readme_block(root: str | Path | None = None, metric: str = "greedy") -> str:
    """The README's ablation block: each variant minus its reference on the trained task and on the other
    one (paired difference [95% interval], verdict), the tally, and the KL mechanism's correlations."""
    s = load_study(root)
    claims = s["claims"][s["claims"]["metric"] == metric]
    prov = s["provenance"]
    commits = sorted({str(p.get("commit", "?"))[:7] for p in prov.values()})
    first = next(iter(prov.values()))
    sizes = first.get("sizes", {})
    wall = sum(p.get("wall_seconds", 0) for p in prov.values()) / 60
    head = (
        f"Generated from `data/results/ablations/` (commit {', '.join(commits)}; `othinklab ablate`: "
        f"{len(s['names'])} presets, {wall:.0f} min of training and evaluation on "
        f"{first.get('machine', {}).get('cpu_count', '?')} CPU cores; "
        f"{len(sizes.get('seeds', []))} seeds x {sizes.get('steps', '?')} steps on counting, "
        f"{sizes.get('num_eval', '?')} eval prompts per task). {metric.capitalize()} accuracy, points: "
        "variant minus reference, paired on seeds and prompts, 95% interval, verdict from the interval."
    )
    lines = [
        "| preset | variant | vs | same task (counting:ood) | verdict | other task (geometry:test) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for (preset, better, worse), sub in claims.groupby(["preset", "better", "worse"], sort=False):
        same = sub[sub["eval_task"] == EVAL_OF["counting"]]
        other = sub[sub["eval_task"] != EVAL_OF["counting"]]

        def cell(t: pd.DataFrame) -> tuple[str, str]:
            if t.empty:
                return "-", "-"
            r = t.iloc[0]
            return f"{r['diff']:+.1f} [{r['lo']:+.1f}, {r['hi']:+.1f}]", str(r["verdict"])

        lines.append(f"| {preset} | {better} | {worse} | {' | '.join(cell(same))} | {' | '.join(cell(other))} |")
    tally = claims["verdict"].value_counts()
    count = ", ".join(f"{int(tally.get(v, 0))} {v}" for v in ("holds", "reversed", "not separable"))
    mech = unique_runs(s["mechanism"])
    corr = []
    for y, label in (("same_task_gain", "same-task gain"), ("cross_task_change", "cross-task change")):
        c = kl_correlation(mech, y)
        corr.append(f"{label}: r = {c['r']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}], {c['verdict']}")
    tail = (
        f"\nOf {len(claims)} comparisons: {count} (`holds`: the variant is better, `reversed`: worse).\n\n"
        f"Mechanism, over {len(mech)} trained runs (each run's KL to the base on the counting eval prompts "
        f"against its change from the base; Pearson r, 95% bootstrap interval over runs): {'; '.join(corr)}."
    )
    return "\n".join([README_BEGIN, head, "", *lines, tail, README_END])


def update_readme(readme: str | Path, root: str | Path | None = None) -> bool:
    """Rewrite the README's ablation block from the shipped study; True if it changed."""
    from othinklab.grid_report import replace_block

    return replace_block(readme, README_BEGIN, README_END, readme_block(root))
