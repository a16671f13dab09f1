"""Atomic checkpoints: adapter (peft format) or full weights, optimizer, LR and KL schedule state, RNG, step.

Why: a run killed at any moment — including in the middle of a save — must resume from its latest
*complete* checkpoint and continue exactly as if never stopped. Each checkpoint is written into a
temporary directory, fsynced, then renamed into place (a rename is atomic on POSIX); only then does
the `latest` pointer move (itself replaced atomically), and only then are old checkpoints pruned.
A directory without `state.json` — a save that was cut off — is never loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from othinklab.errors import UserError
from othinklab.metrics import truncate_from_step
from othinklab.rng import rng_state, set_rng_state
from othinklab.runs import atomic_write

STATE_FILE = "state.json"
TRAINING_FILE = "training.pt"


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
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Checkpoint directories that finished saving, oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).exists()]
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
    if pointer.exists():
        target = root / pointer.read_text().strip()
        if (target / STATE_FILE).exists():
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
    try:
        training = torch.load(ckpt / TRAINING_FILE, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise UserError(
            f"checkpoint file {str(ckpt / TRAINING_FILE)!r} is corrupt or truncated ({type(exc).__name__}); {_previous_hint(ckpt)}"
        ) from None
    return state, training


def _previous_hint(ckpt: Path) -> str:
    older = [p for p in complete_checkpoints(ckpt.parent) if p.name < ckpt.name]
    if older:
        return f"the previous checkpoint {str(older[-1])!r} can be used instead (delete or move the broken one)"
    return "no earlier complete checkpoint exists; start the run again"


def load_weights(model: Any, ckpt: str | Path) -> None:
    """Load the checkpoint's adapter (peft) or full weights into `model` in place."""
    from safetensors.torch import load_file

    folder = Path(ckpt) / "model"
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"checkpoint {str(folder)!r} holds no weights; {_previous_hint(Path(ckpt))}")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors.update(load_file(f))
        except Exception as exc:  # noqa: BLE001 - any failure to read means a corrupt or truncated file
            raise UserError(
                f"checkpoint weights file {str(f)!r} is corrupt or truncated ({exc}); {_previous_hint(Path(ckpt))}"
            ) from None
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, tensors)
    else:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        real_missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
        if real_missing or unexpected:
            raise UserError(
                f"checkpoint {str(folder)!r} does not match the model (missing {real_missing[:3]}, unexpected {unexpected[:3]})"
            )


# --------------------------------------------------------------------------- a GRPO run's resume
RUN_LOGS = ("metrics.jsonl", "rollouts.jsonl", "reward_errors.jsonl")
"""Append-only logs of a GRPO run; a resume cuts them back to the checkpoint's step."""


def save_training(
    ckpt_root: str | Path,
    step: int,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    kl_schedule: Any,
    counters: dict[str, int],
    keep: int = 2,
) -> Path:
    """Checkpoint everything a GRPO run needs to continue exactly: weights, optimizer, LR and KL
    schedules, every RNG (the sampling generator too) and the run's counters (`batch_index`, ...)."""
    extra = {**counters, "kl_schedule": kl_schedule.state_dict(), "torch": {"generator": generator.get_state()}}
    return save_checkpoint(ckpt_root, step, model, optimizer, scheduler, extra, keep=keep)


def resume_training(
    run: Path,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    kl_schedule: Any,
    is_main: bool = True,
) -> dict[str, int]:
    """Load the run's latest complete checkpoint into the given objects; returns its counters
    (`step`, `batch_index`, `nonfinite_in_a_row`; zeros when there is none yet).

    The main process also deletes saves that were cut off and drops log rows written after the
    checkpoint, so the resumed run appends exactly the rows an uninterrupted run would have.
    """
    counters = {"step": 0, "batch_index": 0, "nonfinite_in_a_row": 0}
    latest = latest_checkpoint(run / "checkpoints")
    if latest is not None:
        state, training = load_state(latest)
        load_weights(model, latest)
        optimizer.load_state_dict(training["optimizer"])
        scheduler.load_state_dict(training["scheduler"])
        set_rng_state(training["rng"])
        generator.set_state(training["generator"])
        kl_schedule.load_state_dict(state["kl_schedule"])
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
