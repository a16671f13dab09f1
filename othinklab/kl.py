"""KL-weight schedules beta(s) and per-token KL estimators (docs/paper.md, Eq. 3 and 5).

Why: OThink-MR1's one change to GRPO is a *dynamic* KL weight (GRPO-D): beta falls from
`(beta_min + beta_max) / 2` to `beta_min` over the first `w = explore_frac * t` steps (explore), then
rises linearly to `beta_max` at step `t` (exploit). Other schedules are here so the paper's claim can be
tested against constant, linear, cosine and target-KL (adaptive) baselines with the same code.

Simplified versus the paper: steps are optimizer steps counted from 0; past `t` the GRPO-D weight is
held at `beta_max` (the paper never trains past `t`). Not in the paper: the adaptive controller (Ziegler
et al. 2019 / TRL's `AdaptiveKLController`) and the accuracy schedule (FG-ExPO's idea), both fed each
step's metrics row by `observe`.

The estimators' expected gradients differ (docs/paper.md, "Which KL does the gradient follow?"): as a
loss, k3 (the paper's Eq. 5) follows the *forward* KL(ref || pi); k2, k3_plus and k3_is follow the
reverse KL(pi || ref); k1 as a loss has zero expected gradient and is only meaningful in the reward.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from othinklab.errors import ConfigError

KL_KINDS = ("k1", "k2", "k3", "k3_plus", "k3_is")
"""Per-token estimators: k1, k2, k3 (Schulman 2020), k3_plus (verl's `k3+`: k3's value, k2's gradient) and
k3_is (TRL's `use_bias_correction_kl`: k3 times the ratio pi / pi_old)."""
PLACEMENTS = ("loss", "reward")
"""Where the KL enters: the loss (Eq. 4) or the reward before the advantage (PPO-style RLHF, k1)."""
LOG_RATIO_CLAMP = 20.0
"""|log(pi_ref / pi)| is clamped to this before the exp of k3 (verl's `low_var_kl`), so exp cannot overflow."""
K3_CLAMP = 10.0
"""k3 is clamped to [-K3_CLAMP, K3_CLAMP] (verl's `low_var_kl`): one wild token cannot dominate the loss."""


PARAM_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "beta": (lambda v: v >= 0, "beta must be >= 0"),
    "beta_min": (lambda v: v >= 0, "beta_min must be >= 0"),
    "beta_max": (lambda v: v >= 0, "beta_max must be >= 0"),
    "beta_start": (lambda v: v >= 0, "must be >= 0"),
    "beta_end": (lambda v: v >= 0, "must be >= 0"),
    "explore_frac": (lambda v: 0 < v < 1, "w/t must be in (0, 1)"),
    "target_kl": (lambda v: v > 0, "must be > 0"),
    "horizon": (lambda v: v > 0, "must be > 0"),
    "accuracy_momentum": (lambda v: 0 <= v < 1, "the EMA's momentum must be in [0, 1)"),
    "reset_reference_every": (lambda v: v >= 0, "must be >= 0 (0 = never)"),
}
"""The valid range of each schedule parameter: the one place they are checked (the config uses it too)."""


def param_problems(params: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """`(name, value, why)` for every schedule parameter in `params` out of range, and for
    `beta_max < beta_min`; parameters this module does not know are ignored.

    >>> param_problems({"beta_min": 0.2, "beta_max": 0.1, "horizon": 5.0})
    [('beta_max', 0.1, 'must be >= kl.beta_min=0.2')]
    """
    problems = [(k, v, PARAM_RULES[k][1]) for k, v in params.items() if k in PARAM_RULES and not PARAM_RULES[k][0](v)]
    if "beta_min" in params and "beta_max" in params and not params["beta_max"] >= params["beta_min"]:
        problems.append(("beta_max", params["beta_max"], f"must be >= kl.beta_min={params['beta_min']}"))
    return problems


def _check(**params: Any) -> None:
    for name, value, why in param_problems(params):
        raise ConfigError(f"kl.{name}={value!r} is invalid: {why}")


def _check_total_steps(total_steps: int) -> None:
    if not total_steps > 0:
        raise ConfigError(f"train.total_steps must be > 0, got {total_steps!r}")


def grpo_d_beta(step: int, total_steps: int, beta_min: float, beta_max: float, explore_frac: float = 0.3) -> float:
    """GRPO-D's KL weight at optimizer step `step` (Eq. 3), with `w = explore_frac * total_steps`.

    >>> [round(grpo_d_beta(s, 100, 0.04, 0.1), 4) for s in (0, 10, 20, 30, 50, 70, 100)]
    [0.07, 0.06, 0.05, 0.04, 0.0571, 0.0743, 0.1]
    >>> [round(grpo_d_beta(s, 100, 0.0, 0.02), 4) for s in (0, 10, 20, 30, 50, 70, 100)]
    [0.01, 0.0067, 0.0033, 0.0, 0.0057, 0.0114, 0.02]
    """
    _check_total_steps(total_steps)
    _check(explore_frac=explore_frac, beta_min=beta_min, beta_max=beta_max)
    t = float(total_steps)
    w = explore_frac * t
    s = min(float(step), t)
    beta_mid = (beta_min + beta_max) / 2
    if s <= w:
        return beta_mid - (beta_mid - beta_min) * s / w
    return beta_min + (beta_max - beta_min) * (s - w) / (t - w)


class Schedule:
    """A KL-weight schedule: `schedule(step) -> beta`.

    `observe(row)` is called with each optimizer step's metrics row (`kl/value`, `reward/accuracy`, ...)
    after the step; schedules that react to training (adaptive, accuracy) override it, the rest ignore it.
    """

    def __init__(self, fn: Callable[[int], float], max_beta: float, name: str, params: dict[str, Any]):
        self._fn = fn
        self.max_beta = float(max_beta)
        """Upper bound of beta over the run (decides whether a reference model is needed)."""
        self.name = name
        self.params = dict(params)

    def __call__(self, step: int) -> float:
        return float(self._fn(step))

    def observe(self, row: dict[str, Any]) -> None:
        """Take in one optimizer step's metrics row; fixed schedules ignore it."""

    def state_dict(self) -> dict[str, Any]:
        """Stateless schedules only record their name and parameters (checked on load)."""
        return {"name": self.name, "params": dict(self.params)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ConfigError(f"kl.schedule: checkpoint has {state.get('name')!r}, config has {self.name!r}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.name!r}, {args})"


class AdaptiveKLSchedule(Schedule):
    """Target-KL controller (Ziegler et al. 2019; TRL's `AdaptiveKLController`).

    `observe(row)` feeds it the step's finite `kl/value` through `update`: `beta *= 1 + clip(kl / target - 1,
    -0.2, 0.2) * n / horizon`, so beta rises while the measured KL is above target and falls while below.
    `__call__` ignores the step and returns the current beta, `self.value`.
    """

    def __init__(self, beta: float, target_kl: float, horizon: float):
        if not beta > 0:
            raise ConfigError(f"kl.beta must be > 0 for the adaptive schedule, got {beta!r}")
        _check(target_kl=target_kl, horizon=horizon)
        params = {"beta": beta, "target_kl": target_kl, "horizon": horizon}
        # max_beta is inf: beta grows by up to 20%/horizon per step while the KL stays above target
        super().__init__(lambda step: self.value, math.inf, "adaptive", params)
        self.value = float(beta)
        self.target_kl = float(target_kl)
        self.horizon = float(horizon)

    def observe(self, row: dict[str, Any]) -> None:
        kl = row.get("kl/value")
        if kl is not None and math.isfinite(kl):
            self.update(kl)

    def update(self, measured_kl: float, n_steps: int = 1) -> float:
        """Move beta towards keeping `measured_kl` at `target_kl`; returns the new beta."""
        err = min(max(float(measured_kl) / self.target_kl - 1.0, -0.2), 0.2)
        self.value *= 1.0 + err * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.value = float(state["value"])


class AccuracySchedule(Schedule):
    """beta follows the policy's training accuracy: `beta = beta_min + (beta_max - beta_min) * a`, with `a`
    the exponential moving average (momentum `accuracy_momentum`) of each step's mean accuracy reward,
    clipped to [0, 1].

    Why (FG-ExPO's idea): a mostly-wrong policy should explore (a loose leash to the reference: low beta),
    a mostly-right one exploit and stay close to what works (high beta). Linear in `a` is the simplest
    smooth, monotone, bounded map with no knob beyond the endpoints; the EMA keeps one lucky batch from
    jerking beta. Before the first observation beta is `beta_min` (explore); the first one sets `a`.
    """

    def __init__(self, beta_min: float, beta_max: float, accuracy_momentum: float = 0.9):
        _check(beta_min=beta_min, beta_max=beta_max, accuracy_momentum=accuracy_momentum)
        params = {"beta_min": beta_min, "beta_max": beta_max, "accuracy_momentum": accuracy_momentum}
        super().__init__(lambda step: self.beta(), beta_max, "accuracy", params)
        self.beta_min, self.beta_max, self.momentum = float(beta_min), float(beta_max), float(accuracy_momentum)
        self.ema: float | None = None

    def beta(self) -> float:
        a = 0.0 if self.ema is None else min(max(self.ema, 0.0), 1.0)
        return self.beta_min + (self.beta_max - self.beta_min) * a

    def observe(self, row: dict[str, Any]) -> None:
        acc = row.get("reward/accuracy")
        if acc is None or not math.isfinite(acc):
            return
        self.ema = float(acc) if self.ema is None else self.momentum * self.ema + (1 - self.momentum) * float(acc)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "ema": self.ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.ema = None if state.get("ema") is None else float(state["ema"])


def _none() -> Schedule:
    return Schedule(lambda step: 0.0, 0.0, "none", {})


def _constant(beta: float) -> Schedule:
    _check(beta=beta)
    return Schedule(lambda step: beta, beta, "constant", {"beta": beta})


def _interpolated(name: str, beta_start: float, beta_end: float, total_steps: int) -> Schedule:
    """`linear` or `cosine` from `beta_start` at step 0 to `beta_end` at `total_steps`."""
    _check_total_steps(total_steps)
    _check(beta_start=beta_start, beta_end=beta_end)
    params = {"beta_start": beta_start, "beta_end": beta_end, "total_steps": total_steps}

    def fn(step: int) -> float:
        f = min(max(float(step), 0.0), float(total_steps)) / total_steps
        if name == "linear":
            return beta_start + (beta_end - beta_start) * f
        return beta_end + (beta_start - beta_end) * 0.5 * (1 + math.cos(math.pi * f))

    return Schedule(fn, max(beta_start, beta_end), name, params)


def _grpo_d(total_steps: int, beta_min: float, beta_max: float, explore_frac: float = 0.3) -> Schedule:
    grpo_d_beta(0, total_steps, beta_min, beta_max, explore_frac)  # validates
    params = {"total_steps": total_steps, "beta_min": beta_min, "beta_max": beta_max, "explore_frac": explore_frac}

    def fn(step: int) -> float:
        return grpo_d_beta(step, total_steps, beta_min, beta_max, explore_frac)

    # Eq. 3 is V-shaped: its maximum is at s = 0 (beta_mid) or s = t (beta_max) -> beta_max.
    return Schedule(fn, beta_max, "grpo_d", params)


_BUILDERS: dict[str, tuple[Callable[..., Schedule], tuple[str, ...], tuple[str, ...]]] = {
    # name: (builder, required params, optional params)
    "none": (_none, (), ()),
    "constant": (_constant, ("beta",), ()),
    "linear": (functools.partial(_interpolated, "linear"), ("beta_start", "beta_end", "total_steps"), ()),
    "cosine": (functools.partial(_interpolated, "cosine"), ("beta_start", "beta_end", "total_steps"), ()),
    "grpo_d": (_grpo_d, ("total_steps", "beta_min", "beta_max"), ("explore_frac",)),
    "adaptive": (AdaptiveKLSchedule, ("beta", "target_kl", "horizon"), ()),
    "accuracy": (AccuracySchedule, ("beta_min", "beta_max"), ("accuracy_momentum",)),
}
SCHEDULES = tuple(_BUILDERS)
_ALIASES = {"beta_min": "beta_start", "beta_max": "beta_end"}  # for linear and cosine


def make_schedule(name: str, **params: Any) -> Schedule:
    """Build a schedule by name, strictly: unknown or missing parameters raise `ConfigError`.

    >>> make_schedule("grpo_d", total_steps=100, beta_min=0.04, beta_max=0.1)(30)
    0.04
    >>> make_schedule("linear", beta_start=0.0, beta_end=0.1, total_steps=10)(5)
    0.05
    """
    if name not in _BUILDERS:
        raise ConfigError(f"kl.schedule must be one of {', '.join(SCHEDULES)}; got {name!r}")
    builder, required, optional = _BUILDERS[name]
    if name in ("linear", "cosine"):
        for alias, key in _ALIASES.items():
            if alias in params:
                if key in params:
                    raise ConfigError(f"kl: give {key} or its alias {alias} for '{name}', not both")
                params[key] = params.pop(alias)
    allowed = required + optional
    unknown = sorted(set(params) - set(allowed))
    missing = [k for k in required if k not in params]
    if unknown or missing:
        problem = f"unknown {unknown}" if unknown else f"missing {missing}"
        raise ConfigError(f"kl schedule {name!r}: {problem} parameter(s); valid: {', '.join(allowed) or '(none)'}")
    return builder(**params)


def schedule_from_config(kl_cfg: Any, total_steps: int) -> Schedule:
    """Build the schedule named `kl_cfg.schedule` (a `KLConfig`-like object; missing attributes are not
    passed), taking only the config fields it uses; linear and cosine take `linear_endpoints`."""
    name = getattr(kl_cfg, "schedule", None)
    _, required, optional = _BUILDERS.get(name, (None, (), ()))
    fields = [k for k in required + optional if k not in ("total_steps", "beta_start", "beta_end")]
    params = {k: getattr(kl_cfg, k) for k in fields if getattr(kl_cfg, k, None) is not None}
    if name in ("linear", "cosine"):
        params["beta_start"], params["beta_end"] = linear_endpoints(kl_cfg)
    if name in ("linear", "cosine", "grpo_d"):
        params["total_steps"] = total_steps
    return make_schedule(name, **params)


def linear_endpoints(kl_cfg: Any) -> tuple[float, float]:
    """`(beta_start, beta_end)` of the linear and cosine schedules: `kl.beta_start` / `kl.beta_end`, each
    falling back to `kl.beta_min` / `kl.beta_max` when negative or absent.

    >>> from types import SimpleNamespace as NS
    >>> linear_endpoints(NS(beta_min=0.04, beta_max=0.1, beta_start=0.1, beta_end=0.0))
    (0.1, 0.0)
    >>> linear_endpoints(NS(beta_min=0.04, beta_max=0.1, beta_start=-1.0, beta_end=-1.0))
    (0.04, 0.1)
    """
    start = getattr(kl_cfg, "beta_start", -1.0)
    end = getattr(kl_cfg, "beta_end", -1.0)
    start = kl_cfg.beta_min if start is None or start < 0 else start
    end = kl_cfg.beta_max if end is None or end < 0 else end
    return float(start), float(end)


def needs_reference(schedule: Schedule) -> bool:
    """True if beta is ever > 0 over the run, i.e. the reference model's log-probs are needed.

    >>> needs_reference(make_schedule("grpo_d", total_steps=10, beta_min=0.0, beta_max=0.02))
    True
    >>> needs_reference(make_schedule("none"))
    False
    """
    return schedule.max_beta > 0


def _k3(r: torch.Tensor) -> torch.Tensor:
    """k3 of `r = ref_logp - logp` with verl's clamps (`r` to +-20 before the exp, k3 to +-10 after)."""
    r = torch.clamp(r, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(r) - r - 1, -K3_CLAMP, K3_CLAMP)


def kl_estimate(
    logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3", old_logp: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from sampled tokens' log-probs; same shape.

    With `r = ref_logp - logp`: k1 = -r, k2 = r**2 / 2, k3 = exp(r) - r - 1 (Eq. 5; >= 0, unbiased in
    value), k3_plus = k3 in value with k2's gradient (straight-through, verl's `k3+`), k3_is = k3 *
    exp(logp - old_logp) (TRL 1.16's `use_bias_correction_kl`; `old_logp=None` means on-policy,
    `logp.detach()`, so the ratio is 1 in value and only adds its gradient). k3 is clamped as verl does
    (`LOG_RATIO_CLAMP`, `K3_CLAMP`); the clamps never bind at everyday KLs.

    >>> kl_estimate(torch.tensor([0.0, -1.0]), torch.tensor([0.0, -1.0])).tolist()
    [0.0, 0.0]
    """
    r = ref_logp - logp
    if kind == "k1":
        return -r
    if kind == "k2":
        return 0.5 * r**2
    if kind == "k3":
        return _k3(r)
    if kind == "k3_plus":
        k2 = 0.5 * r**2
        return k2 - k2.detach() + _k3(r).detach()
    if kind == "k3_is":
        old = logp.detach() if old_logp is None else old_logp
        return torch.exp(logp - old) * _k3(r)
    raise ConfigError(f"kl.estimator must be one of {', '.join(KL_KINDS)}; got {kind!r}")


def sequence_kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each completion's summed k1 over its `mask`ed tokens, `log pi(y|x) - log pi_ref(y|x)`, detached:
    what `kl.placement=reward` subtracts (times beta) from the completion's reward before Eq. 2.

    Why the sum: it is the sequence-level log-ratio, whose score-function gradient
    `E[(R - beta * log pi/pi_ref) grad log pi]` is the exact gradient of `E[R] - beta * KL(pi || pi_ref)`.

    >>> sequence_kl_penalty(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -2.5]]), torch.ones(1, 2)).tolist()
    [1.0]
    """
    return ((logp - ref_logp).detach() * mask.to(logp.dtype)).sum(dim=1)
