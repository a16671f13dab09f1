"""KL schedules (docs/paper.md, Eq. 3) and per-token KL estimators (Eq. 5)."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from othinklab.errors import ConfigError
from othinklab.kl import (
    AdaptiveKLSchedule,
    grpo_d_beta,
    kl_estimate,
    make_schedule,
    needs_reference,
    schedule_from_config,
)

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
