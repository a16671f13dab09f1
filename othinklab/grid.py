"""`othinklab grid`: the paper's protocol in one command, with cells cached by config hash and paired claims.

Methods {base (two prompts), SFT, GRPO (constant beta), GRPO-D} x train task {counting, geometry} x seeds,
every model scored on both eval tasks {counting:ood, geometry:test} (greedy, the paper's metric, and sampled
accuracy), so the cross-task columns show what post-training on one task does to the other.

- *Paired.* All methods of a seed train on the same seeded prompt stream (`train.seed = task.seed = seed`;
  SFT's batch equals GRPO's prompts per step) and are scored on the same eval prompts, so `grid_report`
  compares methods prompt by prompt and seed by seed (`othinklab.stats`).
- *Reproducible and fast.* Sampled evaluation uses one seed for every model (`EVAL_SAMPLING_SEED`); a model's
  two eval tasks share the sampler's passes; an untrained model (the base) is evaluated once.
- *Resumable.* Each cell (summary rows, per-prompt correctness) is cached under
  `<output_dir>/<preset>/cache/<hash>.json` as it finishes; the reports are rebuilt from the cache each run.
- *Extensible.* A preset declares its own methods (`Method`) and claims (`grid_report.Claim`), so ablations
  reuse all of the above.

Simplified versus the paper: the synthetic tiny tasks stand in for CLEVR/SuperCLEVR and GeoQA; SFT sees the
same prompts as the RL runs with the generator's reasoning as target; all methods share the LoRA learning
rate (nothing is tuned per method on the eval split).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from othinklab.config import load_config, to_dict
from othinklab.grid_report import ARM_SETTINGS, Claim, paper_claims, read_cell, write_reports
from othinklab.runs import EVAL_SEED
from othinklab.tasks import EVAL_SPLITS, make_task

EVAL_TASKS = dict(EVAL_SPLITS)
"""Train task -> its held-out eval split; every model is scored on all of them."""
EVAL_SAMPLING_SEED = 0
"""Seed of sampled evaluation, the same for every model, so a model's sampled accuracy is reproducible.
It is not a variance reduction: paired models' residuals were measured uncorrelated (-0.04 to +0.07)."""


@dataclass(frozen=True)
class Method:
    """One row of the grid: how a model is made from the base."""

    name: str
    """Label in every table (`base`, `sft`, `grpo`, `grpo_d`, or a variant's own)."""
    trainer: str
    """`none` (evaluated as loaded), `sft` or `grpo`."""
    overrides: tuple[str, ...] = ()
    """`section.field=value` items applied on every train task (after the preset's)."""
    per_task: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Train task -> further overrides (the paper's beta settings differ per task)."""
    prompt: str = "think"
    """`task.prompt` this method is trained and evaluated with."""

    def overrides_for(self, task: str) -> list[str]:
        return [*self.overrides, *self.per_task.get(task, ())]


PAPER_METHODS = (
    Method("base", "none"),
    Method("base_direct", "none", overrides=("reward.format_weight=0",), prompt="direct"),
    Method("sft", "sft"),
    Method(
        "grpo",
        "grpo",
        per_task={  # the paper's constant beta per task
            "counting": ("kl.schedule=constant", "kl.beta=0.04"),
            "geometry": ("kl.schedule=constant", "kl.beta=0.01"),
        },
    ),
    Method(
        "grpo_d",
        "grpo",
        per_task={  # the paper's Eq. 3 ranges per task
            "counting": ("kl.schedule=grpo_d", "kl.beta_min=0.04", "kl.beta_max=0.1"),
            "geometry": ("kl.schedule=grpo_d", "kl.beta_min=0.0", "kl.beta_max=0.02"),
        },
    ),
)
"""The paper's comparison; `base_direct` is the base under the answer-only prompt (the format's cost)."""
METHODS = tuple(m.name for m in PAPER_METHODS)


@dataclass(frozen=True)
class Preset:
    """Sizes of one grid run, and which methods and claims it holds."""

    seeds: tuple[int, ...]
    """Training seeds (each sets `train.seed` and `task.seed` of every method alike)."""
    steps: int
    """GRPO optimizer steps = SFT steps."""
    prompts_per_step: int
    """GRPO prompts per step = SFT batch size (so both see the same prompts)."""
    num_generations: int
    """G, completions per prompt."""
    max_completion_length: int
    """Longest completion in training and evaluation (tokens)."""
    num_eval: int
    """Eval prompts per eval task (the same prompts for every model)."""
    eval_samples: int
    """Sampled completions per eval prompt (sampled accuracy)."""
    extra: tuple[str, ...] = ()
    """Overrides applied to every method before its own."""
    methods: tuple[Method, ...] = PAPER_METHODS
    """The grid's rows."""
    claims: tuple[Claim, ...] | None = None
    """Pairs to compare; None = the paper's claims (`grid_report.paper_claims`)."""
    train_tasks: tuple[str, ...] = ("counting", "geometry")
    """Tasks the trained methods are trained on."""
    description: str = ""
    """One line for `--help` and the reports."""

    def all_claims(self) -> tuple[Claim, ...]:
        return self.claims if self.claims is not None else paper_claims(self.train_tasks)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        seeds=(0,),
        steps=2,
        prompts_per_step=2,
        num_generations=4,
        max_completion_length=48,
        num_eval=16,
        eval_samples=2,
        description="plumbing check for the tests (about a minute); its numbers are noise",
    ),
    "tiny": Preset(
        seeds=(0, 1, 2),
        steps=60,
        prompts_per_step=6,
        num_generations=8,
        max_completion_length=48,
        num_eval=100,
        eval_samples=2,
        description="3 seeds in under 20 minutes on 2 CPU cores: a first look, too few seeds to settle claims",
    ),
    "powered": Preset(
        seeds=(0, 1, 2, 3, 4),
        steps=80,
        prompts_per_step=6,
        num_generations=8,
        max_completion_length=48,
        num_eval=200,
        eval_samples=2,
        description="5 seeds, 80 steps, 200 eval prompts per task, about 40 minutes on 2 CPU cores: the shipped run",
    ),
}
"""Built-in presets; `estimate_seconds` gives each one's expected wall time."""


STEP_SECONDS_PER_SEQUENCE = 1.0 / 48
"""GRPO step cost per sampled sequence (tiny model, LoRA, 48 tokens, 2 CPU cores): measured alone in a
3-seed grid, 80.6 s per 80-step run of 6 prompts x G=8 (commit 9277179)."""
EVAL_SECONDS_PER_SEQUENCE = 0.0165
"""An eval completion, sampled through the shared-prefill sampler without a backward pass: measured in
the same grid, 363 s for 22 models x 200 prompts x (1 greedy + 4 sampled)."""
SFT_SECONDS_PER_EXAMPLE = 0.021
"""Teacher-forced SFT cost per example (one forward and backward, no sampling): 9.9 s per 80 x 6 examples."""


def estimate_seconds(preset: Preset) -> float:
    """Expected wall time of a fresh run of `preset` alone on 2 CPU cores, from per-sequence costs.

    >>> round(estimate_seconds(PRESETS["tiny"]) / 60), round(estimate_seconds(PRESETS["powered"]) / 60)
    (16, 39)
    """
    trained = [m for m in preset.methods if m.trainer != "none"]
    runs = len(preset.seeds) * len(preset.train_tasks)
    grpo = sum(m.trainer == "grpo" for m in trained) * runs * preset.steps
    grpo_s = grpo * preset.prompts_per_step * preset.num_generations * STEP_SECONDS_PER_SEQUENCE
    sft_s = sum(m.trainer == "sft" for m in trained) * runs * preset.steps * preset.prompts_per_step
    models = len(trained) * runs + (len(preset.methods) - len(trained))
    eval_seqs = models * len(EVAL_TASKS) * preset.num_eval * (1 + preset.eval_samples)
    return grpo_s + sft_s * SFT_SECONDS_PER_EXAMPLE + eval_seqs * EVAL_SECONDS_PER_SEQUENCE


def cell_config(preset: Preset, method: Method, task: str, seed: int, output_dir: Path) -> Any:
    """The resolved run config of one cell (what its cache key hashes)."""
    overrides = [
        "model.name=tiny",
        "model.lora=true",
        f"task.name={task}",
        f"task.prompt={method.prompt}",
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
        f"train.run_name={method.name}-{task}-seed{seed}",
        *preset.extra,
        *method.overrides_for(task),
    ]
    return load_config(None, overrides)


def cells(preset: Preset) -> list[tuple[Method, str, int]]:
    """(method, train task, seed) of every model to make; an untrained method once (first task and seed)."""
    out = [(m, preset.train_tasks[0], preset.seeds[0]) for m in preset.methods if m.trainer == "none"]
    for seed in preset.seeds:
        for task in preset.train_tasks:
            out += [(m, task, seed) for m in preset.methods if m.trainer != "none"]
    return out


def cell_key(preset: Preset, method: Method, cfg: Any) -> str:
    sizes = {"num_eval": preset.num_eval, "eval_samples": preset.eval_samples}
    payload = {"method": dataclasses.asdict(method), "eval": sizes, "config": to_dict(cfg), "format": 2}
    if method.trainer == "none":  # one model whatever the seed or train task it is listed under
        payload["config"] = {k: v for k, v in payload["config"].items() if k not in ("train", "task", "sft")}
        payload["config"]["task"] = {"prompt": method.prompt}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def eval_samples(num_eval: int) -> dict[str, list]:
    """The eval prompts every model of a grid is scored on, by eval task (`counting:ood`, ...): one fixed set
    (seed `EVAL_SEED`) for every method and seed, so results pair prompt by prompt."""
    return {
        f"{task}:{split}": make_task(task).samples(num_eval, split=split, seed=EVAL_SEED)
        for task, split in EVAL_TASKS.items()
    }


def _cell(preset: Preset, method: Method, task: str, seed: int, output_dir: Path, progress: bool) -> dict[str, Any]:
    """Train (unless untrained) and evaluate one cell: summary rows and per-prompt correctness."""
    from othinklab import runlock
    from othinklab.evaluate import evaluate_tasks, pass_columns, per_prompt, summarize
    from othinklab.models import load_model
    from othinklab.runs import run_dir_for
    from othinklab.sft_run import run_sft
    from othinklab.trainer import train

    cfg = cell_config(preset, method, task, seed, output_dir)
    t0 = time.perf_counter()
    run_dir = str(run_dir_for(cfg))
    if method.trainer == "none":
        model, processor = load_model(cfg.model)
    else:
        with runlock.hold(run_dir, f"grid cell {method.name} on {task}, seed {seed}"):  # refused if held elsewhere
            _clear_run_dir(Path(run_dir))  # an interrupted cell is redone from scratch
            res = run_sft(cfg, progress=progress) if method.trainer == "sft" else train(cfg, progress=progress)
        model, processor = res.model, res.processor
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    records = evaluate_tasks(
        model,
        processor,
        eval_samples(preset.num_eval),
        num_samples=preset.eval_samples,
        max_new_tokens=preset.max_completion_length,
        format_weight=cfg.reward.format_weight,
        seed=EVAL_SAMPLING_SEED,
        prompt=method.prompt,
    )
    eval_s = time.perf_counter() - t1
    listed = "none" if method.trainer == "none" else task
    rows, prompts = [], per_prompt(records)
    for ev, sub in records.groupby("eval_task", sort=False):
        g, s = summarize(sub[sub["mode"] == "greedy"], "greedy"), summarize(sub[sub["mode"] == "sampled"], "sampled")
        rows.append(
            {
                "method": method.name,
                "train_task": listed,
                "seed": seed,
                "eval_task": ev,
                "prompt": method.prompt,
                "n": int(g["n"]),
                "greedy_accuracy": g["accuracy"],
                "greedy_lo": g["accuracy_lo"],
                "greedy_hi": g["accuracy_hi"],
                "sampled_accuracy": s["accuracy"],
                "sampled_lo": s["accuracy_lo"],
                "sampled_hi": s["accuracy_hi"],
                "sampled_format": s["format"],
                "sampled_reward": s["reward"],
                **{col: s[col] for col in pass_columns(s)},  # pass@1, pass@2, ..., maj@n from the same samples
                "train_seconds": round(train_s, 1),
                "eval_seconds": round(eval_s, 1),
                "run_dir": "" if method.trainer == "none" else run_dir,
                **arm_settings(cfg, method),
            }
        )
    per = {
        ev: {
            "ids": list(sub["id"]),
            "greedy": list(sub["greedy"]),
            "sampled": list(sub["sampled"]),
            **{col: list(sub[col]) for col in pass_columns(sub)},  # per prompt, for paired intervals
        }
        for ev, sub in prompts.groupby("eval_task", sort=False)
    }
    return {"rows": rows, "per_prompt": per}


def arm_settings(cfg: Any, method: Method) -> dict[str, Any]:
    """The KL and optimiser settings of a GRPO arm (`grid_report.ARM_SETTINGS`); blank for other methods."""
    if method.trainer != "grpo":
        return dict.fromkeys(ARM_SETTINGS, "")
    values = {**dataclasses.asdict(cfg.kl), "learning_rate": cfg.train.learning_rate}
    return {k: values[k] for k in ARM_SETTINGS}


def _clear_run_dir(run_dir: Path) -> None:
    """Empty a cell's run directory but keep its lock file (held by the caller): deleting a held lock lets a
    second process create and take a new one beside a live writer."""
    import shutil

    from othinklab.runlock import LOCK_FILE

    for child in run_dir.iterdir() if run_dir.is_dir() else ():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def run_grid(
    preset_name: str = "smoke",
    output_dir: str | Path = "grid_runs",
    progress: bool = False,
    command: str = "",
    preset: Preset | None = None,
) -> dict[str, Path]:
    """Run (or resume) the grid; write the reports (results, claims, tables, figure, provenance). `preset`
    defaults to `PRESETS[preset_name]`; ablations pass theirs (`ablation_presets.find_preset` knows both)."""
    import torch

    from othinklab.provenance import git_state, write_provenance
    from othinklab.runs import atomic_write
    from othinklab.warmup import ensure_base

    if preset is None:
        if preset_name not in PRESETS:
            from othinklab.errors import UserError

            raise UserError(f"grid preset {preset_name!r} is unknown; choose one of {', '.join(PRESETS)}")
        preset = PRESETS[preset_name]
    start, git = time.perf_counter(), git_state()
    out = Path(output_dir) / preset_name
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    ensure_base(progress=progress)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    ran = cached = 0
    for method, task, seed in cells(preset):
        key = cell_key(preset, method, cell_config(preset, method, task, seed, out))
        path = cache / f"{key}.json"
        if path.exists():
            problem = read_cell(path)[1]
            if problem is None:
                cached += 1
                continue
            print(f"grid {preset_name}: cache {path.name} is {problem}; recomputing that cell", flush=True)
        where = "" if method.trainer == "none" else f" on {task}, seed {seed}"
        print(f"grid {preset_name}: {method.name}{where} ...", flush=True)
        atomic_write(path, json.dumps(_cell(preset, method, task, seed, out, progress), indent=1))
        ran += 1
    keys = {cell_key(preset, m, cell_config(preset, m, t, s, out)) for m, t, s in cells(preset)}
    paths = write_reports(out, preset.all_claims(), keys=keys, preset=preset_name)
    paths["provenance"] = write_provenance(
        out / "provenance.json",
        command=command or f"othinklab grid --preset {preset_name}",
        wall_seconds=time.perf_counter() - start,
        extra={"preset": preset_name, "cells_run": ran, "cells_cached": cached, "sizes": _sizes(preset)},
        git=git,
    )
    return paths


def _sizes(preset: Preset) -> dict[str, Any]:
    d = dataclasses.asdict(preset)
    d["methods"] = [m.name for m in preset.methods]
    d["claims"] = len(preset.all_claims())
    d["estimated_seconds"] = round(estimate_seconds(preset))
    return d
