"""A live training view for notebooks: pass it to `train(cfg, callbacks=[view])` and it redraws reward,
measured KL and beta(s), and completion length in place as steps finish, under a progress bar.

Why: a short run in a class or a long one on a GPU is easier to judge while it runs ("is the format reward
climbing? is KL running away while beta is low?"). The trainer calls the view with each step's metrics
row (`trainer._metrics_row`); the view keeps the rows (`frame()`, the DataFrame twin, tested directly)
and draws them with `plots.training_curves` into an `ipywidgets.Image`, so the figure is replaced, not
appended, and it works the same in JupyterLab, classic Notebook, VS Code and nbclient.

Simplified: the figure is a PNG re-rendered every `every` steps (about 0.1-0.3 s each on a laptop CPU),
not an interactive canvas; outside a notebook (`display=False`) it only collects rows.
"""

from __future__ import annotations

import io
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
            self.image = w.Image(format="png")
            self.widget = w.VBox([w.HBox([self.progress, self.status]), self.image])
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
        self.redraws += 1
        if self.widget is not None:
            self.image.value = self.render_png()

    def finish(self) -> None:
        """Draw the last rows (when the run stopped between redraws)."""
        if self.widget is not None and self.rows:
            self.redraw()


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
