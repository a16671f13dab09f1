"""A live training view for notebooks: pass it to `train(cfg, callbacks=[view])` and it updates reward,
measured KL and beta(s), and completion length in place as steps finish, under a progress bar.

Why: a run is easier to judge while it runs ("is KL running away while beta is low?"). The view keeps each
step's metrics row (`frame()`, the DataFrame twin). While the run goes, the curves are one small inline SVG
(`svg_curves`, no axes ticks) in an `ipywidgets.HTML` replaced each step: no PNG per step, no flicker, and it
works alike in JupyterLab, Notebook, VS Code, Colab and nbclient. `finish()` then draws the full matplotlib
figure (`plots.training_curves`) once. With `display=False` the view only collects rows.
"""

from __future__ import annotations

import html
import io
import math
import time
from typing import Any

import pandas as pd

from othinklab.plots import training_curves


class LiveTrainingView:
    """Callback for `othinklab.trainer.train`: collects each step's metrics and redraws the curves.

    `total_steps` sizes the progress bar (pass `cfg.train.total_steps`); `every` redraws the figure every
    so many steps (the last step is always drawn when `finish()` is called); `smooth` is the rolling
    window of the curves.
    """

    def __init__(self, total_steps: int, every: int = 1, smooth: int = 1, display: bool = True):
        self.total_steps = int(total_steps)
        self.every = max(1, int(every))
        self.smooth = smooth
        self.rows: list[dict[str, Any]] = []
        self.redraws = 0
        self._start = time.perf_counter()
        self.widget = None
        if display:
            import ipywidgets as w
            from IPython.display import display as ipy_display

            self.progress = w.IntProgress(value=0, min=0, max=self.total_steps, description="step 0")
            self.status = w.HTML("waiting for the first step ...")
            self.chart = w.HTML("")  # the live curves: an SVG replaced in place each step
            self.chart.add_class("othinklab-live-chart")
            self.image = w.Image(format="png")  # the full figure, drawn once by finish()
            self.widget = w.VBox([w.HBox([self.progress, self.status]), self.chart, self.image])
            self.widget.add_class("othinklab-live-view")
            ipy_display(self.widget)

    def __call__(self, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))
        if self.widget is None:
            return
        n = len(self.rows)
        self.progress.value = min(n, self.total_steps)
        self.progress.description = f"step {int(row['step']) + 1}"
        last_eval = next((r for r in reversed(self.rows) if "eval/greedy_accuracy" in r), None)
        self.status.value = status_line(row, n, self.total_steps, time.perf_counter() - self._start, last_eval)
        if n % self.every == 0 or n == self.total_steps:
            self.redraw()

    def frame(self) -> pd.DataFrame:
        """The metrics rows seen so far (the DataFrame twin of what the view draws)."""
        return pd.DataFrame(self.rows)

    def render_png(self) -> bytes:
        """The curves of the rows seen so far as PNG bytes (empty before the first step)."""
        if not self.rows:
            return b""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(13, 3.4))
        axes = fig.subplots(1, 3)
        training_curves(self.frame(), smooth=self.smooth, axes=axes)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=72)
        return buf.getvalue()

    def redraw(self) -> None:
        """Replace the live SVG curves with the rows seen so far."""
        self.redraws += 1
        if self.widget is not None:
            self.chart.value = svg_curves(self.frame())

    def finish(self) -> None:
        """Draw the last rows (when the run stopped between redraws) and the full matplotlib figure, once."""
        if self.widget is not None and self.rows:
            self.redraw()
            self.image.value = self.render_png()


PANELS = (
    ("reward", ("reward/total", "reward/accuracy", "reward/format")),
    ("measured KL and beta(s)", ("kl/value", "kl/beta")),
    ("completion length", ("completion/length",)),
)
"""The live view's panels and the metrics each one draws."""
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c")


def svg_curves(frame: pd.DataFrame, width: int = 300, height: int = 120) -> str:
    """The live view's curves as one inline SVG: a panel per `PANELS` entry, each series a polyline scaled to
    its panel (KL and beta each to its own range, as they differ by orders of magnitude), labelled with its
    last value and range.

    >>> svg = svg_curves(pd.DataFrame({"step": [0, 1], "reward/total": [0.5, 1.0], "kl/value": [0.0, 0.01]}))
    >>> svg.count("<polyline"), "reward/total 1.000" in svg
    (2, True)
    """
    panels = []
    for p, (title, keys) in enumerate(PANELS):
        x0, series = p * (width + 20), [k for k in keys if k in frame and frame[k].notna().any()]
        parts = [f"<text x='{x0}' y='12' font-weight='bold'>{html.escape(title)}</text>"]
        shared = None if p == 1 else _range(frame[series]) if series else None
        for i, key in enumerate(series):
            values = frame[key].astype(float)
            lo, hi = shared or _range(values)
            pts = [
                f"{x0 + width * (j / max(len(values) - 1, 1)):.1f},{20 + height * (1 - (v - lo) / (hi - lo)):.1f}"
                for j, v in enumerate(values)
                if math.isfinite(v)
            ]
            parts.append(
                f"<polyline fill='none' stroke='{COLOURS[i]}' stroke-width='2' points='{' '.join(pts)}'/>"
                f"<text x='{x0}' y='{height + 36 + 13 * i}' fill='{COLOURS[i]}'>{html.escape(key)} "
                f"{values.dropna().iloc[-1]:.3f} (range {values.min():.3g} to {values.max():.3g})</text>"
            )
        panels.append("".join(parts))
    total_w, total_h = len(PANELS) * (width + 20), height + 36 + 13 * 3
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{total_w}' height='{total_h}' "
        f"style='font:11px sans-serif'>{''.join(panels)}</svg>"
    )


def _range(values: Any) -> tuple[float, float]:
    """(low, high) of the finite values, widened when flat so a constant curve sits mid-panel."""
    v = pd.Series(pd.DataFrame(values).to_numpy().ravel()).astype(float)
    v = v[v.map(math.isfinite)]
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
    return (lo - 0.5, hi + 0.5) if hi - lo < 1e-12 else (lo, hi)


def status_line(
    row: dict[str, Any], done: int, total: int, elapsed_s: float, last_eval: dict[str, Any] | None = None
) -> str:
    """One line under the progress bar: step, reward, accuracy, format, beta, measured KL, the latest held-out
    accuracy (rows with `eval/` keys, from `train.eval_every`), ETA.

    >>> status_line({"step": 0, "reward/total": 1.0, "reward/accuracy": 0.25, "reward/format": 0.75,
    ...              "kl/beta": 0.07, "kl/value": 0.0}, 1, 4, 2.0)
    'step 1/4 · reward 1.000 (acc 0.250, fmt 0.750) · beta 0.0700 · KL 0.0000 · 2 s elapsed, ~6 s left'
    >>> status_line({"step": 1}, 2, 4, 2.0, {"step": 1, "eval/greedy_accuracy": 0.5, "eval/sampled_accuracy": 0.25}).split(" · ")[-2]
    'held-out acc 0.500 greedy, 0.250 sampled'
    """
    left = elapsed_s / max(done, 1) * (total - done)
    held_out = ""
    if last_eval:
        held_out = (
            f"held-out acc {last_eval.get('eval/greedy_accuracy', float('nan')):.3f} greedy, "
            f"{last_eval.get('eval/sampled_accuracy', float('nan')):.3f} sampled · "
        )
    return (
        f"step {done}/{total} · reward {row.get('reward/total', float('nan')):.3f} "
        f"(acc {row.get('reward/accuracy', float('nan')):.3f}, fmt {row.get('reward/format', float('nan')):.3f}) · "
        f"beta {row.get('kl/beta', float('nan')):.4f} · KL {row.get('kl/value', float('nan')):.4f} · "
        f"{held_out}{elapsed_s:.0f} s elapsed, ~{left:.0f} s left"
    )
