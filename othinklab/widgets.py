"""Notebook widgets over a run's logs, each with a DataFrame twin that computes what the widget shows.

Why: "why did reward collapse at step 140?" is answered by looking at the completions of that step side
by side with their rewards and advantages. The DataFrame twins (`rollout_view`, `rescore`) hold all the
logic and are tested directly; the ipywidgets classes only lay them out. ipywidgets is imported lazily so
the package imports without it.

Simplified versus the issue's full inspector: no per-token colouring by log-prob or KL yet (rollouts are
logged as text), and no prompt image (the image is regenerated only for synthetic tasks, not stored).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from othinklab.grpo import group_advantages
from othinklab.metrics import read_rollouts
from othinklab.rewards import accuracy_reward, extract_answer, format_reward

FILTERS = ("all", "failures", "format errors", "zero-spread groups")
"""Row filters of the rollout inspector."""


def rollout_view(rollouts: pd.DataFrame, step: int, prompt: str | None = None, only: str = "all") -> pd.DataFrame:
    """The completions of one step (optionally one prompt), filtered; what `RolloutInspector` shows.

    `only`: `failures` (accuracy 0), `format errors` (format 0), `zero-spread groups` (every completion
    of the group got the same reward, so the group taught nothing).
    """
    if only not in FILTERS:
        raise ValueError(f"only must be one of {FILTERS}, got {only!r}")
    df = rollouts[rollouts["step"] == step]
    if prompt is not None:
        df = df[df["prompt_id"] == prompt]
    if only == "failures":
        df = df[df["accuracy"] == 0]
    elif only == "format errors":
        df = df[df["format"] == 0]
    elif only == "zero-spread groups":
        spread = rollouts[rollouts["step"] == step].groupby(["group"])["reward"].transform(lambda r: r.max() - r.min())
        df = df[spread.reindex(df.index) == 0]
    cols = ["prompt_id", "sample", "completion", "answer", "accuracy", "format", "reward", "advantage", "length"]
    return df[[c for c in cols if c in df.columns]].reset_index(drop=True)


def rescore(
    rollouts: pd.DataFrame,
    format_weight: float = 1.0,
    accuracy_fn: Callable[[str, str], float] = accuracy_reward,
    format_fn: Callable[[str], float] = format_reward,
    group_size: int | None = None,
) -> pd.DataFrame:
    """Re-score logged completions with another reward (alpha or parser) and recompute advantages.

    Returns the rows with `new_accuracy`, `new_format`, `new_reward`, `new_advantage` beside the logged
    ones; what `RewardInspector` shows. Groups are (step, group) as logged.
    """
    df = rollouts.copy()
    df["new_accuracy"] = [
        accuracy_fn(c, f"<answer> {a} </answer>") for c, a in zip(df["completion"], df["answer"].astype(str))
    ]
    df["new_format"] = [format_fn(c) for c in df["completion"]]
    df["new_reward"] = df["new_accuracy"] + format_weight * df["new_format"]
    parts = []
    for _, g in df.groupby(["step", "group"], sort=False):
        size = group_size or len(g)
        parts.append(
            pd.Series(group_advantages(g["new_reward"].to_numpy(dtype="float32"), size).numpy(), index=g.index)
        )
    df["new_advantage"] = pd.concat(parts).reindex(df.index) if parts else []
    return df


def summary_by_step(df: pd.DataFrame) -> pd.DataFrame:
    """Mean logged and re-scored rewards per step (the RewardInspector's table)."""
    cols = [c for c in ("accuracy", "format", "reward", "new_accuracy", "new_format", "new_reward") if c in df.columns]
    return df.groupby("step")[cols].mean()


def _table_html(view: pd.DataFrame) -> str:
    rows = []
    for _, r in view.iterrows():
        colour = "#e6f4ea" if r.get("accuracy", 0) > 0 else "#fdecea"
        rows.append(
            f"<tr style='background:{colour}'><td>{html.escape(str(r['prompt_id']))}</td><td>{r.get('sample', '')}</td>"
            f"<td style='font-family:monospace;white-space:pre-wrap'>{html.escape(str(r['completion']))}</td>"
            f"<td>{r.get('accuracy', 0):.0f}</td><td>{r.get('format', 0):.0f}</td><td>{r.get('reward', 0):.2f}</td>"
            f"<td>{r.get('advantage', 0):+.2f}</td></tr>"
        )
    head = "<tr><th>prompt</th><th>#</th><th>completion</th><th>acc</th><th>fmt</th><th>R</th><th>A</th></tr>"
    return f"<table class='othinklab-rollouts'>{head}{''.join(rows)}</table>"


def _exact_string_accuracy(completion: str, solution: str) -> float:
    """1.0 if the completion's `<answer>` equals the solution's answer character for character."""
    pred = extract_answer(completion)
    gold = extract_answer(solution)
    return float(pred is not None and pred == (gold if gold is not None else solution.strip()))


class RolloutInspector:
    """Step slider, prompt picker and filter over `rollouts.jsonl`; shows `rollout_view` as a table."""

    def __init__(self, run_dir: str | Path | None = None, rollouts: pd.DataFrame | None = None):
        import ipywidgets as w

        self.rollouts = rollouts if rollouts is not None else read_rollouts(run_dir)
        if self.rollouts.empty:
            raise ValueError(f"no rollouts logged in {run_dir!s}")
        steps = sorted(self.rollouts["step"].unique())
        self.step = w.SelectionSlider(options=steps, value=steps[0], description="step")
        self.prompt = w.Dropdown(description="prompt")
        self.only = w.ToggleButtons(options=FILTERS, value="all", description="show")
        self.table = w.HTML()
        self.header = w.HTML()
        self.step.observe(self._on_step, names="value")
        self.prompt.observe(lambda _: self.refresh(), names="value")
        self.only.observe(lambda _: self.refresh(), names="value")
        self._on_step()
        self.widget = w.VBox([w.HBox([self.step, self.prompt]), self.only, self.header, self.table])

    def _on_step(self, *_: Any) -> None:
        ids = list(dict.fromkeys(self.rollouts.loc[self.rollouts["step"] == self.step.value, "prompt_id"]))
        self.prompt.options = ["(all)", *ids]
        self.prompt.value = "(all)"
        self.refresh()

    def view(self) -> pd.DataFrame:
        """The rows currently shown (the DataFrame twin of the widget's state)."""
        prompt = None if self.prompt.value in (None, "(all)") else self.prompt.value
        return rollout_view(self.rollouts, self.step.value, prompt, self.only.value)

    def refresh(self) -> None:
        v = self.view()
        step_rows = self.rollouts[self.rollouts["step"] == self.step.value]
        self.header.value = (
            f"<b>step {self.step.value}</b>: {len(step_rows)} completions, mean reward {step_rows['reward'].mean():.3f}, "
            f"accuracy {step_rows['accuracy'].mean():.3f}, format {step_rows['format'].mean():.3f} — showing {len(v)}"
        )
        self.table.value = _table_html(v)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class RewardInspector:
    """Change alpha (and the answer parser) and see how rewards and advantages of logged rollouts move."""

    PARSERS: dict[str, Callable[[str, str], float]] = {
        "math-verify (R1-V)": accuracy_reward,
        "exact string": _exact_string_accuracy,
    }

    def __init__(self, run_dir: str | Path | None = None, rollouts: pd.DataFrame | None = None):
        import ipywidgets as w

        self.rollouts = rollouts if rollouts is not None else read_rollouts(run_dir)
        self.alpha = w.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.25, description="alpha")
        self.parser = w.Dropdown(options=list(self.PARSERS), description="accuracy")
        self.out = w.HTML()
        self.alpha.observe(lambda _: self.refresh(), names="value")
        self.parser.observe(lambda _: self.refresh(), names="value")
        self.refresh()
        self.widget = w.VBox([w.HBox([self.alpha, self.parser]), self.out])

    def result(self) -> pd.DataFrame:
        """The re-scored rollouts for the current settings (the DataFrame twin)."""
        return rescore(self.rollouts, self.alpha.value, self.PARSERS[self.parser.value])

    def refresh(self) -> None:
        df = self.result()
        flipped = float(((df["advantage"] > 0) != (df["new_advantage"] > 0)).mean())
        self.out.value = (
            f"advantage sign changes on {flipped:.1%} of completions<br>" + summary_by_step(df).round(3).to_html()
        )

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
