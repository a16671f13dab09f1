"""Notebook widgets over a run's logs, each with a DataFrame twin that computes what the widget shows.

Why: "why did reward collapse at step 140?" is answered by the completions of that step side by side with
their rewards and advantages. The twins (`rollout_view`, `rescore`) hold the logic and are tested directly;
the ipywidgets classes (imported lazily) only lay them out. `RolloutInspector` shows the prompt image the
model saw (`<run>/images/`) and colours tokens by log-prob or per-token k3 KL (`token_html`). Simplified:
one image per prompt, no attention maps; runs without a `tokens` column show plain completion text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from othinklab.grpo import group_advantages
from othinklab.metrics import read_rollouts
from othinklab.rewards import accuracy_reward, combine, extract_answer, format_reward
from othinklab.token_text import merge_for_display

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
    cols += ["problem", "image", "tokens", "token_logprobs", "token_kl"]
    return df[[c for c in cols if c in df.columns]].reset_index(drop=True)


def rescore(
    rollouts: pd.DataFrame,
    format_weight: float = 1.0,
    accuracy_fn: Callable[[str, str], float] = accuracy_reward,
    format_fn: Callable[[str], float] = format_reward,
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
    df["new_reward"] = combine(df["new_accuracy"], df["new_format"], format_weight)
    df["new_advantage"] = df.groupby(["step", "group"], sort=False)["new_reward"].transform(
        lambda r: group_advantages(r.to_numpy(dtype="float32"), len(r)).numpy()
    )
    return df


def summary_by_step(df: pd.DataFrame) -> pd.DataFrame:
    """Mean logged and re-scored rewards per step (the RewardInspector's table)."""
    cols = [c for c in ("accuracy", "format", "reward", "new_accuracy", "new_format", "new_reward") if c in df.columns]
    return df.groupby("step")[cols].mean()


COLOUR_MODES = ("log-prob", "KL to reference", "none")
"""What the rollout inspector colours tokens by."""


def token_colour(value: float | None, mode: str, scale: float = 1.0) -> str:
    """CSS background for one token: `log-prob` shades red by surprise (1 - p; white where p = 1);
    `KL to reference` shades blue by KL / `scale` (capped at 1). Missing or non-finite values: none.

    >>> token_colour(0.0, "log-prob")
    'rgba(220,50,47,0.00)'
    >>> token_colour(0.05, "KL to reference", scale=0.1)
    'rgba(38,139,210,0.50)'
    """
    if value is None or not math.isfinite(value) or mode == "none":
        return "transparent"
    if mode == "log-prob":
        return f"rgba(220,50,47,{1.0 - math.exp(min(value, 0.0)):.2f})"
    if mode == "KL to reference":
        return f"rgba(38,139,210,{min(max(value, 0.0) / scale, 1.0) if scale > 0 else 0.0:.2f})"
    raise ValueError(f"mode must be one of {COLOUR_MODES}, got {mode!r}")


def token_html(
    tokens: Sequence[str], values: Sequence[float] | None, mode: str = "log-prob", scale: float | None = None
) -> str:
    """A completion as one `<span>` per token, coloured by `values` (log-probs or per-token KL; see
    `token_colour`), with the value in the tooltip. `scale` for KL defaults to the largest value here.

    >>> token_html(["<a", "b"], [0.0, -0.69]).count("<span")
    3
    >>> token_html(["", "é"], [-0.5, -0.25]).count("<span")  # one character over two tokens: one span
    2
    """
    if mode not in COLOUR_MODES:
        raise ValueError(f"mode must be one of {COLOUR_MODES}, got {mode!r}")
    vals: list[float | None] = list(values) if values is not None else [None] * len(tokens)
    if len(vals) != len(tokens):
        raise ValueError(f"{len(tokens)} tokens but {len(vals)} values")
    if scale is None:
        finite = [v for v in vals if v is not None and math.isfinite(v)]
        scale = max(finite, default=0.0) or 1.0
    spans = []
    for tok, v in merge_for_display(tokens, vals):  # a character split over tokens shows once, whole
        if v is None or mode == "none":
            tip = ""
        elif mode == "log-prob":
            tip = f" title='log p = {v:.3f} (p = {math.exp(min(v, 0.0)):.2f})'"
        else:
            tip = f" title='KL = {v:.4f}'"
        spans.append(f"<span style='background:{token_colour(v, mode, scale)}'{tip}>{html.escape(tok)}</span>")
    return f"<span class='othinklab-tokens' style='font-family:monospace;white-space:pre-wrap'>{''.join(spans)}</span>"


def _completion_cell(r: pd.Series, colour_by: str, kl_scale: float | None) -> str:
    tokens = r.get("tokens")
    if colour_by != "none" and isinstance(tokens, list) and tokens:
        values = r.get("token_logprobs") if colour_by == "log-prob" else r.get("token_kl")
        if isinstance(values, list) and len(values) == len(tokens):
            return token_html(tokens, values, colour_by, kl_scale if colour_by == "KL to reference" else None)
    return f"<span style='font-family:monospace;white-space:pre-wrap'>{html.escape(str(r['completion']))}</span>"


def kl_scale(view: pd.DataFrame) -> float:
    """The largest per-token KL among the shown completions (one colour scale for the whole table)."""
    if "token_kl" not in view:
        return 1.0
    vals = [v for ks in view["token_kl"] if isinstance(ks, list) for v in ks if v is not None and math.isfinite(v)]
    return max(vals, default=0.0) or 1.0


def _table_html(view: pd.DataFrame, colour_by: str = "none") -> str:
    rows = []
    scale = kl_scale(view)
    for _, r in view.iterrows():
        colour = "#e6f4ea" if r.get("accuracy", 0) > 0 else "#fdecea"
        rows.append(
            f"<tr style='background:{colour}'><td>{html.escape(str(r['prompt_id']))}</td><td>{r.get('sample', '')}</td>"
            f"<td class='othinklab-completion'>{_completion_cell(r, colour_by, scale)}</td>"
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


class _Shown:
    """Shows `self.widget` when the object is a notebook cell's last expression."""

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class RolloutInspector(_Shown):
    """Step slider, prompt picker, filter and token colouring over `rollouts.jsonl`; shows the prompt
    image(s) and `rollout_view` as a table, each completion's tokens coloured by log-prob or KL."""

    def __init__(self, run_dir: str | Path | None = None, rollouts: pd.DataFrame | None = None):
        import ipywidgets as w

        self._w = w
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.rollouts = rollouts if rollouts is not None else read_rollouts(run_dir)
        if self.rollouts.empty:
            raise ValueError(f"no rollouts logged in {run_dir!s}")
        steps = sorted(self.rollouts["step"].unique())
        self.step = w.SelectionSlider(options=steps, value=steps[0], description="step")
        self.prompt = w.Dropdown(description="prompt")
        self.only = w.ToggleButtons(options=FILTERS, value="all", description="show")
        self.colour = w.ToggleButtons(options=COLOUR_MODES, value="log-prob", description="colour")
        self.images, self.table, self.header, self.legend = w.HBox(), w.HTML(), w.HTML(), w.HTML()
        self.step.observe(self._on_step, names="value")
        for control in (self.prompt, self.only, self.colour):
            control.observe(lambda _: self.refresh(), names="value")
        self._on_step()
        rows = [w.HBox([self.step, self.prompt]), self.only, self.colour, self.header, self.images, self.legend]
        self.widget = w.VBox([*rows, self.table])
        self.widget.add_class("othinklab-rollout-inspector")

    def _on_step(self, *_: Any) -> None:
        ids = list(dict.fromkeys(self.rollouts.loc[self.rollouts["step"] == self.step.value, "prompt_id"]))
        self.prompt.options = ["(all)", *ids]
        self.prompt.value = "(all)"
        self.refresh()

    def view(self) -> pd.DataFrame:
        """The rows currently shown (the DataFrame twin of the widget's state)."""
        prompt = None if self.prompt.value in (None, "(all)") else self.prompt.value
        return rollout_view(self.rollouts, self.step.value, prompt, self.only.value)

    def shown_images(self) -> dict[str, Path]:
        """Prompt id -> the saved PNG the model saw (`<run>/images/...`), for the prompts of the current view."""
        view = self.view()
        if self.run_dir is None or "image" not in view:
            return {}
        out: dict[str, Path] = {}
        for pid, rel in zip(view["prompt_id"], view["image"]):
            if pid not in out and isinstance(rel, str) and (self.run_dir / rel).is_file():
                out[pid] = self.run_dir / rel
        return out

    def refresh(self) -> None:
        w = self._w
        v = self.view()
        step_rows = self.rollouts[self.rollouts["step"] == self.step.value]
        self.header.value = (
            f"<b>step {self.step.value}</b>: {len(step_rows)} completions, mean reward {step_rows['reward'].mean():.3f}, "
            f"accuracy {step_rows['accuracy'].mean():.3f}, format {step_rows['format'].mean():.3f} — showing {len(v)}"
        )
        boxes = []
        for pid, path in list(self.shown_images().items())[:8]:
            problem = v.loc[v["prompt_id"] == pid, "problem"].iloc[0] if "problem" in v else ""
            answer = v.loc[v["prompt_id"] == pid, "answer"].iloc[0] if "answer" in v else ""
            caption = w.HTML(
                f"<div style='max-width:224px;font-size:11px'><b>{html.escape(str(pid))}</b> "
                f"(answer {html.escape(str(answer))})<br>{html.escape(str(problem))[:160]}</div>"
            )
            boxes.append(w.VBox([w.Image(value=path.read_bytes(), format="png", width=160), caption]))
        self.images.children = boxes
        self.legend.value = {
            "log-prob": "tokens shaded <span style='background:rgba(220,50,47,0.8)'>red</span> by surprise "
            "(1 - p under the policy); hover a token for its log-prob",
            "KL to reference": "tokens shaded <span style='background:rgba(38,139,210,0.8)'>blue</span> by "
            f"per-token k3 KL to the reference (full colour = {kl_scale(v):.4f}, the largest shown)",
            "none": "",
        }[self.colour.value]
        self.table.value = _table_html(v, self.colour.value)


class RewardInspector(_Shown):
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
        for control in (self.alpha, self.parser):
            control.observe(lambda _: self.refresh(), names="value")
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
