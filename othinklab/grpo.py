"""GRPO's core math: group advantages (Eq. 2) and the clipped surrogate loss (Eq. 4); log-probs are in `logprobs`.

Why: the whole algorithm minus generation and rewards, apart from the training loop (spinningup style) so
each piece is testable alone on tiny tensors.

Simplified versus the paper / R1-V:
- advantages divide by the unbiased `std + eps` (eps = 1e-4 like R1-V/TRL; the paper writes plain `std`),
  so a constant-reward group gets zero advantages.
- `old_logp=None` means one policy update per generation batch (R1-V): the ratio is 1 in value but keeps
  its gradient, so the surrogate's gradient is `A * grad logp`.
- next to the paper's per-sequence mean: `aggregation="token"` (DAPO: sum over all tokens / token count)
  and `"dr_grpo"` (Dr. GRPO: sum over tokens / (completions x max completion length), no length bias).
- next to the paper's per-group std: `scale="batch"` / `"none"` (Dr. GRPO drops the std division, which
  up-weights near-constant groups); `epsilon_high` (DAPO's clip-higher) sets the upper ratio bound apart.
- Clipping does nothing while `num_iterations` is 1 (the ratio is exactly 1): `epsilon` and
  `epsilon_high` only matter when a generation batch is reused for several updates.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from othinklab.errors import TrainingError
from othinklab.kl import kl_estimate

AGGREGATIONS = ("sequence", "token", "dr_grpo")
SCALES = ("group", "batch", "none")


def _grouped(rewards: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat float32 rewards, the same as `(groups, group_size)` rows), checking that they split evenly."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32).flatten()
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards ({rewards.numel()}) must split into groups of group_size={group_size}")
    return rewards, rewards.view(-1, group_size)


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    eps: float = 1e-4,
    scale: str = "group",
    batch_std: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """`(r - mean_g) / (std + eps)` within consecutive groups of `group_size` (Eq. 2).

    `scale`: `"group"` divides by each group's std (the paper's, Eq. 2); `"batch"` by the std of all of
    `rewards` (one number, so groups keep their relative spread), or by `batch_std` when given (the std of
    a batch split over data-parallel ranks, which one rank's `rewards` cannot give); `"none"` only centres
    (Dr. GRPO).

    >>> [round(a, 4) for a in group_advantages(torch.tensor([1.0, 1.0, 0.0, 2.0]), 2).tolist()]
    [0.0, 0.0, -0.7071, 0.7071]
    >>> group_advantages(torch.tensor([1.0, 1.0, 0.0, 2.0]), 2, scale="none").tolist()
    [0.0, 0.0, -1.0, 1.0]
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    rewards, grouped = _grouped(rewards, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    if scale == "none":
        return (grouped - mean).flatten()
    if scale == "batch":
        std = rewards.std() if rewards.numel() > 1 else torch.zeros(())
        std = std if batch_std is None else torch.as_tensor(batch_std, dtype=torch.float32)
    else:
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    return ((grouped - mean) / (std + eps)).flatten()


def zero_spread_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Fraction of groups whose rewards are all equal (they teach nothing: zero advantages).

    >>> zero_spread_fraction(torch.tensor([1.0, 1.0, 0.0, 2.0]), 2)
    0.5
    """
    _, grouped = _grouped(rewards, group_size)
    if grouped.shape[0] == 0:
        return 0.0
    same = (grouped == grouped[:, :1]).all(dim=1)
    return same.float().mean().item()


def token_mean_weights(local_tokens: list[float], global_tokens: float, world: int = 1) -> list[float]:
    """Weights `w_b` that turn per-part token means into one global token mean (`aggregation="token"`).

    A batch split over `world` processes (DDP averages their gradients) and over accumulation steps
    (whose losses are summed) gives each part the mean over *its* tokens; `sum_b w_b * loss_b`, averaged
    over processes, equals the mean over all `global_tokens` when `w_b = n_b * world / global_tokens`.

    >>> token_mean_weights([3.0, 1.0], 4.0)
    [0.75, 0.25]
    """
    total = max(float(global_tokens), 1.0)
    return [float(n) * world / total for n in local_tokens]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of `values` over the tokens where `mask` is 1 (0.0 when there are none), e.g. policy entropy.

    >>> masked_mean(torch.tensor([[1.0, 3.0], [5.0, 7.0]]), torch.tensor([[1, 1], [1, 0]]))
    3.0
    """
    m = mask.to(values.dtype)
    return float((values * m).sum() / m.sum().clamp(min=1.0))


def loss_mask(completion_mask: torch.Tensor, truncated: torch.Tensor, mask_truncated: bool = False) -> torch.Tensor:
    """The tokens that carry loss: `completion_mask`, with truncated completions zeroed when asked (DAPO).

    A completion cut at the length limit never reached its answer, so its reward says little about its
    tokens; masking it keeps it out of the gradient (it still counts as a completion in the group).

    >>> loss_mask(torch.ones(2, 2), torch.tensor([False, True]), True).tolist()
    [[1.0, 1.0], [0.0, 0.0]]
    """
    if not mask_truncated:
        return completion_mask
    keep = (~truncated.bool()).to(completion_mask.dtype).unsqueeze(1)
    return completion_mask * keep


MAX_ALL_TRUNCATED_STEPS = 3
"""Steps in a row in which `mask_truncated_completions` masked every completion before training stops."""


class AllTruncatedGuard:
    """A metrics-row callback: under `grpo.mask_truncated_completions`, a step whose every completion was
    truncated has zero loss weight and trains nothing, yet raises no error. Each such step is reported on
    stderr; `MAX_ALL_TRUNCATED_STEPS` in a row stop training with a `TrainingError`."""

    def __init__(self, grpo: Any) -> None:
        self.enabled, self.length, self.in_a_row = grpo.mask_truncated_completions, grpo.max_completion_length, 0

    def __call__(self, row: dict) -> None:
        if not self.enabled or row.get("completion/truncated", 0.0) < 1.0:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        what = (
            f"step {row.get('step')}: every completion hit grpo.max_completion_length={self.length} and "
            "grpo.mask_truncated_completions=true gave them all zero loss weight: this step trained nothing"
        )
        if self.in_a_row >= MAX_ALL_TRUNCATED_STEPS:
            raise TrainingError(
                f"{what} ({self.in_a_row} steps in a row). Raise grpo.max_completion_length or set "
                "grpo.mask_truncated_completions=false"
            )
        print(f"othinklab: warning: {what}", file=sys.stderr, flush=True)


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, aggregation: str, max_length: int | None) -> torch.Tensor:
    """Masked reduction: per-sequence mean then mean ("sequence", Eq. 4), sum over all tokens / token count
    ("token"), or sum over all tokens / (rows x max_length) ("dr_grpo")."""
    if aggregation == "sequence":
        per_seq = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return per_seq.mean()
    if aggregation == "dr_grpo":
        length = mask.shape[1] if max_length is None else max_length
        return (per_token * mask).sum() / max(1, mask.shape[0] * length)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    epsilon: float = 0.2,
    kl_kind: str = "k3",
    aggregation: str = "sequence",
    epsilon_high: float | None = None,
    max_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO loss (Eq. 4, to minimise) and float stats.

    Per token: `-(min(rho * A, clip(rho, 1 - eps, 1 + eps_high) * A) - beta * KL)` with `rho =
    exp(logp - old_logp)`; `logp, old_logp, ref_logp, mask` are `(B, T)`, `advantages` is `(B,)`.
    `epsilon_high=None` means `epsilon` (symmetric, the paper's); `max_length` is the `dr_grpo`
    denominator's length (the configured maximum; `None` = `T`). Stats are the `loss/`, `kl/value`
    (whenever `ref_logp` is given), `clip/` and `ratio/mean` columns of `metrics.METRICS`.
    `kl_kind="k3_is"` weighs k3 by `rho` (TRL's bias-corrected KL). With `kl.placement=reward` the trainer
    passes `beta=0`: the KL is then only measured here, its weight having gone into the rewards.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    eps_high = epsilon if epsilon_high is None else epsilon_high
    if ref_logp is None and beta != 0:
        raise ValueError(f"ref_logp is required when beta != 0 (beta={beta!r})")
    if logp.dim() != 2 or mask.shape != logp.shape or advantages.shape != logp.shape[:1]:
        raise ValueError(
            f"expected logp/mask (B, T) and advantages (B,), got {tuple(logp.shape)}, "
            f"{tuple(mask.shape)}, {tuple(advantages.shape)}"
        )
    mask = mask.to(logp.dtype)
    if old_logp is None:
        old_logp = logp.detach()
    adv = advantages.to(logp.dtype).unsqueeze(1)
    ratio = torch.exp(logp - old_logp)
    clipped_ratio = torch.clamp(ratio, 1 - epsilon, 1 + eps_high)
    surrogate = torch.min(ratio * adv, clipped_ratio * adv)
    policy_loss = _aggregate(-surrogate, mask, aggregation, max_length)

    kl_value = 0.0
    kl_loss = torch.zeros((), dtype=logp.dtype, device=logp.device)
    if ref_logp is not None:
        kl = kl_estimate(logp, ref_logp, kl_kind, old_logp=old_logp)
        kl_value = masked_mean(kl.detach(), mask)
        if beta != 0:
            kl_loss = beta * _aggregate(kl, mask, aggregation, max_length)
    loss = policy_loss + kl_loss

    with torch.no_grad():
        n_tok = mask.sum().clamp(min=1.0)
        # Clipping is active where the clipped term is the smaller one (there the gradient through rho is zero)
        high = ((ratio > 1 + eps_high) & (adv > 0)).to(mask.dtype) * mask
        low = ((ratio < 1 - epsilon) & (adv < 0)).to(mask.dtype) * mask
        stats = {
            "loss/policy": policy_loss.item(),
            "loss/kl": kl_loss.item(),
            "kl/value": kl_value,
            "clip/fraction": ((high + low).sum() / n_tok).item(),
            "clip/low_fraction": (low.sum() / n_tok).item(),
            "clip/high_fraction": (high.sum() / n_tok).item(),
            "ratio/mean": ((ratio * mask).sum() / n_tok).item(),
        }
    return loss, stats
