"""KL schedules (docs/paper.md, Eq. 3) and per-token KL estimators (Eq. 5); every KL option trains from the
CLI with a finite KL logged."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from othinklab.cli import main
from othinklab.errors import ConfigError
from othinklab.kl import (
    KL_KINDS,
    AccuracySchedule,
    AdaptiveKLSchedule,
    grpo_d_beta,
    kl_estimate,
    make_schedule,
    needs_reference,
    schedule_from_config,
    sequence_kl_penalty,
)
from othinklab.metrics import read_metrics

STEPS = (0, 10, 20, 30, 50, 70, 100)
TABLE = {
    "counting": ((0.04, 0.1), (0.07, 0.06, 0.05, 0.04, 0.0571, 0.0743, 0.10)),
    "geometry": ((0.0, 0.02), (0.01, 0.0067, 0.0033, 0.00, 0.0057, 0.0114, 0.02)),
}


@pytest.mark.parametrize("task", sorted(TABLE))
def test_grpo_d_paper_table(task):
    (beta_min, beta_max), expected = TABLE[task]
    for step, want in zip(STEPS, expected):
        assert grpo_d_beta(step, 100, beta_min, beta_max) == pytest.approx(want, abs=1e-4), step
        sched = make_schedule("grpo_d", total_steps=100, beta_min=beta_min, beta_max=beta_max)
        assert sched(step) == pytest.approx(want, abs=1e-4)


def test_grpo_d_shape():
    t, w = 100, 30
    # continuous at s = w from both sides, V-shaped, clamped after t
    left, right = grpo_d_beta(w - 1e-9, t, 0.04, 0.1), grpo_d_beta(w + 1e-9, t, 0.04, 0.1)
    assert left == pytest.approx(0.04) and right == pytest.approx(0.04)
    betas = [grpo_d_beta(s, t, 0.04, 0.1) for s in range(t + 1)]
    assert all(a >= b for a, b in itertools.pairwise(betas[: w + 1]))
    assert all(a <= b for a, b in itertools.pairwise(betas[w:]))
    assert grpo_d_beta(250, t, 0.04, 0.1) == pytest.approx(0.1)
    # w is a float: t = 7, explore_frac = 0.3 -> w = 2.1
    assert grpo_d_beta(2, 7, 0.0, 1.0) == pytest.approx(0.5 - 0.5 * 2 / 2.1)
    assert grpo_d_beta(3, 7, 0.0, 1.0) == pytest.approx((3 - 2.1) / (7 - 2.1))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"total_steps": 0}, "total_steps"),
        ({"explore_frac": 0.0}, "explore_frac"),
        ({"explore_frac": 1.0}, "explore_frac"),
        ({"beta_min": -0.1}, "beta_min"),
        ({"beta_min": 0.2, "beta_max": 0.1}, "beta_max"),
    ],
)
def test_grpo_d_bad_params(kwargs, field):
    args = {"step": 0, "total_steps": 100, "beta_min": 0.0, "beta_max": 0.02, "explore_frac": 0.3} | kwargs
    with pytest.raises(ConfigError, match=field):
        grpo_d_beta(**args)


def test_simple_schedules():
    assert make_schedule("none")(5) == 0.0
    assert make_schedule("constant", beta=0.04)(123) == 0.04
    lin = make_schedule("linear", beta_start=0.0, beta_end=0.1, total_steps=10)
    assert [lin(s) for s in (0, 5, 10, 20)] == pytest.approx([0.0, 0.05, 0.1, 0.1])
    alias = make_schedule("linear", beta_min=0.0, beta_max=0.1, total_steps=10)
    assert alias(5) == pytest.approx(0.05)
    cos = make_schedule("cosine", beta_start=0.1, beta_end=0.0, total_steps=10)
    assert [cos(s) for s in (0, 5, 10)] == pytest.approx([0.1, 0.05, 0.0])
    assert cos.max_beta == 0.1 and cos.name == "cosine"


def test_make_schedule_errors():
    with pytest.raises(ConfigError, match="grpo_d"):
        make_schedule("nope")
    with pytest.raises(ConfigError, match="missing.*beta"):
        make_schedule("constant")
    with pytest.raises(ConfigError, match="unknown.*beta_min"):
        make_schedule("constant", beta=0.1, beta_min=0.0)
    with pytest.raises(ConfigError, match="valid: total_steps, beta_min, beta_max, explore_frac"):
        make_schedule("grpo_d", total_steps=10, beta_min=0.0, beta_max=0.1, target_kl=1.0)
    with pytest.raises(ConfigError, match="beta"):
        make_schedule("constant", beta=-1.0)
    with pytest.raises(ConfigError, match="target_kl"):
        make_schedule("adaptive", beta=0.1, target_kl=0.0, horizon=10)


def test_adaptive_controller_and_state():
    sched = make_schedule("adaptive", beta=0.1, target_kl=0.05, horizon=100)
    assert isinstance(sched, AdaptiveKLSchedule) and sched(0) == 0.1
    up = sched.update(1.0)  # far above target: error clipped to +0.2
    assert up == pytest.approx(0.1 * (1 + 0.2 / 100))
    state = sched.state_dict()
    down = sched.update(0.0, n_steps=10)  # below target: error clipped to -0.2
    assert down == pytest.approx(up * (1 - 0.2 * 10 / 100))
    sched.update(0.05)  # on target: no change
    assert sched(99) == pytest.approx(down)
    fresh = make_schedule("adaptive", beta=0.1, target_kl=0.05, horizon=100)
    fresh.load_state_dict(state)
    assert fresh(0) == pytest.approx(up)
    with pytest.raises(ConfigError):
        make_schedule("none").load_state_dict(state)


def test_stateless_state_round_trip():
    sched = make_schedule("grpo_d", total_steps=10, beta_min=0.0, beta_max=0.02)
    other = make_schedule("grpo_d", total_steps=10, beta_min=0.0, beta_max=0.02)
    other.load_state_dict(sched.state_dict())
    assert [other(s) for s in range(11)] == [sched(s) for s in range(11)]


def test_needs_reference():
    assert needs_reference(make_schedule("grpo_d", total_steps=100, beta_min=0.0, beta_max=0.02))
    assert not needs_reference(make_schedule("none"))
    assert not needs_reference(make_schedule("constant", beta=0.0))
    assert needs_reference(make_schedule("constant", beta=0.04))
    assert needs_reference(make_schedule("adaptive", beta=0.1, target_kl=0.1, horizon=10))
    assert needs_reference(make_schedule("cosine", beta_start=0.1, beta_end=0.0, total_steps=10))


def test_schedule_from_config():
    cfg = SimpleNamespace(
        schedule="grpo_d",
        beta=0.04,
        beta_min=0.0,
        beta_max=0.02,
        explore_frac=0.3,
        target_kl=0.1,
        horizon=1000,
    )
    assert schedule_from_config(cfg, total_steps=100)(30) == pytest.approx(0.0)
    assert schedule_from_config(SimpleNamespace(**{**vars(cfg), "schedule": "constant"}), 100)(7) == 0.04
    lin = schedule_from_config(SimpleNamespace(**{**vars(cfg), "schedule": "linear"}), 10)
    assert lin(10) == pytest.approx(0.02)
    ada = schedule_from_config(SimpleNamespace(**{**vars(cfg), "schedule": "adaptive"}), 10)
    assert ada.target_kl == 0.1
    assert schedule_from_config(SimpleNamespace(**{**vars(cfg), "schedule": "none"}), 10)(3) == 0.0
    with pytest.raises(ConfigError, match="kl.schedule"):
        schedule_from_config(SimpleNamespace(**{**vars(cfg), "schedule": "bogus"}), 10)


def test_kl_estimators():
    logp = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    ref = torch.tensor([-1.0, -1.5, -1.5, -3.5])
    r = (ref - logp).tolist()
    k3 = kl_estimate(logp, ref)
    assert k3.shape == logp.shape
    assert k3.tolist() == pytest.approx([math.exp(x) - x - 1 for x in r])
    assert k3[0] == 0 and (k3[1:] > 0).all()
    assert kl_estimate(logp, ref, "k1").tolist() == pytest.approx([-x for x in r])
    assert kl_estimate(logp, ref, "k2").tolist() == pytest.approx([0.5 * x * x for x in r])
    same = torch.randn(3, 5)
    assert torch.equal(kl_estimate(same, same.clone()), torch.zeros(3, 5))
    with pytest.raises(ConfigError, match="k4"):
        kl_estimate(logp, ref, "k4")


def test_linear_and_cosine_endpoints_from_the_config():
    """`kl.beta_start`/`kl.beta_end` make "cosine 0.1 -> 0.0" a config; unset (negative) they are beta_min/beta_max."""
    from othinklab.config import load_config

    cos = schedule_from_config(load_config(None, ["kl.schedule=cosine", "kl.beta_start=0.1", "kl.beta_end=0.0"]).kl, 10)
    assert [cos(s) for s in (0, 5, 10)] == pytest.approx([0.1, 0.05, 0.0])
    lin = schedule_from_config(load_config(None, ["kl.schedule=linear"]).kl, 10)
    assert (lin(0), lin(10)) == pytest.approx((0.04, 0.1))  # the defaults' beta_min -> beta_max, as before
    with pytest.raises(ConfigError, match="kl.explore_frac=1.5"):
        load_config(None, ["kl.explore_frac=1.5"])  # ranges come from kl.PARAM_RULES, checked once


# --------------------------------------------------------------------------- which KL each estimator's gradient follows
def _categorical(seed: int = 0, k: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """A 7-way softmax policy with parameters theta (random, away from ref) and a fixed reference."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(k, generator=g, dtype=torch.float64).requires_grad_(True)
    ref = torch.log_softmax(torch.randn(k, generator=g, dtype=torch.float64), 0)
    return theta, ref


def _expected_grad(theta: torch.Tensor, ref: torch.Tensor, per_outcome) -> torch.Tensor:
    """E_{x ~ pi}[grad of the per-sample loss], exactly: sum over outcomes weighted by pi (not differentiated,
    as for samples drawn from pi), each term's gradient as autograd gives it for that sample."""
    logp = torch.log_softmax(theta, 0)
    pi = logp.exp().detach()
    (grad,) = torch.autograd.grad((pi * per_outcome(logp, ref)).sum(), theta)
    return grad


def _analytic(theta: torch.Tensor, ref: torch.Tensor) -> dict[str, torch.Tensor]:
    logp = torch.log_softmax(theta, 0)
    reverse = (logp.exp() * (logp - ref)).sum()  # KL(pi || ref)
    forward = (ref.exp() * (ref - logp)).sum()  # KL(ref || pi)
    return {
        "reverse": torch.autograd.grad(reverse, theta, retain_graph=True)[0],
        "forward": torch.autograd.grad(forward, theta)[0],
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_estimators_expected_gradient_as_a_loss(seed):
    theta, ref = _categorical(seed)
    want = _analytic(theta, ref)
    assert not torch.allclose(want["reverse"], want["forward"], atol=1e-3)  # the test can tell them apart
    got = {kind: _expected_grad(theta, ref, lambda lp, rf, k=kind: kl_estimate(lp, rf, k)) for kind in KL_KINDS}
    torch.testing.assert_close(got["k2"], want["reverse"])
    torch.testing.assert_close(got["k3_plus"], want["reverse"])
    torch.testing.assert_close(got["k3_is"], want["reverse"])  # TRL's bias correction, on-policy
    torch.testing.assert_close(got["k3"], want["forward"])  # Eq. 5 as a loss: the forward KL's gradient
    torch.testing.assert_close(got["k1"], torch.zeros_like(theta))  # k1 as a loss: nothing in expectation


@pytest.mark.parametrize("seed", [0, 1])
def test_k1_in_the_reward_gives_the_reverse_kl_gradient_through_the_score_function(seed):
    """`kl.placement=reward`: beta * k1 (detached) taken off the reward, so the policy-gradient loss
    `-(R - beta * k1) * log pi` has, at R = 0 and beta = 1, the expected gradient of KL(pi || ref)."""
    theta, ref = _categorical(seed)

    def reward_loss(logp: torch.Tensor, rf: torch.Tensor) -> torch.Tensor:
        penalty = sequence_kl_penalty(logp.unsqueeze(1), rf.unsqueeze(1), torch.ones(len(logp), 1))
        return penalty * logp  # -(0 - penalty) * log pi

    torch.testing.assert_close(_expected_grad(theta, ref, reward_loss), _analytic(theta, ref)["reverse"])


def test_estimator_values_and_clamps():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.0, -1.5, -1.5])
    k3 = kl_estimate(logp, ref, "k3")
    assert torch.equal(kl_estimate(logp, ref, "k3_plus"), k3)  # k3's value
    assert torch.equal(kl_estimate(logp, ref, "k3_is"), k3)  # on-policy the ratio is 1 in value
    old = logp - 0.1
    assert kl_estimate(logp, ref, "k3_is", old_logp=old).tolist() == pytest.approx((k3 * math.exp(0.1)).tolist())
    wild = kl_estimate(torch.tensor([-100.0, 0.0]), torch.tensor([0.0, -100.0]), "k3")
    assert wild[0] == 10.0  # r = 100 -> clamped to 20 -> exp(20) - 21 -> clamped to 10
    assert torch.isfinite(wild).all() and wild.max() <= 10.0  # verl's clamps: log ratio +-20, k3 +-10


def test_observe_drives_adaptive_and_accuracy_and_fixed_schedules_ignore_it():
    ada = make_schedule("adaptive", beta=0.1, target_kl=0.05, horizon=100)
    ada.observe({"kl/value": 1.0})
    assert ada(5) == pytest.approx(0.1 * 1.002)
    ada.observe({"kl/value": float("nan")})  # not finite: skipped
    assert ada(5) == pytest.approx(0.1 * 1.002) and ada.max_beta == math.inf  # unbounded, not the current beta
    const = make_schedule("constant", beta=0.04)
    const.observe({"kl/value": 1.0, "reward/accuracy": 1.0})
    assert const(0) == 0.04 and const.max_beta == 0.04


def test_accuracy_schedule_explores_when_wrong_and_exploits_when_right():
    acc = make_schedule("accuracy", beta_min=0.01, beta_max=0.11, accuracy_momentum=0.5)
    assert isinstance(acc, AccuracySchedule) and acc(0) == 0.01 and acc.max_beta == 0.11  # unknown: explore
    acc.observe({"reward/accuracy": 0.2})  # the first observation sets the EMA
    assert acc(1) == pytest.approx(0.01 + 0.1 * 0.2)
    acc.observe({"reward/accuracy": 1.0})
    assert acc(2) == pytest.approx(0.01 + 0.1 * 0.6)
    state = acc.state_dict()
    fresh = make_schedule("accuracy", beta_min=0.01, beta_max=0.11, accuracy_momentum=0.5)
    fresh.load_state_dict(state)
    assert fresh(3) == acc(3)
    for _ in range(50):
        acc.observe({"reward/accuracy": 1.0})
    assert acc(99) == pytest.approx(0.11)  # bounded by beta_max
    with pytest.raises(ConfigError, match="accuracy_momentum"):
        make_schedule("accuracy", beta_min=0.0, beta_max=0.1, accuracy_momentum=1.0)
    cfg = SimpleNamespace(schedule="accuracy", beta_min=0.0, beta_max=0.1, accuracy_momentum=0.9)
    assert schedule_from_config(cfg, 10).momentum == 0.9


TINY = [
    "model.name=tiny-init",
    "grpo.prompts_per_step=1",
    "grpo.num_generations=2",
    "grpo.max_completion_length=6",
    "task.num_eval=2",
    "train.total_steps=2",
    "train.threads=1",
    "train.log_rollouts=false",
    "kl.schedule=constant",
    "kl.beta=0.05",
]


OPTIONS = {
    "k1": ["kl.estimator=k1"],
    "k2": ["kl.estimator=k2"],
    "k3": ["kl.estimator=k3"],
    "k3_plus": ["kl.estimator=k3_plus"],
    "k3_is": ["kl.estimator=k3_is", "grpo.num_iterations=2"],  # off-policy on the second step: ratio != 1
    "reward": ["kl.placement=reward", "kl.estimator=k1"],
    "none": ["kl.schedule=none"],
    "accuracy": ["kl.schedule=accuracy", "kl.beta_min=0.0", "kl.beta_max=0.1"],
    "adaptive": ["kl.schedule=adaptive", "kl.target_kl=0.01", "kl.horizon=10"],
    "reset_lora": ["kl.reset_reference_every=1"],
    "reset_full": ["kl.reset_reference_every=1", "model.lora=false"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_each_kl_option_trains_two_steps_from_the_cli_with_a_finite_kl(tmp_path, name):
    assert main(["train", *TINY, *OPTIONS[name], f"train.output_dir={tmp_path}", f"train.run_name={name}"]) == 0
    m = read_metrics(tmp_path / name)
    assert list(m["step"]) == [0, 1]
    assert all(math.isfinite(v) for v in m["kl/value"]), m["kl/value"].tolist()
    assert all(math.isfinite(v) for v in m["loss/total"])
    if name == "none":
        assert (m["kl/beta"] == 0).all() and (m["loss/kl"] == 0).all()  # beta = 0, the KL still measured
    if name == "reward":
        assert (m["loss/kl"] == 0).all()  # the KL went into the rewards, not the loss
    if name == "accuracy":
        assert m["kl/beta"][0] == 0.0  # nothing observed yet: explore
        assert m["kl/beta"][1] == pytest.approx(0.1 * m["reward/accuracy"][0])
    if name.startswith("reset"):
        assert m["kl/value"][1] == pytest.approx(0.0, abs=1e-6)  # reference = the policy after step 0
