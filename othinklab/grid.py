"""`othinklab grid`: the paper's protocol in one command, with results keyed by config hash.

Methods {base, SFT, GRPO (constant beta), GRPO-D} x train task {counting, geometry} x eval task
{counting:ood, geometry:test} x seeds. Each trained model is evaluated on both eval tasks (greedy, the
paper's metric, and sampled accuracy), so the cross-task columns show what post-training on one task does
to the other. Every cell is cached under `<output_dir>/cache/<hash>.json` as soon as it finishes, so an
interrupted grid resumes where it stopped; `results.csv`, `same_task.md`, `cross_task.md` and
`grid.png` are rebuilt from the cache on every run, so every number in them comes from a run.

Simplified versus the paper: the synthetic tiny tasks stand in for CLEVR/SuperCLEVR and GeoQA; SFT
sees the same prompts as the RL runs (same seeded stream, same count) with the generator's reasoning
as target; all methods share the LoRA learning rate (nothing is tuned per method on the eval split).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from othinklab.config import load_config, to_dict
from othinklab.evaluate import evaluate, wilson_interval
from othinklab.tasks import make_task

EVAL_TASKS = {"counting": "ood", "geometry": "test"}
KL_SETTINGS = {
    # method -> train task -> overrides (the paper's settings, docs/paper.md)
    "grpo": {
        "counting": ["kl.schedule=constant", "kl.beta=0.04"],
        "geometry": ["kl.schedule=constant", "kl.beta=0.01"],
    },
    "grpo_d": {
        "counting": ["kl.schedule=grpo_d", "kl.beta_min=0.04", "kl.beta_max=0.1"],
        "geometry": ["kl.schedule=grpo_d", "kl.beta_min=0.0", "kl.beta_max=0.02"],
    },
}
METHODS = ("base", "sft", "grpo", "grpo_d")


@dataclass(frozen=True)
class Preset:
    seeds: tuple[int, ...]
    steps: int
    prompts_per_step: int
    num_generations: int
    max_completion_length: int
    num_eval: int
    eval_samples: int
    extra: tuple[str, ...] = field(default_factory=tuple)


PRESETS = {
    "smoke": Preset(
        seeds=(0,),
        steps=2,
        prompts_per_step=2,
        num_generations=4,
        max_completion_length=48,
        num_eval=16,
        eval_samples=2,
    ),
    "tiny": Preset(
        seeds=(0, 1, 2),
        steps=120,
        prompts_per_step=8,
        num_generations=8,
        max_completion_length=48,
        num_eval=200,
        eval_samples=4,
    ),
}
"""`smoke` (about a minute, used by the tests) and `tiny` (3 seeds, ~30 minutes on 2 CPU cores)."""


def _overrides(preset: Preset, method: str, task: str, seed: int, output_dir: Path) -> list[str]:
    common = [
        "model.name=tiny",
        "model.lora=true",
        f"task.name={task}",
        f"train.seed={seed}",
        f"task.seed={seed}",
        f"train.total_steps={preset.steps}",
        "train.learning_rate=1e-3",
        f"grpo.prompts_per_step={preset.prompts_per_step}",
        f"grpo.num_generations={preset.num_generations}",
        f"grpo.max_completion_length={preset.max_completion_length}",
        f"sft.steps={preset.steps}",
        f"sft.batch_size={preset.prompts_per_step}",
        "sft.learning_rate=1e-3",
        "train.save_every=0",
        f"train.output_dir={output_dir / 'runs'}",
        f"train.run_name={method}-{task}-seed{seed}",
        *preset.extra,
    ]
    return common + KL_SETTINGS.get(method, {}).get(task, [])


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cell(preset: Preset, method: str, task: str, seed: int, output_dir: Path, progress: bool) -> list[dict[str, Any]]:
    """Train (unless base) and evaluate one grid cell; one row per eval task."""
    from othinklab.models import load_model
    from othinklab.sft import run_sft
    from othinklab.trainer import run_dir_for, train

    cfg = load_config(None, _overrides(preset, method, task, seed, output_dir))
    t0 = time.perf_counter()
    run_dir = str(run_dir_for(cfg))
    if method == "base":
        model, processor = load_model("tiny")
    else:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted cell is redone from scratch
        res = run_sft(cfg, progress=progress) if method == "sft" else train(cfg, progress=progress)
        model, processor = res.model, res.processor
    train_s = time.perf_counter() - t0
    rows = []
    for eval_task, split in EVAL_TASKS.items():
        samples = make_task(eval_task).samples(preset.num_eval, split=split, seed=10_000)
        table = evaluate(
            model,
            processor,
            samples,
            num_samples=preset.eval_samples,
            max_new_tokens=preset.max_completion_length,
            seed=seed,
        )
        g, s = table.iloc[0], table.iloc[1]
        rows.append(
            {
                "method": method,
                "train_task": task,
                "seed": seed,
                "eval_task": f"{eval_task}:{split}",
                "n": int(g["n"]),
                "greedy_accuracy": g["accuracy"],
                "greedy_lo": g["accuracy_lo"],
                "greedy_hi": g["accuracy_hi"],
                "sampled_accuracy": s["accuracy"],
                "sampled_lo": s["accuracy_lo"],
                "sampled_hi": s["accuracy_hi"],
                "sampled_format": s["format"],
                "sampled_reward": s["reward"],
                "train_seconds": round(train_s, 1),
                "run_dir": "" if method == "base" else run_dir,
            }
        )
    return rows


def run_grid(
    preset_name: str = "smoke", output_dir: str | Path = "grid_runs", progress: bool = False
) -> dict[str, Path]:
    """Run (or resume) the grid; write results.csv, same_task.md, cross_task.md and grid.png."""
    import torch

    from othinklab.errors import UserError
    from othinklab.tiny import ensure_base

    if preset_name not in PRESETS:
        raise UserError(f"grid preset {preset_name!r} is unknown; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    out = Path(output_dir) / preset_name
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    ensure_base(progress=progress)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    cells = [
        (m, t, s) for s in preset.seeds for t in EVAL_TASKS for m in METHODS if not (m == "base" and t != "counting")
    ]
    for method, task, seed in cells:
        cfg = load_config(None, _overrides(preset, method, task, seed, out))
        key = _hash({"method": method, "preset": preset.__dict__, "config": to_dict(cfg)})
        path = cache / f"{key}.json"
        if path.exists():
            continue
        print(f"grid {preset_name}: {method} on {task}, seed {seed} ...", flush=True)
        rows = _cell(preset, method, task, seed, out, progress)
        _write_atomic(path, json.dumps(rows, indent=1))
    return write_reports(out)


def load_results(out: Path) -> pd.DataFrame:
    """Every cached cell's rows; the base (trained on nothing) is listed under both train tasks."""
    rows = [r for f in sorted((out / "cache").glob("*.json")) for r in json.loads(f.read_text())]
    df = pd.DataFrame(rows)
    base = df[df["method"] == "base"]
    if len(base):
        df = pd.concat(
            [df[df["method"] != "base"], base.assign(train_task="counting"), base.assign(train_task="geometry")],
            ignore_index=True,
        )
    order = {m: i for i, m in enumerate(METHODS)}
    return df.sort_values(
        ["train_task", "method", "seed", "eval_task"], key=lambda c: c.map(order) if c.name == "method" else c
    ).reset_index(drop=True)


def _cell_text(sub: pd.DataFrame) -> str:
    """Mean greedy accuracy over seeds (percent), seed range, and the pooled 95% Wilson interval.

    The base is one model whatever the seed (greedy decoding is deterministic), so it counts once.
    """
    if len(sub) and (sub["method"] == "base").all():
        sub = sub.head(1)
    n = int(sub["n"].sum())
    k = float((sub["greedy_accuracy"] * sub["n"]).sum())
    lo, hi = wilson_interval(k, n)
    seeds = sub["greedy_accuracy"] * 100
    spread = f" ({seeds.min():.1f}-{seeds.max():.1f})" if len(sub) > 1 else ""
    return f"{100 * k / n:.1f}{spread} [{100 * lo:.1f}, {100 * hi:.1f}]"


def write_reports(out: Path) -> dict[str, Path]:
    """results.csv, the Table-1-style same-task table, the cross-task table and a figure."""
    import matplotlib.pyplot as plt

    df = load_results(out)
    paths = {
        "results": out / "results.csv",
        "same_task": out / "same_task.md",
        "cross_task": out / "cross_task.md",
        "figure": out / "grid.png",
    }
    _write_atomic(paths["results"], df.to_csv(index=False))
    n_seeds, n_eval = df["seed"].nunique(), int(df["n"].iloc[0])
    note = (
        f"Greedy accuracy (%) on {n_eval} held-out prompts per task, mean over {n_seeds} seed(s) (range), "
        "[pooled 95% Wilson interval].\n\n"
    )
    lines = ["| method | VC (counting-trained, counting:ood) | GR (geometry-trained, geometry:test) |", "|---|---|---|"]
    for m in METHODS:
        cells = []
        for task, ev in (("counting", "counting:ood"), ("geometry", "geometry:test")):
            sub = df[(df.method == m) & (df.train_task == task) & (df.eval_task == ev)]
            cells.append(_cell_text(sub) if len(sub) else "-")
        lines.append(f"| {m} | {cells[0]} | {cells[1]} |")
    _write_atomic(paths["same_task"], note + "\n".join(lines) + "\n")
    lines = ["| train task | method | counting:ood | geometry:test |", "|---|---|---|---|"]
    for task in ("counting", "geometry"):
        for m in METHODS:
            cells = []
            for ev in ("counting:ood", "geometry:test"):
                sub = df[(df.method == m) & (df.train_task == task) & (df.eval_task == ev)]
                cells.append(_cell_text(sub) if len(sub) else "-")
            lines.append(f"| {task} | {m} | {cells[0]} | {cells[1]} |")
    _write_atomic(paths["cross_task"], note + "\n".join(lines) + "\n")
    from othinklab.plots import cross_task_bars, paper_results

    fig = cross_task_bars(df, paper=paper_results())
    fig.savefig(paths["figure"], dpi=100)
    plt.close(fig)
    return paths
