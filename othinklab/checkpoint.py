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
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from othinklab.errors import TrainingError, UserError
from othinklab.metrics import truncate_from_step
from othinklab.rng import rng_state, set_rng_state
from othinklab.runs import atomic_write

STATE_FILE = "state.json"
TRAINING_FILE = "training.pt"
STEP_NAME = re.compile(r"step-\d{6,}")
"""The only names a checkpoint directory (and the `latest` pointer's content) may have."""
OLD_RNG_GLOBALS = (
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
)
"""What checkpoints written before RNG states were plain lists hold besides tensors (NumPy's RNG keys)."""


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
        shutil.rmtree(old, ignore_errors=True)
    return final


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
    crafted file cannot run code. Older checkpoints whose only other content is NumPy RNG keys still load."""
    path = ckpt / TRAINING_FILE
    try:
        try:
            training = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
            if not unsafe or not unsafe <= set(OLD_RNG_GLOBALS):
                shown = ", ".join(sorted(unsafe))[:200] or "unknown objects"
                raise UserError(
                    f"checkpoint file {str(path)!r} holds Python objects other than tensors and numbers ({shown}); "
                    "othinklab refuses to load it because unpickling such a file can run arbitrary code. Use a "
                    f"checkpoint written by othinklab; {_previous_hint(ckpt)}"
                ) from None
            with torch.serialization.safe_globals(_numpy_rng_globals()):
                training = torch.load(path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure to read means a corrupt or truncated file
        raise UserError(
            f"checkpoint file {str(path)!r} is corrupt or truncated ({type(exc).__name__}); {_previous_hint(ckpt)}"
        ) from None
    if not isinstance(training, dict):
        raise UserError(f"checkpoint file {str(path)!r} does not hold a dict of states; {_previous_hint(ckpt)}")
    return training


def _numpy_rng_globals() -> list[Any]:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtype_classes = [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64)]
    return [np.dtype, np.ndarray, core.multiarray._reconstruct, *dtype_classes]


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


def _previous_hint(ckpt: Path) -> str:
    older = [p for p in complete_checkpoints(ckpt.parent) if p.name < ckpt.name]
    if older:
        return f"the previous checkpoint {str(older[-1])!r} can be used instead (delete or move the broken one)"
    return "no earlier complete checkpoint exists; start the run again"


def load_weights(model: Any, ckpt: str | Path) -> None:
    """Load the checkpoint's adapter (peft) or full weights into `model` in place.

    The checkpoint must match the model: a LoRA adapter of the same rank, alpha and target modules, or
    full weights of the same shapes. Anything else is a `UserError` naming both sides, never a quiet
    evaluation of an untrained adapter.
    """
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
                f"checkpoint weights file {str(f)!r} is corrupt or truncated ({str(exc)[:200]}); {_previous_hint(Path(ckpt))}"
            ) from None
    ckpt_is_adapter = (folder / "adapter_config.json").exists()
    model_is_lora = hasattr(model, "peft_config")
    theirs = describe_saved_weights(folder)
    ours = describe_model(model)
    if ckpt_is_adapter != model_is_lora:
        raise mismatch_error(folder, theirs, ours)
    if model_is_lora:
        from peft import set_peft_model_state_dict

        saved = _adapter_config(folder)
        live = model.peft_config.get("default")
        for key in ("r", "lora_alpha"):
            if saved.get(key) is not None and live is not None and saved.get(key) != getattr(live, key, None):
                raise mismatch_error(folder, theirs, ours)
        try:
            result = set_peft_model_state_dict(model, tensors)
        except RuntimeError as exc:  # shape mismatches
            raise mismatch_error(folder, theirs, ours, str(exc).splitlines()[-1][:200]) from None
        missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
        if missing:
            raise mismatch_error(folder, theirs, ours, f"adapter weights missing for {missing[:2]}")
    else:
        try:
            missing, unexpected = model.load_state_dict(tensors, strict=False)
        except RuntimeError as exc:
            raise mismatch_error(folder, theirs, ours, str(exc).splitlines()[-1][:200]) from None
        real_missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
        if real_missing or unexpected:
            raise mismatch_error(folder, theirs, ours, f"missing {real_missing[:3]}, unexpected {unexpected[:3]}")


def _adapter_config(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "adapter_config.json").read_text()[:1_000_000])
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_saved_weights(folder: Path) -> str:
    """One phrase for what a checkpoint's `model/` folder holds (for mismatch messages)."""
    if (folder / "adapter_config.json").exists():
        cfg = _adapter_config(folder)
        return f"a LoRA adapter (r={cfg.get('r')}, lora_alpha={cfg.get('lora_alpha')})"
    return "full model weights"


def describe_model(model: Any) -> str:
    """One phrase for the model weights are loaded into (for mismatch messages)."""
    live = getattr(model, "peft_config", {}).get("default") if hasattr(model, "peft_config") else None
    if live is not None:
        return f"a LoRA model (r={getattr(live, 'r', '?')}, lora_alpha={getattr(live, 'lora_alpha', '?')})"
    return "a full model (model.lora=false)"


def mismatch_error(folder: Path, theirs: str, ours: str, detail: str = "") -> UserError:
    """The weights/model mismatch as one paragraph naming both sides."""
    more = f" ({detail})" if detail else ""
    return UserError(
        f"checkpoint {str(folder)!r} holds {theirs} but the run's config builds {ours}{more}; the weights "
        "cannot be loaded into it. Use the config.yaml the checkpoint was trained with (same model.lora, "
        "model.lora_r, model.lora_alpha, model.lora_target_modules, model.name)"
    )


def nonfinite_parameters(model: Any) -> list[str]:
    """Names of trainable parameters holding NaN or inf (checked before every save)."""
    bad = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and p.is_floating_point() and not bool(torch.isfinite(p).all()):
                bad.append(name)
    return bad


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
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Checkpoint everything a GRPO run needs to continue exactly: weights, optimizer, LR and KL
    schedules, every RNG (the sampling generator too), the run's counters (`batch_index`, ...) and, under
    float16, the loss scaler's scale and growth tracker (a resume that restarted at 2^16 would overflow
    and skip steps an uninterrupted run did not)."""
    torch_state: dict[str, Any] = {"generator": generator.get_state()}
    if scaler is not None and scaler.is_enabled():
        torch_state["scaler"] = scaler.state_dict()  # floats and ints only: loads under weights_only
    extra = {**counters, "kl_schedule": kl_schedule.state_dict(), "torch": torch_state}
    return save_checkpoint(ckpt_root, step, model, optimizer, scheduler, extra, keep=keep)


def resume_training(
    run: Path,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    kl_schedule: Any,
    is_main: bool = True,
    scaler: torch.amp.GradScaler | None = None,
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
        if scaler is not None and scaler.is_enabled() and training.get("scaler"):
            scaler.load_state_dict(training["scaler"])  # a checkpoint from before this was saved: default scale
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
