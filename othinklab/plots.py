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
