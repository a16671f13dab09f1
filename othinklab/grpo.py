"""GRPO's core math: group advantages (Eq. 2), per-token log-probs, the clipped surrogate loss (Eq. 4).

Why: this is the whole algorithm minus generation and rewards, kept separate from the training loop
(spinningup style) so each piece is testable alone on tiny tensors.

Simplified versus the paper / R1-V:
- advantages divide by `std + eps` (eps = 1e-4 like R1-V/TRL; the paper writes plain `std`), with the
  unbiased std (`torch.std`), so a constant-reward group gets zero advantages.
- `old_logp=None` means one policy update per generation batch (R1-V): the ratio is 1 in value but
  keeps its gradient, so the surrogate's gradient is `A * grad logp`.
- `aggregation="token"` (DAPO-style sum over all tokens / number of tokens) is offered next to the
  paper's per-sequence mean.
"""

from __future__ import annotations

import torch

from othinklab.kl import kl_estimate

AGGREGATIONS = ("sequence", "token")


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """`(r - mean_g) / (std_g + eps)` within consecutive groups of `group_size` (Eq. 2).

    >>> [round(a, 4) for a in group_advantages(torch.tensor([1.0, 1.0, 0.0, 2.0]), 2).tolist()]
    [0.0, 0.0, -0.7071, 0.7071]
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32).flatten()
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards ({rewards.numel()}) must split into groups of group_size={group_size}")
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    return ((grouped - mean) / (std + eps)).flatten()


def zero_spread_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Fraction of groups whose rewards are all equal (they teach nothing: zero advantages).

    >>> zero_spread_fraction(torch.tensor([1.0, 1.0, 0.0, 2.0]), 2)
    0.5
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32).flatten()
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards ({rewards.numel()}) must split into groups of group_size={group_size}")
    grouped = rewards.view(-1, group_size)
    if grouped.shape[0] == 0:
        return 0.0
    same = (grouped == grouped[:, :1]).all(dim=1)
    return same.float().mean().item()


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, chunk_size: int = 4) -> torch.Tensor:
    """`log_softmax(logits)[labels]` in float32, `chunk_size` rows at a time; differentiable.

    Never materialises a full-vocabulary float32 tensor for the whole batch: only for one chunk.

    >>> logits = torch.tensor([[[0.0, 0.0]]]); token_logprobs(logits, torch.tensor([[1]])).tolist()
    [[-0.6931471824645996]]
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    chunk_size = max(1, int(chunk_size))
    out = []
    for start in range(0, logits.shape[0], chunk_size):
        chunk = logits[start : start + chunk_size].float()
        idx = labels[start : start + chunk_size].long().unsqueeze(-1)
        out.append(chunk.gather(-1, idx).squeeze(-1) - torch.logsumexp(chunk, dim=-1))
    if not out:
        return logits.new_zeros(labels.shape, dtype=torch.float32)
    return torch.cat(out, dim=0)


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Masked mean: per-sequence then over sequences ("sequence", Eq. 4) or over all tokens ("token")."""
    if aggregation == "sequence":
        per_seq = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return per_seq.mean()
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
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO loss (Eq. 4, to minimise) and float stats.

    Per token: `-(min(rho * A, clip(rho, 1 - eps, 1 + eps) * A) - beta * KL)` with `rho =
    exp(logp - old_logp)`; `logp, old_logp, ref_logp, mask` are `(B, T)`, `advantages` is `(B,)`.
    Stats: `loss/policy`, `loss/kl` (beta * KL part), `kl/value` (mean masked per-token KL, whenever
    `ref_logp` is given), `clip/fraction` (masked tokens where clipping is active), `ratio/mean`.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
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
    clipped_ratio = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    surrogate = torch.min(ratio * adv, clipped_ratio * adv)
    policy_loss = _aggregate(-surrogate, mask, aggregation)

    kl_value = 0.0
    kl_loss = torch.zeros((), dtype=logp.dtype, device=logp.device)
    if ref_logp is not None:
        kl = kl_estimate(logp, ref_logp, kl_kind)
        with torch.no_grad():
            kl_value = ((kl * mask).sum() / mask.sum().clamp(min=1.0)).item()
        if beta != 0:
            kl_loss = beta * _aggregate(kl, mask, aggregation)
    loss = policy_loss + kl_loss

    with torch.no_grad():
        n_tok = mask.sum().clamp(min=1.0)
        # Clipping is active where the clipped term is the smaller one: rho > 1+eps with A > 0, rho < 1-eps
        # with A < 0 (there the gradient through rho is zero).
        is_clipped = ((ratio > 1 + epsilon) & (adv > 0)) | ((ratio < 1 - epsilon) & (adv < 0))
        stats = {
            "loss/policy": policy_loss.item(),
            "loss/kl": kl_loss.item(),
            "kl/value": kl_value,
            "clip/fraction": ((is_clipped.to(mask.dtype) * mask).sum() / n_tok).item(),
            "ratio/mean": ((ratio * mask).sum() / n_tok).item(),
        }
    return loss, stats
