"""Putting a checkpoint's tensors into a live model (a LoRA adapter through peft, or full weights in
transformers' on-disk key layout), a mismatch named on both sides; and the NaN/inf checks of save and load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from othinklab.errors import UserError


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or inf."""
    return [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def apply_weights(model: Any, folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's adapter (peft) or full weights into `model` in place.

    A LoRA adapter must match in rank, alpha and target modules, full weights in shapes; anything else is a
    `UserError` naming both sides, never a quiet evaluation of an untrained adapter.
    """
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
        _load_full(model, folder, tensors, theirs, ours)


def _load_full(model: Any, folder: Path, tensors: dict[str, torch.Tensor], theirs: str, ours: str) -> None:
    """Full weights into `model`. `save_pretrained` writes transformers' on-disk key layout, which differs
    from the live module names (Qwen2-VL: `model.visual.*` is saved as `visual.*`), so a folder not in the
    live layout is read by transformers' own loader, which maps the keys back."""
    live = set(model.state_dict())
    if not set(tensors) <= live:
        try:
            tensors = type(model).from_pretrained(folder, dtype=next(model.parameters()).dtype).state_dict()
        except Exception as exc:  # noqa: BLE001 - another architecture's or a damaged folder
            raise mismatch_error(
                folder, theirs, ours, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            ) from None
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise mismatch_error(folder, theirs, ours, str(exc).splitlines()[-1][:200]) from None
    real_missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
    if real_missing or unexpected:
        raise mismatch_error(folder, theirs, ours, f"missing {real_missing[:3]}, unexpected {unexpected[:3]}")


def _adapter_config(folder: Path, name: str = "adapter_config.json") -> dict[str, Any]:
    try:
        data = json.loads((folder / name).read_text()[:1_000_000])
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_saved_weights(folder: Path) -> str:
    """One phrase for what a checkpoint's `model/` folder holds (for mismatch messages)."""
    if (folder / "adapter_config.json").exists():
        cfg = _adapter_config(folder)
        return f"a LoRA adapter (r={cfg.get('r')}, lora_alpha={cfg.get('lora_alpha')})"
    return f"full model weights ({_shape(_adapter_config(folder, 'config.json'))})"


def _shape(cfg: Any) -> str:
    """Architecture and size of a transformers config (dict or object), to tell two full models apart."""
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k, None)
    text = get("text_config") or {}
    size = get("hidden_size") or (
        text.get("hidden_size") if isinstance(text, dict) else getattr(text, "hidden_size", None)
    )
    return f"{get('model_type') or 'unknown type'}, hidden size {size or '?'}"


def describe_model(model: Any) -> str:
    """One phrase for the model weights are loaded into (for mismatch messages)."""
    live = getattr(model, "peft_config", {}).get("default")
    if live is not None:
        return f"a LoRA model (r={getattr(live, 'r', '?')}, lora_alpha={getattr(live, 'lora_alpha', '?')})"
    return f"a full model (model.lora=false; {_shape(getattr(model, 'config', {}))})"


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
    with torch.no_grad():
        return nonfinite_tensors({name: p for name, p in model.named_parameters() if p.requires_grad})
