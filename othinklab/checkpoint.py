"""Atomic checkpoints: adapter (peft format) or full weights, optimizer, LR and KL schedule state, RNG, step.

Why: a run killed at any moment, mid-save included, must resume from its latest *complete* checkpoint
exactly as if never stopped. A checkpoint is written to a temporary directory, fsynced and renamed into
place (atomic on POSIX); only then does the `latest` pointer move (atomically too), and only then are old
ones pruned. A directory without `state.json` (a cut-off save) is never loaded. A reader (`load_run`)
pins its checkpoint with a shared lock on `state.json` and pruning skips a pinned one, so a run saving
every step never deletes what a reader is loading. Weights are checked for NaN/inf on load and on save.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from othinklab.errors import TrainingError, UserError
from othinklab.metrics import truncate_from_step
from othinklab.rng import rng_state, set_rng_state
from othinklab.runs import atomic_write
from othinklab.weights import apply_weights, nonfinite_parameters, nonfinite_tensors

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no pins; a reader retries with the new latest instead
    fcntl = None  # type: ignore[assignment]

STATE_FILE = "state.json"
TRAINING_FILE = "training.pt"
STEP_NAME = re.compile(r"step-\d{6,}")
"""The only names a checkpoint directory (and the `latest` pointer's content) may have."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(path)


def save_checkpoint(
    ckpt_root: str | Path,
    step: int,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write `ckpt_root/step-XXXXXX` atomically, point `latest` at it, prune to `keep` checkpoints.

    `extra` holds JSON-able state (KL schedule, data position) and tensors/objects under key `"torch"`
    (generator states), which go to `training.pt` with the optimizer and LR scheduler.
    """
    root = Path(ckpt_root)
    bad = nonfinite_parameters(model)
    if bad:
        last = latest_checkpoint(root)
        raise TrainingError(
            f"step {step}: {len(bad)} trainable weight tensor(s) hold NaN/inf (first: {bad[0][:120]}), so no "
            f"checkpoint was written from them. The last good checkpoint is {str(last) if last else 'none'}. "
            "Lower train.learning_rate, keep train.max_grad_norm > 0, or use model.dtype float32/bfloat16"
        )
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step:06d}.", dir=root))
    try:
        model.save_pretrained(tmp / "model")
        extra = dict(extra)
        torch_state = extra.pop("torch", {})
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                **torch_state,
            },
            tmp / TRAINING_FILE,
        )
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **extra}, indent=2, sort_keys=True))
        _fsync_tree(tmp)
        if final.exists():  # a re-save of the same step: move the old one aside first
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write(root / "latest", final.name)
    _fsync_dir(root)
    for old in complete_checkpoints(root)[:-keep]:
        _prune(old)
    return final


def _prune(old: Path) -> None:
    """Remove an old checkpoint unless a reader has pinned it (then a later save removes it)."""
    try:
        fd = os.open(old / STATE_FILE, os.O_RDONLY)
    except OSError:
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # a reader is loading it
        shutil.rmtree(old, ignore_errors=True)  # under the exclusive lock: a reader waits, then sees it gone
    finally:
        os.close(fd)


def _pin(ckpt: Path) -> int | None:
    """A shared lock on `ckpt/state.json` held by the returned descriptor; None when it was pruned meanwhile."""
    try:
        fd = os.open(ckpt / STATE_FILE, os.O_RDONLY)
    except OSError:
        return None
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_SH)
    with contextlib.suppress(OSError):
        if os.path.samestat(os.fstat(fd), os.stat(ckpt / STATE_FILE)):
            return fd
    os.close(fd)
    return None


@contextlib.contextmanager
def pinned_latest(ckpt_root: str | Path) -> Iterator[Path | None]:
    """The newest complete checkpoint, kept on disk for the block's duration (None when there is none); one
    pruned between choosing and pinning is skipped for the new latest, so a reader always gets a whole one."""
    for _ in range(1000):
        latest = latest_checkpoint(ckpt_root)
        fd = _pin(latest) if latest is not None else None
        if latest is None or fd is not None:
            break
    else:  # pragma: no cover - a writer faster than 1000 reads
        raise UserError(f"checkpoints in {str(ckpt_root)!r} are replaced faster than they can be read; try again")
    try:
        yield latest
    finally:
        if fd is not None:
            os.close(fd)


def load_run(
    run_dir: str | Path, model_config: Callable[[Any], Any] | None = None, device: str | None = None
) -> tuple[Any, Any, Any, Path]:
    """(config, model with the run's latest checkpoint, processor, checkpoint) of a run directory, in eval mode.

    The one way eval, export and the ablations load a run: its `config.yaml` builds the base
    (`model_config(cfg)` may adjust the model section, e.g. export's dtype), the checkpoint is pinned
    while the base loads, and its weights are checked (NaN/inf, mismatch) before use."""
    from othinklab.bounds import read_run_config
    from othinklab.config import load_config
    from othinklab.models import load_model

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise UserError(f"run {str(run)!r}: no config.yaml there; is it a run directory?")
    read_run_config(run)  # refuses an empty or foreign config.yaml (never a silent default model)
    cfg = load_config(run / "config.yaml")
    with pinned_latest(run / "checkpoints") as latest:
        if latest is None:
            raise UserError(f"run {str(run)!r} has no complete checkpoint yet")
        model_cfg = model_config(cfg) if model_config else cfg.model
        model, processor = load_model(model_cfg, device=device) if device else load_model(model_cfg)
        load_weights(model, latest)
    return cfg, model.eval(), processor, latest


def complete_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Checkpoint directories that finished saving, oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.glob("step-*")
        if STEP_NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink() and (p / STATE_FILE).exists()
    ]
    return sorted(found, key=lambda p: p.name)


def remove_partial(ckpt_root: str | Path) -> list[Path]:
    """Delete the temporary directories of saves that were cut off (a kill mid-save); returns them."""
    root = Path(ckpt_root)
    partial = [p for p in root.glob(".step-*") if p.is_dir()] if root.is_dir() else []
    for p in partial:
        shutil.rmtree(p, ignore_errors=True)
    return partial


def latest_checkpoint(ckpt_root: str | Path) -> Path | None:
    """The newest complete checkpoint (the `latest` pointer if it is valid, else the highest step)."""
    root = Path(ckpt_root)
    pointer = root / "latest"
    if pointer.is_file() and not pointer.is_symlink():
        try:
            name = pointer.read_text(errors="replace")[:64].strip()
        except OSError:
            name = ""
        # Confined to this directory: only a `step-NNNNNN` child, never `..`, an absolute path or a link.
        target = root / name
        if STEP_NAME.fullmatch(name) and target.is_dir() and not target.is_symlink() and (target / STATE_FILE).exists():
            return target
    found = complete_checkpoints(root)
    return found[-1] if found else None


def load_state(ckpt: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`state.json` contents, `training.pt` contents) of a checkpoint, with clear errors when corrupt."""
    ckpt = Path(ckpt)
    try:
        state = json.loads((ckpt / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(
            f"checkpoint {str(ckpt / STATE_FILE)!r} is unreadable ({exc}); {_previous_hint(ckpt)}"
        ) from None
    training = _load_training_file(ckpt)
    problems = _state_problems(state, training)
    if problems:
        raise UserError(
            f"checkpoint {str(ckpt)!r} is not a complete othinklab checkpoint ({'; '.join(problems[:3])}); "
            f"{_previous_hint(ckpt)}"
        )
    return state, training


def _load_training_file(ckpt: Path) -> dict[str, Any]:
    """`training.pt` loaded with `weights_only=True`: tensors, numbers, strings and containers only, so a
    crafted file cannot run code."""
    path = ckpt / TRAINING_FILE
    try:
        try:
            training = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
            shown = ", ".join(sorted(unsafe))[:200] or "unknown objects"
            raise UserError(
                f"checkpoint file {str(path)!r} holds Python objects other than tensors and numbers ({shown}); "
                "othinklab refuses to load it because unpickling such a file can run arbitrary code. Use a "
                f"checkpoint written by othinklab; {_previous_hint(ckpt)}"
            ) from None
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure to read means a corrupt or truncated file
        raise UserError(
            f"checkpoint file {str(path)!r} is corrupt or truncated ({type(exc).__name__}); {_previous_hint(ckpt)}"
        ) from None
    if not isinstance(training, dict):
        raise UserError(f"checkpoint file {str(path)!r} does not hold a dict of states; {_previous_hint(ckpt)}")
    return training


def _state_problems(state: Any, training: dict[str, Any]) -> list[str]:
    """What a resume needs but the checkpoint lacks (a hand-edited or foreign `state.json`/`training.pt`)."""
    if not isinstance(state, dict):
        return [f"{STATE_FILE} is not a JSON object"]
    out = []
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        out.append(f"{STATE_FILE} step={str(step)[:40]!r} is not a non-negative integer")
    for key in ("optimizer", "scheduler", "rng"):
        if not isinstance(training.get(key), dict):
            out.append(f"{TRAINING_FILE} has no {key!r} state")
    return out


def _previous_hint(ckpt: Path, weights: bool = False) -> str:
    """Names the newest earlier complete checkpoint; with `weights`, the newest whose weights load and are
    finite (the last good one, past any other broken by the same NaN/inf or damage)."""
    for older in reversed([p for p in complete_checkpoints(ckpt.parent) if p.name < ckpt.name]):
        with contextlib.suppress(ValueError):
            if not weights or not nonfinite_tensors(_read_weights(older / "model")):
                return f"the previous checkpoint {str(older)!r} can be used instead (delete or move the broken one)"
    return "no earlier good checkpoint exists; start the run again"


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's `model/` folder; ValueError naming the problem when absent or corrupt."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"checkpoint {str(folder)!r} holds no weights")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors.update(load_file(f))
        except Exception as exc:  # noqa: BLE001 - any failure to read means a corrupt or truncated file
            raise ValueError(f"checkpoint weights file {str(f)!r} is corrupt or truncated ({str(exc)[:200]})") from None
    return tensors


def load_weights(model: Any, ckpt: str | Path) -> None:
    """Load the checkpoint's adapter (peft) or full weights into `model` in place. Missing, corrupt or NaN/inf
    weights are a `UserError` naming the last good checkpoint; a model mismatch names both sides (`weights`)."""
    folder = Path(ckpt) / "model"
    try:
        tensors = _read_weights(folder)
    except ValueError as exc:
        raise UserError(f"{exc}; {_previous_hint(Path(ckpt), weights=True)}") from None
    bad = nonfinite_tensors(tensors)
    if bad:
        raise UserError(
            f"checkpoint {str(ckpt)!r} holds NaN/inf weights ({len(bad)} tensor(s), first: {bad[0][:120]}), so it "
            f"is not loaded; {_previous_hint(Path(ckpt), weights=True)}"
        )
    apply_weights(model, folder, tensors)


# --------------------------------------------------------------------------- a GRPO run's resume
RUN_LOGS = ("metrics.jsonl", "rollouts.jsonl", "reward_errors.jsonl")
"""Append-only logs of a GRPO run; a resume cuts them back to the checkpoint's step."""


def save_training(ckpt_root: str | Path, step: int, parts: Any, counters: dict[str, int], keep: int = 2) -> Path:
    """Checkpoint all a GRPO run needs to continue exactly, from `parts` (a `trainer.TrainParts`): weights,
    optimizer, LR and KL schedules, every RNG (the sampling generator too), the run's counters, a reset
    reference's weights (`othinklab.reference`) and, under float16, the loss scaler's state (a resume
    restarting at 2^16 would overflow and skip steps an uninterrupted run did not)."""
    scaler, reference = parts.scaler, parts.reference
    torch_state: dict[str, Any] = {"generator": parts.generator.get_state()}
    if scaler is not None and scaler.is_enabled():
        torch_state["scaler"] = scaler.state_dict()  # floats and ints only: loads under weights_only
    if reference is not None and reference.state_dict():
        torch_state["reference"] = reference.state_dict()  # tensors and ints: loads under weights_only
    extra = {**counters, "kl_schedule": parts.schedule.state_dict(), "torch": torch_state}
    return save_checkpoint(ckpt_root, step, parts.model, parts.optimizer, parts.scheduler, extra, keep=keep)


def resume_training(run: Path, parts: Any, is_main: bool = True) -> dict[str, int]:
    """Load the run's latest complete checkpoint into `parts` (a `trainer.TrainParts`); returns its counters
    (`step`, `batch_index`, `nonfinite_in_a_row`; zeros when there is none yet). The main process also
    deletes cut-off saves and drops log rows written after the checkpoint, so the resumed run appends
    exactly the rows an uninterrupted run would have."""
    counters = {"step": 0, "batch_index": 0, "nonfinite_in_a_row": 0}
    latest = latest_checkpoint(run / "checkpoints")
    if latest is not None:
        state, training = load_state(latest)
        if not isinstance(state.get("kl_schedule"), dict):  # an SFT run's checkpoint has no GRPO state
            raise UserError(
                f"checkpoint {str(latest)!r} was written by {state.get('method', 'another')!r} training, not by "
                "`othinklab train`, so `train --resume` cannot continue it; evaluate or export it, or choose "
                "another train.run_name for a GRPO run"
            )
        load_weights(parts.model, latest)
        parts.optimizer.load_state_dict(training["optimizer"])
        parts.scheduler.load_state_dict(training["scheduler"])
        set_rng_state(training["rng"])
        parts.generator.set_state(training["generator"])
        if parts.scaler is not None and parts.scaler.is_enabled() and training.get("scaler"):
            parts.scaler.load_state_dict(training["scaler"])  # a checkpoint from before this was saved: default scale
        parts.schedule.load_state_dict(state["kl_schedule"])
        if parts.reference is not None:
            parts.reference.load_state_dict(training.get("reference", {}))
        counters = {
            "step": state["step"],
            "batch_index": state["batch_index"],
            "nonfinite_in_a_row": state.get("nonfinite_in_a_row", 0),
        }
    if is_main:
        remove_partial(run / "checkpoints")
        for name in RUN_LOGS:
            truncate_from_step(run / name, counters["step"])
    return counters
