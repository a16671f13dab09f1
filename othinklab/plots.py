"""Matplotlib figures from DataFrames: training curves and beta schedules (`ax=None`, returns the figure).

Why: plots take data, not paths, so notebooks and scripts can plot any slice of a run; they never
read files themselves (use `othinklab.metrics.read_metrics`).
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd


def _smooth(series: pd.Series, window: int) -> pd.Series:
    return series.rolling(window, min_periods=1).mean() if window > 1 else series


def training_curves(metrics: pd.DataFrame, smooth: int = 10, axes: Any = None) -> Any:
    """Rewards (total, accuracy, format), measured KL with beta on a twin axis, completion length."""
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    else:
        fig = axes[0].figure
    x = metrics["step"]
    ax = axes[0]
    for key, label in (("reward/total", "total"), ("reward/accuracy", "accuracy"), ("reward/format", "format")):
        if key in metrics:
            ax.plot(x, _smooth(metrics[key], smooth), label=label)
    ax.set_title(f"reward (rolling mean over {smooth} steps)")
    ax.set_xlabel("step")
    ax.legend()
    ax = axes[1]
    if "kl/value" in metrics:
        ax.plot(x, _smooth(metrics["kl/value"], smooth), color="tab:red", label="measured KL")
    ax.set_ylabel("KL(pi_theta || pi_ref) per token", color="tab:red")
    ax.set_xlabel("step")
    twin = ax.twinx()
    if "kl/beta" in metrics:
        twin.plot(x, metrics["kl/beta"], color="tab:blue", linestyle="--", label="beta(s)")
    twin.set_ylabel("beta(s)", color="tab:blue")
    ax.set_title("KL and its weight")
    ax = axes[2]
    if "completion/length" in metrics:
        ax.plot(x, _smooth(metrics["completion/length"], smooth), color="tab:green")
    ax.set_title("completion length (tokens)")
    ax.set_xlabel("step")
    fig.tight_layout()
    return fig


def beta_schedules(schedules: dict[str, Any], total_steps: int, ax: Any = None) -> Any:
    """beta(s) over `total_steps` for named schedules (`name -> callable(step) -> beta`)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.6))
    else:
        fig = ax.figure
    steps = list(range(total_steps + 1))
    for name, sched in schedules.items():
        ax.plot(steps, [sched(s) for s in steps], label=name)
    ax.set_xlabel("optimizer step s")
    ax.set_ylabel("beta(s)")
    ax.set_title("KL weight schedules")
    ax.legend()
    fig.tight_layout()
    return fig


def paper_results(path: str | None = None) -> pd.DataFrame:
    """The paper's reported accuracies (percent) from `data/paper_results.csv` (a `# source:` line first)."""
    from pathlib import Path

    p = Path(path) if path else Path(__file__).resolve().parent.parent / "data" / "paper_results.csv"
    return pd.read_csv(p, comment="#")


def cross_task_bars(results: pd.DataFrame, paper: pd.DataFrame | None = None, axes: Any = None) -> Any:
    """Greedy accuracy per method, one panel per train task, bars per eval task; the paper's 2B numbers
    (same method, train and eval task) as black markers when `paper` is given."""
    methods = [m for m in ("base", "sft", "grpo", "grpo_d") if m in set(results["method"])]
    tasks = [t for t in ("counting", "geometry") if t in set(results["train_task"])]
    if axes is None:
        fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.6), sharey=True, squeeze=False)
        axes = axes[0]
    else:
        fig = axes[0].figure
    evals = sorted(set(results["eval_task"]))
    width = 0.8 / max(1, len(evals))
    for ax, task in zip(axes, tasks):
        for j, ev in enumerate(evals):
            sub = (
                results[(results.train_task == task) & (results.eval_task == ev)]
                .groupby("method")["greedy_accuracy"]
                .mean()
            )
            xs = [i + (j - (len(evals) - 1) / 2) * width for i in range(len(methods))]
            ax.bar(xs, [100 * sub.get(m, float("nan")) for m in methods], width, label=ev)
            if paper is not None:
                ref = paper[(paper.model == "Qwen2-VL-2B-Instruct")]
                short = ev.split(":")[0]
                ys = []
                for m in methods:
                    hit = ref[
                        (ref.method == m)
                        & (ref.eval_task == short)
                        & (ref.train_task.isin([task, "none"] if m == "base" else [task]))
                    ]
                    ys.append(float(hit["accuracy"].iloc[0]) if len(hit) else float("nan"))
                ax.scatter(xs, ys, marker="_", s=300, color="black", label="paper (2B)" if j == 0 else None, zorder=3)
        ax.set_xticks(range(len(methods)), methods)
        ax.set_title(f"trained on {task}")
        ax.set_ylabel("greedy accuracy (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
