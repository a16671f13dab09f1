"""Matplotlib figures from DataFrames (`ax=None`/`axes=None`, return the figure): training curves, beta
schedules, reward-component distributions per step, cross-task bars and heatmap with the paper overlay.

Why: plots take data, not paths (`othinklab.metrics.read_metrics` reads a run), so any slice of a run can be
plotted. The one file read here is the paper's table, `data/paper_results.csv` (`paper_results`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

METHOD_ORDER = ("base", "base_direct", "sft", "grpo", "grpo_d")
"""The order methods appear in every table and figure (the grid's report uses it too)."""


def _smooth(series: pd.Series, window: int) -> pd.Series:
    return series.rolling(window, min_periods=1).mean() if window > 1 else series


def _panels(axes: Any, n: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Any, Any]:
    """(figure, axes): the given axes (one Axes or several) and their figure, or a new figure of `n` panels
    side by side."""
    if hasattr(axes, "figure"):  # a single Axes
        axes = [axes]
    if axes is not None:
        return axes[0].figure, axes
    fig, new = plt.subplots(1, n, figsize=figsize, squeeze=False, **kwargs)
    return fig, new[0]


def training_curves(metrics: pd.DataFrame, smooth: int = 10, axes: Any = None) -> Any:
    """Rewards (total, accuracy, format), measured KL with beta on a twin axis, completion length."""
    fig, axes = _panels(axes, 3, (14, 3.6))
    x = metrics["step"]
    ax = axes[0]
    for key, label in (("reward/total", "total"), ("reward/accuracy", "accuracy"), ("reward/format", "format")):
        if key in metrics:
            ax.plot(x, _smooth(metrics[key], smooth), label=label)
    for key, label, marker, colour in (
        ("eval/greedy_accuracy", "eval greedy acc", "o", "black"),
        ("eval/sampled_accuracy", "eval sampled acc", "s", "grey"),
    ):
        if key in metrics:  # held-out accuracy from train.eval_every, only in the rows that evaluated
            pts = metrics[["step", key]].dropna()
            ax.plot(pts["step"], pts[key], marker=marker, linestyle=":", color=colour, label=label)
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
    fig, (ax,) = _panels(ax, 1, (6, 3.6))
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
    p = Path(path) if path else Path(__file__).resolve().parent.parent / "data" / "paper_results.csv"
    return pd.read_csv(p, comment="#")


def paper_value(paper: pd.DataFrame, method: str, train_task: str, eval_task: str) -> float:
    """The paper's Qwen2-VL-2B accuracy (%) for one cell; NaN where it reports none. The base model is
    untrained (`train_task` none in the table), and `eval_task` may carry a split (`counting:ood`)."""
    ref = paper[paper.model == "Qwen2-VL-2B-Instruct"]
    trained_on = [train_task, "none"] if method == "base" else [train_task]
    hit = ref[(ref.method == method) & (ref.eval_task == eval_task.split(":")[0]) & ref.train_task.isin(trained_on)]
    return float(hit["accuracy"].iloc[0]) if len(hit) else float("nan")


def cross_task_bars(results: pd.DataFrame, paper: pd.DataFrame | None = None, axes: Any = None) -> Any:
    """Greedy accuracy per method, one panel per train task, bars per eval task; the paper's 2B numbers
    (same method, train and eval task) as black markers when `paper` is given."""
    methods = [m for m in METHOD_ORDER if m in set(results["method"])]
    tasks = [t for t in ("counting", "geometry") if t in set(results["train_task"])]
    fig, axes = _panels(axes, len(tasks), (5.5 * len(tasks), 3.6), sharey=True)
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
                ys = [paper_value(paper, m, task, ev) for m in methods]
                ax.scatter(xs, ys, marker="_", s=300, color="black", label="paper (2B)" if j == 0 else None, zorder=3)
        ax.set_xticks(range(len(methods)), methods)
        ax.set_title(f"trained on {task}")
        ax.set_ylabel("greedy accuracy (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


OUTCOMES = ("correct + format", "correct, no format", "format, wrong", "neither")
"""The four reward outcomes of a completion under R = R_acc + alpha * R_format (both parts 0 or 1)."""


def reward_component_table(rollouts: pd.DataFrame) -> pd.DataFrame:
    """Per step, the fraction of completions in each of `OUTCOMES` (rows sum to 1) — what
    `reward_components` draws. `rollouts` has `step`, `accuracy`, `format` (a run's `rollouts.jsonl`)."""
    acc = rollouts["accuracy"] > 0
    fmt = rollouts["format"] > 0
    outcome = pd.Series("neither", index=rollouts.index)
    outcome[acc & fmt] = OUTCOMES[0]
    outcome[acc & ~fmt] = OUTCOMES[1]
    outcome[~acc & fmt] = OUTCOMES[2]
    table = pd.crosstab(rollouts["step"], outcome.rename("outcome"), normalize="index")
    return table.reindex(columns=list(OUTCOMES), fill_value=0.0)


def reward_components(rollouts: pd.DataFrame, axes: Any = None) -> Any:
    """Reward-component distributions per step: the share of each outcome (stacked) and the spread of the
    total reward over completions (a box per step, the mean as a triangle)."""
    fig, axes = _panels(axes, 2, (12, 3.6))
    table = reward_component_table(rollouts)
    colours = ("tab:green", "tab:olive", "tab:orange", "tab:red")
    bottom = pd.Series(0.0, index=table.index)
    for name, colour in zip(OUTCOMES, colours):
        axes[0].bar(table.index, table[name], bottom=bottom, color=colour, label=name, width=0.9)
        bottom += table[name]
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("share of completions")
    axes[0].set_title("reward components per step")
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    steps = sorted(rollouts["step"].unique())
    data = [rollouts.loc[rollouts["step"] == s, "reward"].to_numpy() for s in steps]
    axes[1].boxplot(data, positions=steps, widths=0.6, showmeans=True)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("R = R_acc + alpha R_format")
    axes[1].set_title("total reward over completions (box per step, triangle = mean)")
    fig.tight_layout()
    return fig


def cross_task_heatmap(results: pd.DataFrame, paper: pd.DataFrame | None = None, axes: Any = None) -> Any:
    """Greedy accuracy (%) as a (train task, method) x eval task heatmap, mean over seeds; with `paper`,
    a second panel in the same layout with the paper's 2B numbers (blank where the paper reports none)."""
    from othinklab.evaluate import cross_task_matrix

    ours = cross_task_matrix(results) * 100
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    ours = ours.sort_index(key=lambda c: c.map(order) if c.name == "method" else c)
    panels = [("this run (greedy %, mean over seeds)", ours)]
    if paper is not None:
        cells = [{ev: paper_value(paper, m, t, ev) for ev in ours.columns} for t, m in ours.index]
        panels.append(("paper, Qwen2-VL-2B (%)", pd.DataFrame(cells, index=ours.index)))
    fig, axes = _panels(axes, len(panels), (4.8 * len(panels), 0.45 * len(ours) + 1.6))
    for ax, (title, table) in zip(axes, panels):
        values = table.to_numpy(dtype=float)
        ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(len(table.columns)), list(table.columns))
        ax.set_yticks(range(len(table.index)), [f"{t} · {m}" for t, m in table.index])
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                ax.text(j, i, "" if v != v else f"{v:.1f}", ha="center", va="center", color="w" if v < 60 else "k")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("evaluated on")
    axes[0].set_ylabel("trained on · method")
    fig.tight_layout()
    return fig


def kl_vs_transfer(mechanism: pd.DataFrame, kl_column: str = "kl_same", ax: Any = None) -> Any:
    """Measured KL to the base (x) against the same-task gain and the cross-task change (y, points), one
    dot per trained run, one colour per method, each with its least-squares line: does staying close to
    the base predict keeping the other task? (`mechanism` as `othinklab.ablations.mechanism_frame` returns.)"""
    fig, axes = _panels(ax, 2, (11, 3.8), sharex=True)
    panels = (("same_task_gain", "same-task gain"), ("cross_task_change", "cross-task change"))
    for a, (col, title) in zip(axes, panels):
        for i, (method, sub) in enumerate(mechanism.groupby("method", sort=False)):
            a.scatter(sub[kl_column], sub[col], label=method, color=f"C{i % 10}", s=22)
        ok = mechanism[[kl_column, col]].dropna()
        if len(ok) >= 3 and ok[kl_column].nunique() > 1:
            slope, intercept = np.polyfit(ok[kl_column], ok[col], 1)
            xs = np.linspace(ok[kl_column].min(), ok[kl_column].max(), 20)
            # Pearson r is undefined when every run has the same gain (numpy would warn and give nan)
            r = f"{np.corrcoef(ok[kl_column], ok[col])[0, 1]:.2f}" if ok[col].nunique() > 1 else "undefined"
            a.plot(xs, slope * xs + intercept, color="k", lw=1, ls="--", label=f"fit (r = {r})")
        a.axhline(0, color="grey", lw=0.6)
        a.set_xlabel(f"KL(trained || base) per token ({kl_column})")
        a.set_ylabel(f"{title} (accuracy points vs base)")
        a.set_title(title)
    axes[-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
