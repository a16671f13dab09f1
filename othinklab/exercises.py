"""Graded notebook exercises: `check(name, answer, **context)` prints ✓ or ✗ (with a hint) and returns a bool.

Why: a class needs to know whether an answer is right without a teacher at every desk, and an unsolved
notebook must still run to its end (the tests run it). So `check` never raises on an answer: the placeholder
`...` (or `None`) prints "not yet", a wrong or broken answer prints ✗ with the hint. Each exercise's grader
recomputes the expected value with the package's own functions from the `context` the notebook passes, so
the notebook cells do not show the answer. Solutions are in `notebooks/solutions/`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from othinklab import grpo, kl, rewards
from othinklab.widgets import rescore


@dataclass(frozen=True)
class Exercise:
    hint: str
    grade: Callable[..., bool]
    """(answer, **context) -> whether the answer is right."""


EXERCISES: dict[str, Exercise] = {}
"""Every gradable exercise, by name ("NN.topic")."""
RESULTS: dict[str, bool] = {}
"""The latest verdict per exercise checked in this kernel (`progress()` reads it)."""


class NotYet(Exception):
    """Raised by a grader when the answer is still a stub (a function that returns `...` or None)."""


def answered(value: Any) -> Any:
    """`value`, or NotYet when it is the placeholder `...` or None (what an unfinished function returns)."""
    if value is ... or value is None:
        raise NotYet
    return value


def exercise(name: str, hint: str) -> Callable[[Callable[..., bool]], Callable[..., bool]]:
    """Register a grader under `name`."""

    def register(fn: Callable[..., bool]) -> Callable[..., bool]:
        EXERCISES[name] = Exercise(hint, fn)
        return fn

    return register


def close(a: Any, b: Any, tol: float = 1e-3) -> bool:
    """Numbers (or equal-length sequences of them) equal within `tol`, absolute or relative.

    >>> close(0.1, 0.1004), close([1, 2], [1.0, 2.1]), close(1, [1])
    (True, False, False)
    """
    if isinstance(a, str | bytes) or isinstance(b, str | bytes):
        return False
    if isinstance(b, list | tuple) or isinstance(a, list | tuple) or torch.is_tensor(a) or torch.is_tensor(b):
        try:
            ta, tb = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            return False
        return ta.shape == tb.shape and bool(torch.allclose(ta, tb, rtol=tol, atol=tol))
    try:
        return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)
    except (TypeError, ValueError):
        return False


def check(name: str, answer: Any, **context: Any) -> bool:
    """Grade `answer` to exercise `name`: prints one line (✓, ✗ with a hint, or "not yet") and returns whether
    it is right; never raises on the answer. An unknown `name` is a typo in the notebook and raises KeyError.

    >>> check("01.alpha", ...)
    · 01.alpha: not yet (replace the ... with your answer)
    False
    """
    ex = EXERCISES[name]
    if answer is ... or answer is None:
        print(f"· {name}: not yet (replace the ... with your answer)")
        RESULTS[name] = False
        return False
    try:
        ok = bool(ex.grade(answer, **context))
        problem = ""
    except NotYet:
        print(f"· {name}: not yet (your function returns nothing yet)")
        RESULTS[name] = False
        return False
    except Exception as e:  # a student's function that raises is a wrong answer, not a broken notebook
        ok, problem = False, f" (your answer raised {type(e).__name__}: {e})"
    RESULTS[name] = ok
    print(f"✓ {name}: right" if ok else f"✗ {name}: not yet right{problem}. Hint: {ex.hint}")
    return ok


def progress(prefix: str = "") -> str:
    """One line: how many of the exercises named `prefix...` checked right in this kernel."""
    names = [n for n in EXERCISES if n.startswith(prefix)]
    done = sum(RESULTS.get(n, False) for n in names)
    return f"{done} of {len(names)} exercises right" + (" - well done!" if done == len(names) else "")


# --------------------------------------------------------------------------- 01 · one GRPO step
@exercise("01.alpha", "R = R_acc + alpha * R_format (Eq. 1): a wrong answer has R_acc = 0.")
def _alpha(answer: Any) -> bool:
    return close(answer, rewards.combine(0.0, 1.0, 0.5))


@exercise("01.advantages", "subtract the group's mean, divide by its std (torch's default, unbiased) + 1e-4.")
def _advantages(answer: Any) -> bool:
    return close(answer, grpo.group_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0]), 4).tolist())


@exercise("01.beta_zero", "Eq. 3 falls linearly from the midpoint to beta_min at s = w = 0.3 t.")
def _beta_zero(answer: Any) -> bool:
    first = next(s for s in range(101) if kl.grpo_d_beta(s, 100, 0.0, 0.02) == 0.0)
    return close(answer, first, tol=0)


@exercise("01.k2", "k2 = (log pi - log pi_ref)^2 / 2 per token; it must work on tensors of any shape.")
def _k2(answer: Any) -> bool:
    g = torch.Generator().manual_seed(0)
    logp, ref = -torch.rand(3, 5, generator=g) * 3, -torch.rand(3, 5, generator=g) * 3
    return close(answered(answer(logp, ref)), kl.kl_estimate(logp, ref, "k2"), tol=1e-6)


@exercise("01.policy_value", "the advantages of a group sum to 0 and the ratio is 1 on the first update.")
def _policy_value(answer: Any) -> bool:
    return close(answer, 0.0, tol=1e-4)


# --------------------------------------------------------------------------- 02 · dynamic KL
@exercise("02.min_step", "beta reaches beta_min at s = w = explore_frac * total_steps.")
def _min_step(answer: Any) -> bool:
    betas = [kl.grpo_d_beta(s, 200, 0.04, 0.1) for s in range(201)]
    return close(answer, betas.index(min(betas)), tol=0)


@exercise("02.explore", "call kl.grpo_d_beta(50, 100, 0.04, 0.1, explore_frac=0.1).")
def _explore(answer: Any) -> bool:
    return close(answer, kl.grpo_d_beta(50, 100, 0.04, 0.1, explore_frac=0.1), tol=1e-6)


@exercise("02.more_kl", "average runs[name]['kl/value'] over the last 5 steps of each run.")
def _more_kl(answer: Any, runs: dict) -> bool:
    last = {k: m["kl/value"].tail(5).mean() for k, m in runs.items()}
    return answer == max(last, key=last.get)


@exercise("02.my_schedule", "piecewise linear: (beta_min+beta_max)/2 -> beta_min on [0, w], -> beta_max on [w, t].")
def _my_schedule(answer: Any) -> bool:
    grid = [(s, t, lo, hi) for t in (10, 100) for s in range(t + 1) for lo, hi in ((0.04, 0.1), (0.0, 0.02))]
    return all(close(answered(answer(s, t, lo, hi)), kl.grpo_d_beta(s, t, lo, hi), tol=1e-9) for s, t, lo, hi in grid)


# --------------------------------------------------------------------------- 03 · rollout inspection
@exercise("03.alpha0", "rescore(rollouts, format_weight=0.0)['new_reward'].mean(): alpha 0 is accuracy alone.")
def _alpha0(answer: Any, rollouts: Any) -> bool:
    return close(answer, rescore(rollouts, format_weight=0.0)["new_reward"].mean())


@exercise("03.zero_spread", "a group is (step, group); its spread is max - min of its rewards.")
def _zero_spread(answer: Any, rollouts: Any) -> bool:
    last = rollouts[rollouts["step"] == rollouts["step"].max()]
    spread = last.groupby("group")["reward"].agg(lambda r: r.max() - r.min())
    return close(answer, (spread == 0).mean())


@exercise("03.flips", "compare the sign of 'advantage' and 'new_advantage' (> 0) after rescoring with alpha 2.")
def _flips(answer: Any, rollouts: Any) -> bool:
    df = rescore(rollouts, format_weight=2.0)
    return close(answer, ((df["advantage"] > 0) != (df["new_advantage"] > 0)).mean())


@exercise("03.top_token", "at the last step, find the largest value in any row's token_kl and its token.")
def _top_token(answer: Any, rollouts: Any) -> bool:
    last = rollouts[rollouts["step"] == rollouts["step"].max()]
    best = max((v, t) for toks, vals in zip(last["tokens"], last["token_kl"]) for t, v in zip(toks, vals))
    return answer == best[1]


# --------------------------------------------------------------------------- 04 · cross-task generalization
@exercise("04.not_separable", "count the rows of claims with metric 'greedy' and verdict 'not separable'.")
def _not_separable(answer: Any, claims: Any) -> bool:
    return close(answer, ((claims["metric"] == "greedy") & (claims["verdict"] == "not separable")).sum(), tol=0)


@exercise("04.cross_change", "delta is each method minus the base in points; geometry-trained, counting eval.")
def _cross_change(answer: Any, delta: Any) -> bool:
    return close(answer, delta.loc[("geometry", "grpo_d"), "counting:ood"], tol=0.05)


@exercise("04.most_seeds", "claims[claims.metric == 'greedy'], the row with the largest seeds_for_5pts.")
def _most_seeds(answer: Any, claims: Any) -> bool:
    g = claims[claims["metric"] == "greedy"]
    return answer == g.loc[g["seeds_for_5pts"].idxmax(), "claim"]


# --------------------------------------------------------------------------- 05 · KL ablations
@exercise("05.holds", "count claims whose verdict is 'holds' (both metrics).")
def _holds(answer: Any, claims: Any) -> bool:
    return close(answer, (claims["verdict"] == "holds").sum(), tol=0)


@exercise("05.cross_verdict", "correlations.loc['cross_task_change', 'verdict'].")
def _cross_verdict(answer: Any, correlations: Any) -> bool:
    return answer == correlations.loc["cross_task_change", "verdict"]


@exercise("05.closest", "the row of mech with the smallest kl_same: its method.")
def _closest(answer: Any, mech: Any) -> bool:
    return answer == mech.loc[mech["kl_same"].idxmin(), "method"]


# --------------------------------------------------------------------------- 06 · the real model on a GPU
@exercise("06.trainable", "trainable / total, as printed under the model (a fraction, not a percentage).")
def _trainable(answer: Any, trainable: int, total: int) -> bool:
    return close(answer, trainable / total, tol=1e-3)


@exercise("06.adapter_mb", "files['model/adapter_model.safetensors'] is in bytes; 1 MB = 1e6 bytes.")
def _adapter_mb(answer: Any, files: dict) -> bool:
    return close(answer, files["model/adapter_model.safetensors"] / 1e6, tol=0.05)


@exercise("06.t4", "look up the T4 rows of the hardware table: which config fits in 16 GB?")
def _t4(answer: Any, hardware: Any) -> bool:
    t4 = hardware[hardware["GPU"].str.startswith("T4")]
    return answer == t4.loc[t4["fits"], "config"].tolist()
