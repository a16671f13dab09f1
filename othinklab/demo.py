"""`make demo` / `othinklab demo`: the tiny base, GRPO-D on counting (or `--task geometry`), before vs after.

Why: a newcomer's first minutes should show the paper's loop working end to end on a CPU (a base that is
right sometimes, GRPO-D raising its reward and accuracy on held-out, shifted SuperCLEVR-like prompts), every
figure with its eval size and a 95% interval, so "it improved" is a claim the numbers can refute.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

DEMO_TASKS = ("counting", "geometry")
"""Tasks the demo trains on; the other one is evaluated too (cross-task). Importable without torch (the CLI's parser)."""
DEMO_OVERRIDES = [
    "model.name=tiny",
    "train.total_steps=120",
    "train.learning_rate=1e-3",
    "grpo.num_generations=8",
    "grpo.prompts_per_step=8",
    "grpo.max_completion_length=48",
    "task.num_eval=200",
    "train.save_every=40",
]
"""The demo's settings, shared by both tasks (as in configs/{counting,geometry}_grpo_d.yaml): LoRA at lr 1e-3
(chosen on the validation split), 8 prompts x G = 8 per step, 120 steps."""


def demo_overrides(task: str) -> list[str]:
    """The demo's overrides for `task` (one of `DEMO_TASKS`), with the grid's `grpo_d` method's GRPO-D range
    for it (the paper's Eq. 3 per task: counting 0.07 -> 0.04 -> 0.1, geometry 0.01 -> 0 -> 0.02)."""
    from othinklab.grid import PAPER_METHODS

    if task not in DEMO_TASKS:
        raise ValueError(f"demo task {task!r}: must be one of {', '.join(DEMO_TASKS)}")
    grpo_d = next(m for m in PAPER_METHODS if m.name == "grpo_d")
    return [*DEMO_OVERRIDES, f"task.name={task}", *grpo_d.overrides_for(task)]


def _fresh_name(output_dir: str, base: str) -> str:
    """`base`, or `base-2`, `base-3`... so an earlier demo run is never overwritten."""
    name, k = base, 1
    while (Path(output_dir) / name).exists():
        k += 1
        name = f"{base}-{k}"
    return name


def run_demo(
    seed: int = 0,
    steps: int | None = None,
    output_dir: str = "runs",
    num_eval: int | None = None,
    task: str = "counting",
) -> dict[str, Any]:
    """Build or load the base, evaluate, train GRPO-D, evaluate again; print and return the figures."""
    import torch

    from othinklab import warmup
    from othinklab.config import load_config
    from othinklab.evaluate import evaluate_tasks, format_summary, summary_table
    from othinklab.metrics import read_metrics
    from othinklab.models import load_model
    from othinklab.plots import training_curves
    from othinklab.rng import seed_everything
    from othinklab.runs import EVAL_SEED, eval_samples, eval_settings
    from othinklab.tasks import EVAL_SPLITS, make_task
    from othinklab.trainer import train

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    t_all = time.perf_counter()
    overrides = demo_overrides(task) + [f"train.seed={seed}", f"train.output_dir={output_dir}"]
    if steps is not None:
        overrides.append(f"train.total_steps={steps}")
    if num_eval is not None:
        overrides.append(f"task.num_eval={num_eval}")
    overrides.append(f"train.run_name={_fresh_name(output_dir, f'demo-{task}-grpo_d-seed{seed}')}")
    cfg = load_config(None, overrides)

    print("1/4 the tiny base (built once from a seed, then cached) ...", flush=True)
    t0 = time.perf_counter()
    path = warmup.ensure_base()
    print(f"    {path}  ({time.perf_counter() - t0:.0f} s)")
    # LoRA's A matrices are drawn when the model is loaded, and torch's global RNG starts from a random seed
    # in every process: seed first, as `othinklab train` does, or every demo run trains a different adapter.
    seed_everything(cfg.train.seed)
    model, processor = load_model(cfg.model)
    samples = eval_samples(cfg)
    ev = dict(**eval_settings(cfg), seed=seed)
    split, other = f"{task}:{EVAL_SPLITS[task]}", next(t for t in DEMO_TASKS if t != task)

    print(
        f"2/4 evaluating the base on {len(samples)} held-out {split} prompts (and {other}:{EVAL_SPLITS[other]}) ...",
        flush=True,
    )
    records = evaluate_tasks(model, processor, samples, **ev)
    before = summary_table(records)
    cross = make_task(other).samples(len(samples), split=EVAL_SPLITS[other], seed=EVAL_SEED + seed)
    cross_table = summary_table(evaluate_tasks(model, processor, cross, **ev))
    print("    the base answering held-out prompts (greedy), with its rewards:")
    for _, rec in records[records["mode"] == "greedy"].head(3).iterrows():
        question = next(s.problem for s in samples if s.id == rec["id"])
        print(
            f"    Q: {question}  (answer {rec['answer']})\n    A: {rec['completion']!r}\n"
            f"       accuracy {rec['accuracy']:.0f}  format {rec['format']:.0f}  reward {rec['reward']:.0f}"
        )
    print(f"    base on {other}:{EVAL_SPLITS[other]}:")
    print("\n".join(format_summary(cross_table)))
    print(
        f"3/4 GRPO-D on {task}: {cfg.train.total_steps} steps x {cfg.grpo.prompts_per_step} prompts x G={cfg.grpo.num_generations} ...",
        flush=True,
    )
    res = train(cfg, model_and_processor=(model, processor))
    print("4/4 evaluating the trained policy on the same prompts ...", flush=True)
    after = summary_table(evaluate_tasks(res.model, processor, samples, **ev))

    metrics = read_metrics(res.run_dir)
    fig = training_curves(metrics)
    fig_path = res.run_dir / "training_curves.png"
    fig.savefig(fig_path, dpi=100, bbox_inches="tight")
    step_s = float(metrics["time/step_s"].iloc[1:].median()) if len(metrics) > 1 else float("nan")
    lines = [
        "",
        f"held-out {split}, n={len(samples)} prompts (sampled: {cfg.eval.num_samples} per prompt at T={cfg.eval.temperature:g}); 95% intervals",
        *format_summary(before, "before"),
        *format_summary(after, "after"),
        "",
        f"training: {res.steps_done} steps in {res.seconds:.0f} s ({step_s:.2f} s/step median); total demo time {time.perf_counter() - t_all:.0f} s",
        f"run directory: {res.run_dir}  (config.yaml, metrics.jsonl, rollouts.jsonl, checkpoints/)",
        f"training curves: {fig_path}",
        "next: open notebooks/ in JupyterLab (`.venv/bin/jupyter lab`) to step through what just happened",
    ]
    print("\n".join(lines))
    return {
        "before": before,
        "after": after,
        "run_dir": res.run_dir,
        "seconds": time.perf_counter() - t_all,
        "step_s": step_s,
    }
