"""The reference policy pi_ref of the KL term, and `kl.reset_reference_every`: every N optimizer steps the
reference becomes the current policy.

Why: a fixed reference caps how far RL can move the policy in total; resetting it (as in Kimi k1.5 /
ProRL-style "reference resets") caps only how far it moves per N steps. The trainer asks
`reference.logprobs(...)` and does not care which kind of reference it is:
- full fine-tuning: a frozen copy of the model (`models.make_reference`); a reset copies the policy into it.
- LoRA: the adapter-disabled model until the first reset; a reset stores a copy of the adapter weights
  (the trainable tensors), which the reference pass swaps in and then out again (exact copies, under
  `no_grad`). Chosen over a second peft adapter: no peft API beyond the one adapter, one adapter's
  memory, and it checkpoints as plain tensors.

The reset state goes into the checkpoint's `training.pt`, so a resumed run uses exactly the reference an
uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from othinklab.logprobs import completion_logprobs


class Reference:
    """Reference log-probs for a policy `model` (see the module docstring); `enabled=False` means none."""

    def __init__(self, model: Any, ref_model: Any | None, use_lora: bool, enabled: bool, reset_every: int = 0):
        self.model, self.ref_model, self.use_lora = model, ref_model, use_lora
        self.enabled, self.reset_every = enabled, int(reset_every)
        self.adapter: dict[str, torch.Tensor] | None = None
        """LoRA: the adapter weights at the last reset (None: the adapter-disabled base is the reference)."""
        self.resets = 0

    def logprobs(
        self, prompt: dict, ids: torch.Tensor, mask: torch.Tensor, group_size: int, chunk: int
    ) -> torch.Tensor:
        """Per-token reference log-probs of the sampled completions (no gradient)."""
        with torch.no_grad():
            if not self.use_lora:
                return completion_logprobs(self.ref_model, prompt, ids, mask, group_size, chunk)
            if self.adapter is None:
                return completion_logprobs(self.model, prompt, ids, mask, group_size, chunk, disable_adapter=True)
            with self._adapter_swapped_in():
                return completion_logprobs(self.model, prompt, ids, mask, group_size, chunk)

    def after_step(self, steps_done: int) -> bool:
        """Reset the reference to the current policy when `steps_done` is a multiple of `reset_every`."""
        if not (self.enabled and self.reset_every and steps_done % self.reset_every == 0):
            return False
        with torch.no_grad():
            if self.use_lora:
                self.adapter = {n: p.detach().clone() for n, p in self._trainable()}
            else:
                self.ref_model.load_state_dict(self.model.state_dict())
        self.resets += 1
        return True

    def state_dict(self) -> dict[str, Any]:
        """Tensors and ints only (loads under `weights_only`); empty until the first reset."""
        if not self.resets:
            return {}
        weights = self.adapter if self.use_lora else self.ref_model.state_dict()
        return {"resets": self.resets, "weights": {n: t.detach().cpu().clone() for n, t in weights.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.resets = int(state["resets"])
        if self.use_lora:
            device = {n: p.device for n, p in self._trainable()}
            self.adapter = {n: t.to(device[n]) for n, t in state["weights"].items()}
        else:
            self.ref_model.load_state_dict(state["weights"])

    def _trainable(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        return ((n, p) for n, p in self.model.named_parameters() if p.requires_grad)

    @contextmanager
    def _adapter_swapped_in(self) -> Iterator[None]:
        params = dict(self._trainable())
        saved = {n: p.detach().clone() for n, p in params.items()}
        try:
            for n, p in params.items():
                p.data.copy_(self.adapter[n])
            yield
        finally:
            for n, p in params.items():
                p.data.copy_(saved[n])
