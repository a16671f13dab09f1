"""Experiment trackers (`train.report_to`): every metrics row also goes to TensorBoard, trackio, W&B or MLflow,
through `accelerate.tracking`.

Why: users from TRL and EasyR1 watch runs in the tracker they already use. `metrics.jsonl` stays the source
of truth: trackers get a copy of each row, and one that fails mid-run is warned about once and dropped.

Keys take TRL `GRPOTrainer`'s names where TRL logs the same quantity (`TRL_NAMES`), so a TRL dashboard lines
up; training keys get a `train/` prefix, `eval/` keys keep theirs. Other keys turn `/` into `_`
(`train/loss_kl`), so no key is a folder of another (MLflow's file store and W&B panels need that; TRL's
`kl` and our `kl/beta` would clash). The x axis is the row's `step`, as in the JSONL.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from pathlib import Path
from typing import Any

from othinklab.config import TRACKERS
from othinklab.errors import UserError

log = logging.getLogger("othinklab")

TRL_NAMES: dict[str, str] = {
    "reward/total": "reward",
    "reward/std": "reward_std",
    "reward/accuracy": "rewards/accuracy/mean",
    "reward/format": "rewards/format/mean",
    "groups/zero_spread": "frac_reward_zero_std",
    "kl/value": "kl",
    "completion/length": "completions/mean_length",
    "completion/truncated": "completions/clipped_ratio",
    "clip/fraction": "clip_ratio/region_mean",
    "loss/total": "loss",
    "loss/policy": "policy_loss",
    "grad/norm": "grad_norm",
    "lr": "learning_rate",
    "kl/beta": "beta",
    "policy/entropy": "entropy",
    "clip/low_fraction": "clip_ratio/low_mean",
    "clip/high_fraction": "clip_ratio/high_mean",
}
"""Our metric name -> TRL GRPOTrainer's name for the same quantity (`kl/beta` as othinklab's TRL callback logs it)."""


def tracker_key(name: str) -> str:
    """The key a metrics-row entry is logged under in trackers.

    >>> tracker_key("reward/total"), tracker_key("reward/errors"), tracker_key("eval/greedy_accuracy")
    ('train/reward', 'train/reward_errors', 'eval/greedy_accuracy')
    """
    if name.startswith("eval/"):
        return "eval/" + name[5:].replace("/", "_")
    return "train/" + TRL_NAMES.get(name, name.replace("/", "_"))


def tracker_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a metrics row under their tracker keys (`step` is the x axis, not a value)."""
    out = {}
    for k, v in row.items():
        if k == "step" or isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            continue
        out[tracker_key(k)] = float(v)
    return out


def check_installed(names: tuple[str, ...] | list[str]) -> list[str]:
    """The chosen trackers (`none` dropped); a missing package is a `UserError` naming the extra to install."""
    chosen = [n for n in names if n != "none"]
    for name in chosen:
        if name not in TRACKERS:
            raise UserError(f"train.report_to: unknown tracker {name!r}; choose from {', '.join(TRACKERS)}")
        if importlib.util.find_spec(name) is None:  # each tracker's package and extra share its name
            raise UserError(
                f"train.report_to includes {name!r} but the {name} package is not installed; install it "
                f"with `pip install 'othinklab[{name}]'` (or `pip install {name}`), or drop it from "
                "train.report_to"
            )
    return chosen


def _start(name: str, run_dir: Path, run_name: str, config: dict[str, Any]) -> Any:
    """One of accelerate's trackers, started, with the run's config stored; where each writes is below."""
    from accelerate import tracking

    flat = {
        f"{s}.{k}": v if isinstance(v, bool | int | float | str) or v is None else str(v)[:500]
        for s, sec in config.items()
        for k, v in sec.items()
    }
    if name == "tensorboard":  # accelerate writes under logging_dir/run_name: <run_dir>/tensorboard/
        tracker = tracking.TensorBoardTracker("tensorboard", run_dir)
    elif name == "trackio":
        project = os.environ.get("TRACKIO_PROJECT", "othinklab")
        tracker = tracking.TrackioTracker(project, name=run_name, config=config, resume="allow")
    elif name == "wandb":
        project = os.environ.get("WANDB_PROJECT", "othinklab")
        tracker = tracking.WandBTracker(
            project, name=run_name, config=config, dir=str(run_dir), reinit="finish_previous"
        )
    else:
        tracker = tracking.MLflowTracker(os.environ.get("MLFLOW_EXPERIMENT_NAME", "othinklab"), run_name=run_name)
    tracker.start()
    if name in ("mlflow", "tensorboard"):  # wandb and trackio took the nested config at init
        tracker.store_init_configuration(flat)
    return tracker


class Trackers:
    """The chosen trackers of one run: `log(row)` per metrics row, `close()` at the end (also on errors).

    Where each one writes: TensorBoard event files in `<run_dir>/tensorboard/`; trackio its local store
    (project `$TRACKIO_PROJECT`, default `othinklab`); W&B project `$WANDB_PROJECT` (default `othinklab`,
    `WANDB_MODE=offline` writes under `<run_dir>/wandb/`); MLflow `$MLFLOW_TRACKING_URI` (default `./mlruns`),
    experiment `$MLFLOW_EXPERIMENT_NAME` (default `othinklab`).
    """

    def __init__(self, names: tuple[str, ...] | list[str], run_dir: str | Path, run_name: str, config: dict[str, Any]):
        self.names = check_installed(names)
        self.active: dict[str, Any] = {}
        try:
            for name in self.names:
                self.active[name] = _start(name, Path(run_dir), run_name, config)
        except UserError:
            self.close()
            raise
        except Exception as exc:  # noqa: BLE001 - a tracker that cannot start is the user's setup to fix
            self.close()
            raise UserError(f"train.report_to: {name} could not start ({type(exc).__name__}: {exc})") from None

    def log(self, row: dict[str, Any]) -> None:
        """Send one metrics row; a tracker that raises is warned about once and dropped."""
        if not self.active:
            return
        scalars, step = tracker_scalars(row), int(row.get("step", 0))
        for name in list(self.active):
            try:
                self.active[name].log(scalars, step)
            except Exception as exc:  # noqa: BLE001 - metrics.jsonl already has the row
                log.warning("tracker %s failed at step %d (%s); it is dropped, metrics.jsonl goes on", name, step, exc)
                self._close_one(name)

    def _close_one(self, name: str) -> None:
        backend = self.active.pop(name)
        try:
            backend.finish()
        except Exception as exc:  # noqa: BLE001
            log.warning("tracker %s did not close cleanly (%s)", name, exc)

    def close(self) -> None:
        for name in list(self.active):
            self._close_one(name)
