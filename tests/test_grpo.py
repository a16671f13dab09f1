"""GRPO math (docs/paper.md, Eq. 2 and 4) against hand computations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from othinklab.grpo import group_advantages, grpo_loss, zero_spread_fraction
from othinklab.kl import kl_estimate
from othinklab.logprobs import label_logprobs


def test_group_advantages_constant_group_is_zero():
    adv = group_advantages(torch.tensor([2.0, 2.0, 2.0, 2.0, 0.0, 1.0, 0.0, 1.0]), 4)
    assert torch.equal(adv[:4], torch.zeros(4))
    assert not torch.equal(adv[4:], torch.zeros(4))


def test_group_advantages_hand_example():
    rewards = [0.0, 1.0, 2.0]
    mean = 1.0
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / 2)  # unbiased
    expected = [(r - mean) / (std + 1e-4) for r in rewards]
    got = group_advantages(torch.tensor(rewards + [5.0, 5.0, 5.0]), 3)
    assert got.tolist() == pytest.approx(expected + [0.0, 0.0, 0.0])
    assert group_advantages(torch.tensor([0.0, 1.0]), 2, eps=0.0).tolist() == pytest.approx(
        [-1 / math.sqrt(2), 1 / math.sqrt(2)]
    )


def test_group_advantages_bad_size():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError):
        zero_spread_fraction(torch.zeros(5), 2)


def test_zero_spread_fraction():
    assert zero_spread_fraction(torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 2.0]), 2) == pytest.approx(2 / 3)
    assert zero_spread_fraction(torch.tensor([0.0, 1.0]), 2) == 0.0


# A hand example: 2 completions, 3 token slots; the second has only 2 real tokens.
LOGP = [[-1.0, -0.5, -2.0], [-0.2, -1.5, -9.0]]
OLD = [[-1.1, -0.5, -1.0], [-0.2, -1.0, -9.0]]
REF = [[-1.2, -0.4, -2.0], [-0.3, -1.5, -9.0]]
MASK = [[1, 1, 1], [1, 1, 0]]
ADV = [1.0, -0.5]
BETA, EPS = 0.1, 0.2


def _hand(aggregation: str):
    """Expected loss, policy part and kl part computed with plain Python."""
    seq_tok, all_tok = [], []
    for i in range(2):
        rows = []
        for t in range(3):
            if not MASK[i][t]:
                continue
            rho = math.exp(LOGP[i][t] - OLD[i][t])
            a = ADV[i]
            surr = min(rho * a, min(max(rho, 1 - EPS), 1 + EPS) * a)
            r = REF[i][t] - LOGP[i][t]
            kl = math.exp(r) - r - 1
            rows.append((-surr, BETA * kl))
        seq_tok.append(rows)
        all_tok.extend(rows)
    if aggregation == "sequence":
        pol = sum(sum(p for p, _ in rows) / len(rows) for rows in seq_tok) / 2
        kl = sum(sum(k for _, k in rows) / len(rows) for rows in seq_tok) / 2
    else:
        pol = sum(p for p, _ in all_tok) / len(all_tok)
        kl = sum(k for _, k in all_tok) / len(all_tok)
    return pol + kl, pol, kl


def _tensors():
    return (
        torch.tensor(LOGP, requires_grad=True),
        torch.tensor(OLD),
        torch.tensor(REF),
        torch.tensor(ADV),
        torch.tensor(MASK, dtype=torch.float32),
    )


@pytest.mark.parametrize("aggregation", ["sequence", "token"])
def test_loss_matches_hand_computation(aggregation):
    logp, old, ref, adv, mask = _tensors()
    loss, stats = grpo_loss(logp, old, ref, adv, mask, beta=BETA, epsilon=EPS, aggregation=aggregation)
    want, pol, kl = _hand(aggregation)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert stats["loss/policy"] == pytest.approx(pol, rel=1e-5)
    assert stats["loss/kl"] == pytest.approx(kl, rel=1e-5)
    kls = [math.exp(REF[i][t] - LOGP[i][t]) - (REF[i][t] - LOGP[i][t]) - 1 for i, t in [(0, 0), (0, 1)]]
    kls += [0.0, math.exp(-0.1) + 0.1 - 1, 0.0]
    assert stats["kl/value"] == pytest.approx(sum(kls) / 5, rel=1e-5)
    # token (0, 2): rho = e^-1 < 0.8 but A > 0 -> not clipped; token (1, 1): rho = e^-0.5 < 0.8, A < 0 -> clipped
    assert stats["clip/fraction"] == pytest.approx(1 / 5)
    ratios = [math.exp(LOGP[i][t] - OLD[i][t]) for i in range(2) for t in range(3) if MASK[i][t]]
    assert stats["ratio/mean"] == pytest.approx(sum(ratios) / 5, rel=1e-5)
    assert all(isinstance(v, float) for v in stats.values())
    loss.backward()
    assert logp.grad[1, 1] == 0.0  # clipped, and ref == logp there so the k3 gradient is 0 too
    assert logp.grad[1, 2] == 0.0  # masked token


def test_clipped_tokens_have_no_policy_gradient():
    logp = torch.tensor([[0.0, 0.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-2.0, 2.0, 0.0]])  # rho = e^2 (clipped for A > 0), e^-2 (not clipped), 1
    loss, stats = grpo_loss(logp, old, None, torch.tensor([1.0]), torch.ones(1, 3), beta=0.0)
    loss.backward()
    assert stats["clip/fraction"] == pytest.approx(1 / 3)
    assert logp.grad[0, 0] == 0.0
    assert logp.grad[0, 1] == pytest.approx(-math.exp(-2.0) / 3)
    assert logp.grad[0, 2] == pytest.approx(-1 / 3)


def test_ref_logp_none_only_when_beta_zero():
    logp, old, _, adv, mask = _tensors()
    _, stats = grpo_loss(logp, old, None, adv, mask, beta=0.0)
    assert stats["loss/kl"] == 0.0 and stats["kl/value"] == 0.0
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, old, None, adv, mask, beta=0.04)


def test_kl_value_reported_when_beta_zero():
    logp, old, ref, adv, mask = _tensors()
    _, stats = grpo_loss(logp, old, ref, adv, mask, beta=0.0)
    assert stats["kl/value"] > 0 and stats["loss/kl"] == 0.0


@pytest.mark.parametrize("aggregation", ["sequence", "token"])
def test_old_logp_none_gradient(aggregation):
    torch.manual_seed(0)
    logp = torch.randn(3, 4).log_softmax(-1).requires_grad_(True)
    ref = torch.randn(3, 4).log_softmax(-1)
    adv = torch.tensor([1.0, -2.0, 0.5])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    loss, stats = grpo_loss(logp, None, ref, adv, mask, beta=0.1, aggregation=aggregation)
    assert stats["ratio/mean"] == pytest.approx(1.0) and stats["clip/fraction"] == 0.0
    (grad,) = torch.autograd.grad(loss, logp)

    x = logp.detach().clone().requires_grad_(True)
    m = mask.float()
    per_token = -adv[:, None] * x + 0.1 * kl_estimate(x, ref, "k3")
    if aggregation == "sequence":
        ref_loss = ((per_token * m).sum(1) / m.sum(1)).mean()
    else:
        ref_loss = (per_token * m).sum() / m.sum()
    (want,) = torch.autograd.grad(ref_loss, x)
    assert torch.allclose(grad, want, atol=1e-6)


def test_empty_completion_is_safe():
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    loss, _ = grpo_loss(logp, None, torch.zeros(2, 3), torch.tensor([1.0, 1.0]), mask, beta=0.1)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(-0.5)


def test_bad_aggregation():
    logp, old, ref, adv, mask = _tensors()
    with pytest.raises(ValueError, match="aggregation"):
        grpo_loss(logp, old, ref, adv, mask, beta=0.1, aggregation="mean")


def test_label_logprobs_matches_log_softmax():
    torch.manual_seed(0)
    logits = (torch.randn(5, 7, 11) * 3).float().requires_grad_(True)
    labels = torch.randint(0, 11, (5, 7))
    got, lse = label_logprobs(logits, labels)
    want = torch.log_softmax(logits.detach(), -1).gather(-1, labels[..., None]).squeeze(-1)
    assert got.shape == (5, 7) and torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(lse, torch.logsumexp(logits.detach(), -1), atol=1e-5)
    got.sum().backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape
