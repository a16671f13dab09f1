"""GRPO math (docs/paper.md, Eq. 2 and 4) against hand computations on tiny tensors, the loss variants users
compare (Dr. GRPO, DAPO, no std scaling), and a two-step run with every variant at once."""

from __future__ import annotations

import math

import pytest
import torch

from othinklab.grpo import (
    group_advantages,
    grpo_loss,
    loss_mask,
    masked_mean,
    token_mean_weights,
    zero_spread_fraction,
)
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


def test_scale_rewards_group_batch_none_by_hand():
    rewards = torch.tensor([0.0, 2.0, 1.0, 1.0])  # group 1 mean 1, unbiased std sqrt(2); group 2 constant
    g = group_advantages(rewards, 2)  # eps keeps the constant group at 0 instead of 0/0
    assert g.tolist() == pytest.approx([-1 / (math.sqrt(2) + 1e-4), 1 / (math.sqrt(2) + 1e-4), 0.0, 0.0])
    # batch: group means removed, divided by the std of all four rewards: mean 1, var (1+1+0+0)/3
    b = group_advantages(rewards, 2, eps=0.0, scale="batch")
    assert b.tolist() == pytest.approx([-1 / math.sqrt(2 / 3), 1 / math.sqrt(2 / 3), 0.0, 0.0])
    n = group_advantages(rewards, 2, scale="none")
    assert n.tolist() == [-1.0, 1.0, 0.0, 0.0]
    # default keyword reproduces the paper's scaling exactly
    assert torch.equal(group_advantages(rewards, 2), group_advantages(rewards, 2, scale="group"))
    with pytest.raises(ValueError, match="scale"):
        group_advantages(rewards, 2, scale="std")


def test_batch_scaling_keeps_relative_spread_of_groups():
    rewards = torch.tensor([0.0, 0.2, 0.0, 2.0])  # small spread vs large spread
    g = group_advantages(rewards, 2, eps=0.0)
    b = group_advantages(rewards, 2, eps=0.0, scale="batch")  # no constant group here, so eps=0 is safe
    assert g[1].item() == pytest.approx(g[3].item())  # per-group std erases the difference
    assert b[3].item() == pytest.approx(10 * b[1].item())  # batch std keeps it


def test_zero_spread_on_accuracy_alone():
    # total reward differs (format) but accuracy is all-zero in group 1: no accuracy signal there
    total = torch.tensor([0.0, 1.0, 2.0, 1.0])
    acc = torch.tensor([0.0, 0.0, 1.0, 0.0])
    assert zero_spread_fraction(total, 2) == 0.0
    assert zero_spread_fraction(acc, 2) == 0.5


def test_dr_grpo_aggregation_by_hand():
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    # ratio 1: per-token loss is -A; sum = -(1+1+1) + 2 = -1; / (2 completions x max length 4)
    loss, _ = grpo_loss(logp, None, None, adv, mask, beta=0.0, aggregation="dr_grpo", max_length=4)
    assert loss.item() == pytest.approx(-1 / 8)
    loss_t, _ = grpo_loss(logp, None, None, adv, mask, beta=0.0, aggregation="dr_grpo")
    assert loss_t.item() == pytest.approx(-1 / 6)  # max_length=None: the padded length T=3
    loss.backward()
    # every token of every completion gets the same weight 1/8 (no 1/length bias)
    assert logp.grad.flatten().tolist() == pytest.approx([-1 / 8] * 3 + [2 / 8, 0.0, 0.0])


def test_dr_grpo_kl_part_by_hand():
    logp = torch.zeros(1, 2)
    ref = torch.tensor([[math.log(0.5), 0.0]])  # k3 = e^r - r - 1 with r = ref - logp
    mask = torch.ones(1, 2)
    _, stats = grpo_loss(logp, None, ref, torch.zeros(1), mask, beta=0.5, aggregation="dr_grpo", max_length=5)
    k3 = 0.5 - math.log(0.5) - 1
    assert stats["loss/kl"] == pytest.approx(0.5 * k3 / 5)


def test_clip_higher_low_and_high_fractions():
    # rho = e^0.25 = 1.284 (between 1.2 and 1.28? no: above 1.28), e^0.2 = 1.221, e^-0.3 = 0.741, 1
    logp = torch.tensor([[0.25, 0.2, -0.3, 0.0]], requires_grad=True)
    old = torch.zeros(1, 4)
    mask = torch.ones(1, 4)
    pos, neg = torch.tensor([1.0]), torch.tensor([-1.0])
    _, s = grpo_loss(logp, old, None, pos, mask, beta=0.0, epsilon=0.2)
    assert (s["clip/high_fraction"], s["clip/low_fraction"]) == (pytest.approx(0.5), 0.0)
    _, s = grpo_loss(logp, old, None, pos, mask, beta=0.0, epsilon=0.2, epsilon_high=0.28)
    assert s["clip/high_fraction"] == pytest.approx(0.25)  # only e^0.25 > 1.28
    assert s["clip/fraction"] == pytest.approx(0.25)
    _, s = grpo_loss(logp, old, None, neg, mask, beta=0.0, epsilon=0.2, epsilon_high=0.28)
    assert (s["clip/low_fraction"], s["clip/high_fraction"]) == (pytest.approx(0.25), 0.0)
    # the high clip bound sets the gradient: token 1 (rho 1.221) still learns with eps_high=0.28
    loss, _ = grpo_loss(logp, old, None, pos, mask, beta=0.0, epsilon=0.2, epsilon_high=0.28)
    loss.backward()
    assert logp.grad[0, 0] == 0.0
    assert logp.grad[0, 1].item() == pytest.approx(-math.exp(0.2) / 4)


def test_epsilon_high_default_is_symmetric():
    torch.manual_seed(0)
    logp, old = torch.randn(3, 5) * 0.3, torch.randn(3, 5) * 0.3
    adv, mask = torch.tensor([1.0, -1.0, 0.5]), torch.ones(3, 5)
    a = grpo_loss(logp, old, None, adv, mask, beta=0.0, epsilon=0.2)
    b = grpo_loss(logp, old, None, adv, mask, beta=0.0, epsilon=0.2, epsilon_high=0.2)
    assert a[0].item() == b[0].item() and a[1] == b[1]


def test_mask_truncated_completions_zero_loss_weight():
    cmask = torch.ones(2, 3)
    truncated = torch.tensor([False, True])
    assert torch.equal(loss_mask(cmask, truncated, False), cmask)
    m = loss_mask(cmask, truncated, True)
    assert m.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, _ = grpo_loss(logp, None, None, torch.tensor([1.0, 5.0]), m, beta=0.0)
    # sequence mean: row 0 gives -1, the truncated row gives 0, mean over the 2 completions
    assert loss.item() == pytest.approx(-0.5)
    loss.backward()
    assert logp.grad[1].tolist() == [0.0, 0.0, 0.0]


def _token_loss(logp, adv, mask):
    return grpo_loss(logp, None, None, adv, mask, beta=0.0, aggregation="token")[0]


def test_token_mean_is_global_across_ranks_and_accumulation():
    torch.manual_seed(0)
    logp = torch.randn(4, 5).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 2.0, 0.5])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.float32)
    full = _token_loss(logp, adv, mask)
    (want,) = torch.autograd.grad(full, logp)
    # 2 ranks x 2 accumulation steps, one completion each; DDP averages the ranks' summed losses
    world, parts = 2, [[0, 2], [1, 3]]  # rank -> rows (its accumulation steps)
    total = float(mask.sum())
    combined = 0.0
    for rows in parts:
        weights = token_mean_weights([float(mask[r].sum()) for r in rows], total, world)
        combined = combined + sum(
            w * _token_loss(logp[r : r + 1], adv[r : r + 1], mask[r : r + 1]) for w, r in zip(weights, rows)
        )
    combined = combined / world
    (got,) = torch.autograd.grad(combined, logp)
    assert combined.item() == pytest.approx(full.item(), rel=1e-6)
    assert torch.allclose(got, want, atol=1e-7)
    # the naive mean of per-part means is a different (length-biased) number here
    naive = sum(_token_loss(logp[r : r + 1], adv[r : r + 1], mask[r : r + 1]) for r in range(4)) / 4
    assert abs(naive.item() - full.item()) > 1e-3


def test_masked_mean_entropy_style():
    ent = torch.tensor([[0.5, 1.5, 9.0]])
    assert masked_mean(ent, torch.tensor([[1, 1, 0]])) == pytest.approx(1.0)
    assert masked_mean(ent, torch.zeros(1, 3)) == 0.0


def varied_reward(completion: str, solution: str) -> float:
    """An accuracy term the untrained model earns about half the time, so groups have reward spread."""
    return float(len(completion) % 4 > 1)


VARIANTS = [
    "grpo.scale_rewards=none",
    "grpo.epsilon_high=0.28",
    "grpo.mask_truncated_completions=true",
    "grpo.aggregation=dr_grpo",
    "grpo.num_iterations=2",
]
"""The issue's done-when combination: every loss variant at once, with two updates per batch."""


def _two_step_run(tmp_path, model: str, max_len: int, variants: list[str] = VARIANTS):
    from pathlib import Path

    from othinklab.config import load_config
    from othinklab.metrics import METRICS, read_metrics
    from othinklab.trainer import train

    overrides = [
        f"model.name={model}",
        f"reward.accuracy_function={Path(__file__).resolve()}:varied_reward",
        *variants,
        "train.total_steps=2",
        "train.learning_rate=5e-3",
        "grpo.prompts_per_step=2",
        "grpo.num_generations=4",
        f"grpo.max_completion_length={max_len}",
        "task.num_eval=4",
        "train.threads=1",
        f"train.output_dir={tmp_path}",
    ]
    m = read_metrics(train(load_config(None, overrides), progress=False).run_dir)
    assert m["step"].tolist() == [0, 1]
    new = ["policy/entropy", "clip/low_fraction", "clip/high_fraction", "groups/zero_spread_accuracy"]
    assert all(k in METRICS for k in new) and set(new) <= set(m.columns)
    assert (m["policy/entropy"] > 0).all() and m["policy/entropy"].notna().all()
    assert ((m["clip/low_fraction"] >= 0) & (m["clip/high_fraction"] >= 0)).all()
    assert (m["clip/low_fraction"] + m["clip/high_fraction"]).tolist() == pytest.approx(m["clip/fraction"].tolist())
    assert m["groups/zero_spread_accuracy"].between(0, 1).all()
    return m


def test_two_step_run_with_the_variants_on_untrained_weights_updates_and_clips(tmp_path):
    """On the untrained tiny architecture (no warm-up needed), which never stops within 16 tokens: with the
    truncation mask on, no token would carry loss weight, so this run leaves it off and every other variant
    acts on real tokens: a gradient flows, and the second update of a batch moves the ratio away from 1."""
    variants = [v for v in VARIANTS if not v.startswith("grpo.mask_truncated_completions")]
    m = _two_step_run(tmp_path, "tiny-init", 16, variants)
    assert (m["completion/truncated"] == 1.0).all()
    assert (m["grad/norm"] > 0).all() and m["loss/total"].map(math.isfinite).all()
    assert m["ratio/mean"][0] == pytest.approx(1.0)
    assert m["ratio/mean"][1] != pytest.approx(1.0, abs=1e-7)


@pytest.mark.slow
def test_two_step_run_with_every_variant_on_the_tiny_base(tmp_path, base_dir):
    """The same on the warmed-up base, whose completions mostly stop: the second update of a batch moves
    the ratio away from 1, so clipping can act (and is measured on each side). The converged base samples
    near-identical completions at T = 1 (every group of 4 had one length, so no reward spread and no update),
    so this run samples hotter."""
    m = _two_step_run(tmp_path, "tiny", 48, [*VARIANTS, "grpo.temperature=1.5"])
    assert (m["completion/truncated"] < 1.0).all()
    assert m["ratio/mean"][0] == pytest.approx(1.0)  # first update of a batch: the policy is the old one
    assert m["ratio/mean"][1] != pytest.approx(1.0, abs=1e-7)
    assert m["grad/norm"][0] > 0
