"""Half precision that stays numerically safe: float32 adapters and optimizer state, scaled float16 losses.

Why: GPUs without bfloat16 (the free T4) train in float16, whose range ends at 65,504 and whose smallest
normal number is 6e-5. Weights and activations may be float16; three things must not be:
- the trainable parameters (LoRA A/B), hence their gradients and AdamW moments: a float16 update of lr x 1e-3
  rounds to nothing next to a weight of 1 (`float32_trainable` keeps them float32 for any model, as peft does);
- the log-probs and the loss (`othinklab.logprobs` computes log-softmax in float32);
- the gradients through float16 activations, which underflow to 0 when small: `torch.amp.GradScaler` scales
  the loss before `backward` and unscales before clipping; an overflowing step is skipped, the scale halved.
Under float32 and bfloat16 (which has float32's range) every function here is a no-op: runs stay bit-identical.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from othinklab.config import Config


def float32_trainable(model: Any) -> list[torch.nn.Parameter]:
    """The trainable parameters, each float32 (half ones cast in place): what the optimizer gets."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.float()
    return params


def no_scaler() -> torch.amp.GradScaler:
    """A disabled GradScaler: losses pass through, `step` is `optimizer.step()`."""
    return torch.amp.GradScaler("cpu", enabled=False)


def apply_update(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer, finite: bool) -> None:
    """Step the optimizer (through the scaler) when the gradients are finite, else drop them; then let an
    enabled scaler adjust its scale (halved after an overflow, doubled after a run of good steps)."""
    if finite:
        scaler.step(optimizer)
    else:
        optimizer.zero_grad(set_to_none=True)
    scaler.update()


def make_scaler(cfg: Config, device: torch.device | str) -> torch.amp.GradScaler:
    """A GradScaler enabled for float16 (unless `train.loss_scaling: false`), disabled (`no_scaler`'s pass-through)
    for float32/bfloat16."""
    enabled = cfg.model.dtype == "float16" and cfg.train.loss_scaling
    return torch.amp.GradScaler(torch.device(device).type, enabled=enabled)


def counts_as_nonfinite(scaler: torch.amp.GradScaler, loss: float, grad_norm: float) -> bool:
    """Whether a skipped step counts towards `train.max_nonfinite_steps`: a NaN/inf loss always does; infinite
    gradients with a finite loss only once the loss scale is 1 or below (above it they usually mean the scale
    is too high: the scaler halves it and training goes on with the next batch)."""
    if not math.isfinite(loss):
        return True
    if math.isfinite(grad_norm):
        return False
    return not (scaler.is_enabled() and scaler.get_scale() > 1.0)
