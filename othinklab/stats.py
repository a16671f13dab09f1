"""Paired statistics for the grid: hierarchical bootstrap intervals, verdicts, seed spread and power.

Why: two methods trained from the same seed see the same prompt stream and are scored on the same eval
prompts, so the honest comparison is the *paired* difference per (seed, prompt), not two intervals of
means that may or may not overlap. The seed-to-seed spread of a small-scale RL run is large (one seed
can land 25 points above another), so an interval that only counts eval prompts as random would
overstate certainty; the bootstrap here resamples seeds *and* prompts (the two are crossed: every seed
is scored on the same prompts). A verdict is read off the interval only, never off the point estimate.

A raw crossed bootstrap gets the width wrong both ways: over a handful of seeds it is too narrow (the
plug-in variance is (S-1)/S of the unbiased one, and its quantiles are normal-like where a t with S-1
degrees of freedom belongs), while it counts the seed-by-prompt noise more than once, which makes it too
wide when that noise dominates. Simulated with 5 seeds at a true difference of 0, a nominal 95% raw
bootstrap called a difference 0.3-18% of the time depending on where the variance sits. So the
bootstrap's replicates keep their shape but are rescaled about the estimate to the unbiased variance of
the mean, with the seed part at Student's t quantile: the same simulations then call 3-7%
(`tests/test_stats.py` checks this). `halfwidth`/`seeds_for` use the same t quantiles.

Everything here is pure numpy on arrays shaped `(seeds, prompts)` of per-prompt correctness (0/1 for
greedy decoding, the fraction of correct samples for sampled accuracy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

HOLDS, REVERSED, NOT_SEPARABLE = "holds", "reversed", "not separable"
"""The three verdicts: interval entirely on the claimed side of 0, entirely on the other, or neither."""


@dataclass(frozen=True)
class PairedDifference:
    """`better - worse` in accuracy points with its 95% interval and verdict."""

    diff: float
    """Point estimate: mean over seeds and prompts of the paired difference (points, 0-100 scale)."""
    lo: float
    """Lower end of the percentile bootstrap interval (points)."""
    hi: float
    """Upper end (points)."""
    verdict: str
    """`holds`, `reversed` or `not separable` (from the interval only)."""
    n_seeds: int
    n_prompts: int


def _as_matrix(x: np.ndarray | list, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty (seeds, prompts) array, got shape {a.shape}")
    return a


def paired_matrix(better: np.ndarray | list, worse: np.ndarray | list) -> np.ndarray:
    """`better - worse` per (seed, prompt) in points; a single-row side (the base: one model whatever
    the seed) is broadcast over the other's seeds.

    >>> paired_matrix([[1, 0], [1, 1]], [[0, 0]]).tolist()
    [[100.0, 0.0], [100.0, 100.0]]
    """
    a, b = _as_matrix(better, "better"), _as_matrix(worse, "worse")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two sides were scored on different prompt counts ({a.shape[1]} vs {b.shape[1]})")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"the two sides have different seed counts ({a.shape[0]} vs {b.shape[0]})")
    return 100.0 * (a - b)


def verdict(lo: float, hi: float) -> str:
    """`holds` if the interval of (claimed better - claimed worse) is entirely above 0, `reversed` if
    entirely below, else `not separable`.

    >>> verdict(1.0, 4.0), verdict(-3.0, -0.5), verdict(-1.0, 2.0), verdict(0.0, 0.0)
    ('holds', 'reversed', 'not separable', 'not separable')
    """
    if lo > 0:
        return HOLDS
    if hi < 0:
        return REVERSED
    return NOT_SEPARABLE


def bootstrap_means(d: np.ndarray, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """`n_boot` bootstrap replicates of the mean of `d` (seeds x prompts), resampling seeds and prompts
    independently with replacement (crossed design). One seed: prompts only.

    >>> bootstrap_means(np.full((3, 4), 7.0), n_boot=5).tolist()
    [7.0, 7.0, 7.0, 7.0, 7.0]
    """
    d = _as_matrix(d, "d")
    S, P = d.shape
    rng = np.random.default_rng(seed)
    ws = rng.multinomial(S, np.full(S, 1.0 / S), size=n_boot).astype(float)  # seed weights (counts)
    wp = rng.multinomial(P, np.full(P, 1.0 / P), size=n_boot).astype(float)  # prompt weights (counts)
    return np.einsum("bs,sp,bp->b", ws, d, wp) / (S * P)


@lru_cache(maxsize=256)
def t_quantile(q: float, df: float) -> float:
    """Quantile `q` (0.5 < q < 1) of Student's t with `df` degrees of freedom (inf: the normal), by
    bisection on the numerically integrated density (numpy has no t distribution; no scipy dependency).

    >>> [round(t_quantile(0.975, d), 3) for d in (1, 2, 4, 30)]
    [12.706, 4.303, 2.776, 2.042]
    """
    if not 0.5 < q < 1:
        raise ValueError(f"t_quantile needs 0.5 < q < 1, got {q}")
    if df <= 0:
        raise ValueError(f"t_quantile needs df >= 1, got {df}")
    if math.isinf(df) or df > 1000:
        pdf = lambda x: np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # noqa: E731
    else:
        c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
        pdf = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)  # noqa: E731

    def cdf(x: float) -> float:  # 0.5 + integral of the density over [0, x] (Simpson, fine grid)
        xs = np.linspace(0.0, x, 4001)
        ys = pdf(xs)
        return 0.5 + float((xs[1] - xs[0]) / 3 * (ys[0] + ys[-1] + 4 * ys[1:-1:2].sum() + 2 * ys[2:-1:2].sum()))

    lo, hi = 0.0, 1.0
    while cdf(hi) < q:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2


def paired_difference(
    better: np.ndarray | list, worse: np.ndarray | list, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> PairedDifference:
    """Paired difference `better - worse` in accuracy points, its 95% interval and verdict.

    The interval is the percentile bootstrap over seeds and prompts, rescaled about the point estimate so
    that its variance is the unbiased variance of the mean (the seed part, from the per-seed means, at
    Student's t quantile with S-1 degrees of freedom; the prompt part from the variance components). With
    one seed nothing is rescaled: the prompts-only bootstrap stands.

    >>> r = paired_difference([[1, 1, 0, 0]] * 3, [[0, 1, 0, 0]] * 3)
    >>> r.diff, r.verdict
    (25.0, 'not separable')
    """
    d = paired_matrix(better, worse)
    reps = bootstrap_means(d, n_boot=n_boot, seed=seed)
    alpha = (1 - level) / 2
    lo, hi = (float(x) for x in np.quantile(reps, [alpha, 1 - alpha]))
    mean = float(d.mean())
    S, P = d.shape
    if S > 1:
        vc = variance_components(d)
        q = 1 - alpha
        seed_part = float(d.mean(axis=1).var(ddof=1)) / S  # unbiased: sigma_seed^2/S + sigma_resid^2/(S P)
        target = (t_quantile(q, S - 1) / t_quantile(q, math.inf)) ** 2 * seed_part + vc.prompt / P
        spread = float(reps.var())
        if spread > 0 and target > 0:
            widen = math.sqrt(target / spread)
            lo, hi = mean + widen * (lo - mean), mean + widen * (hi - mean)
    lo, hi = round(lo, 9), round(hi, 9)  # a constant shift gives exactly its value, not 9.999999999
    return PairedDifference(diff=mean, lo=lo, hi=hi, verdict=verdict(lo, hi), n_seeds=d.shape[0], n_prompts=d.shape[1])


@dataclass(frozen=True)
class VarianceComponents:
    """Two-way (seed x prompt) random-effects decomposition of a paired-difference matrix (points^2)."""

    seed: float
    """Variance of the per-seed true difference (what more seeds average away)."""
    prompt: float
    """Variance of the per-prompt difference shared by all seeds (what more eval prompts average away)."""
    residual: float
    """Seed-by-prompt interaction and sampling noise (averaged away by either)."""
    n_seeds: int
    n_prompts: int

    def halfwidth(self, n_seeds: int | None = None, n_prompts: int | None = None, z: float = 1.96) -> float:
        """Approximate 95% half-width (points) of the mean difference with this many seeds and prompts:
        the seed part with Student's t (S-1 degrees of freedom), the prompt part with `z`."""
        S, P = n_seeds or self.n_seeds, n_prompts or self.n_prompts
        t = t_quantile(0.975, S - 1) if S > 1 else z
        return math.sqrt(t * t * (self.seed / S + self.residual / (S * P)) + z * z * self.prompt / P)

    def seeds_for(self, target: float = 5.0, n_prompts: int | None = None, z: float = 1.96) -> int | None:
        """Fewest seeds (at least 2) whose half-width is at most `target` points with `n_prompts` prompts;
        None if the prompt term alone uses it up (more eval prompts are needed first) or it takes over 10,000."""
        P = n_prompts or self.n_prompts
        if (z * z) * self.prompt / P >= target * target:
            return None
        lo, hi = 2, 10_000
        if self.halfwidth(hi, P, z) > target:
            return None
        while lo < hi:  # the half-width falls as seeds are added
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.halfwidth(mid, P, z) <= target else (mid + 1, hi)
        return lo


def variance_components(d: np.ndarray) -> VarianceComponents:
    """Method-of-moments estimate (two-way ANOVA, one observation per cell) of the seed, prompt and
    residual variance of `d` (seeds x prompts). The seed term needs at least two seeds (0 with one).

    >>> v = variance_components(np.array([[10.0, 10.0], [0.0, 0.0], [10.0, 10.0], [0.0, 0.0]]))
    >>> round(v.seed, 1), v.prompt, v.residual
    (33.3, 0.0, 0.0)
    """
    d = _as_matrix(d, "d")
    S, P = d.shape
    row, col, grand = d.mean(axis=1), d.mean(axis=0), d.mean()
    resid = d - row[:, None] - col[None, :] + grand
    ms_e = float((resid**2).sum() / ((S - 1) * (P - 1))) if S > 1 and P > 1 else 0.0
    ms_s = float(P * row.var(ddof=1)) if S > 1 else 0.0
    if S > 1:
        ms_p = float(S * col.var(ddof=1)) if P > 1 else 0.0
        prompt = max(0.0, (ms_p - ms_e) / S)
    else:  # one seed: prompt and residual are confounded; attribute it all to prompts
        prompt = float(d[0].var(ddof=1)) if P > 1 else 0.0
    return VarianceComponents(seed=max(0.0, (ms_s - ms_e) / P), prompt=prompt, residual=ms_e, n_seeds=S, n_prompts=P)


def seed_spread(per_seed_accuracy: np.ndarray | list) -> dict[str, float]:
    """Seed-to-seed spread of one cell's accuracy (points): mean, sample sd, min, max, count.

    >>> seed_spread([0.5, 0.7, 0.6])
    {'mean': 60.0, 'sd': 10.0, 'min': 50.0, 'max': 70.0, 'n_seeds': 3}
    """
    a = 100.0 * np.asarray(per_seed_accuracy, dtype=float)
    return {
        "mean": round(float(a.mean()), 6),
        "sd": round(float(a.std(ddof=1)), 6) if len(a) > 1 else float("nan"),
        "min": round(float(a.min()), 6),
        "max": round(float(a.max()), 6),
        "n_seeds": int(len(a)),
    }
