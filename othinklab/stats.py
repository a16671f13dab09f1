"""Paired statistics for the grid: seed-and-prompt intervals, verdicts, seed spread and power.

Why: two methods trained from the same seed see the same prompt stream and are scored on the same eval
prompts, so the honest comparison is the *paired* difference per (seed, prompt), not two intervals of means
that may or may not overlap. Small-scale RL spreads widely over seeds (one can land 25 points above
another), so an interval counting only eval prompts as random would overstate certainty.

The model: difference(seed, prompt) = mean + seed effect + prompt effect + residual, all independent,
additive, roughly symmetric, on a balanced design (every seed scored on the same prompts). Its variance
components (two-way ANOVA, one observation per cell) give *one* estimate of the variance of the mean,
shared by the interval, the half-width and the power calculation: the seed part (seed effect plus
residual, from the per-seed means, S-1 degrees of freedom) at Student's t, the prompt part at the normal.
No resampling, so no verdict depends on a seed of the analysis (a crossed bootstrap with 2000 replicates
moved the ends by up to 0.7 points between its own seeds). `tests/test_stats.py` checks the error rate
at a true difference of 0.

Pure numpy on `(seeds, prompts)` arrays of per-prompt correctness (0/1 for greedy decoding, the fraction
of correct samples for sampled accuracy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

HOLDS, REVERSED, NOT_SEPARABLE, BORDERLINE = "holds", "reversed", "not separable", "borderline"
"""Verdicts: interval entirely on the claimed side of 0, entirely on the other, neither, or an end within
`BORDERLINE_POINTS` of 0 (a knife-edge call that should not be read either way)."""
BORDERLINE_POINTS = 0.2
"""Interval ends this close to 0 (points) make a verdict `borderline`."""


@dataclass(frozen=True)
class PairedDifference:
    """`better - worse` in accuracy points with its 95% interval and verdict."""

    diff: float
    """Point estimate: mean over seeds and prompts of the paired difference (points, 0-100 scale)."""
    lo: float
    """Lower end of the interval (points)."""
    hi: float
    """Upper end (points)."""
    verdict: str
    """`holds`, `reversed`, `borderline` or `not separable` (from the interval only)."""
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


def verdict(lo: float, hi: float, tol: float = BORDERLINE_POINTS) -> str:
    """`holds` if the interval of (claimed better - claimed worse) is above `tol`, `reversed` if below
    `-tol`, `borderline` if an end of a non-degenerate interval lies within `tol` of 0, else `not separable`.

    >>> verdict(1.0, 4.0), verdict(-3.0, -0.5), verdict(-1.0, 2.0), verdict(0.1, 4.0), verdict(0.0, 0.0)
    ('holds', 'reversed', 'not separable', 'borderline', 'not separable')
    """
    if lo > tol:
        return HOLDS
    if hi < -tol:
        return REVERSED
    if hi - lo > 2 * tol and (abs(lo) <= tol or abs(hi) <= tol):
        return BORDERLINE
    return NOT_SEPARABLE


def _quantile(cdf, q: float) -> float:
    """The x >= 0 with cdf(x) = q, by doubling then bisection."""
    lo, hi = 0.0, 1.0
    while cdf(hi) < q:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2


def _simpson(pdf, a: float, b: float, n: int = 4000) -> float:
    xs = np.linspace(a, b, n + 1)
    ys = pdf(xs)
    return float((xs[1] - xs[0]) / 3 * (ys[0] + ys[-1] + 4 * ys[1:-1:2].sum() + 2 * ys[2:-1:2].sum()))


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
    return _quantile(lambda x: 0.5 + _simpson(pdf, 0.0, x), q)


@lru_cache(maxsize=256)
def chi2_quantile(q: float, df: int) -> float:
    """Quantile `q` (0 < q < 1) of the chi-square with `df` degrees of freedom, from the regularized
    lower incomplete gamma function's series.

    >>> [round(chi2_quantile(q, 4), 3) for q in (0.025, 0.975)]
    [0.484, 11.143]
    """
    if not 0 < q < 1 or df < 1:
        raise ValueError(f"chi2_quantile needs 0 < q < 1 and df >= 1, got {q}, {df}")
    a = df / 2

    def cdf(x: float) -> float:  # P(a, x/2) = (x/2)^a e^(-x/2) / Gamma(a) * sum_n (x/2)^n / (a (a+1) ... (a+n))
        if x <= 0:
            return 0.0
        h = x / 2
        term = total = 1.0 / a
        n = 0
        while term > 1e-15 * total:
            n += 1
            term *= h / (a + n)
            total += term
        return math.exp(a * math.log(h) - h - math.lgamma(a)) * total

    return _quantile(cdf, q)


@dataclass(frozen=True)
class VarianceComponents:
    """Two-way (seed x prompt) random-effects decomposition of a paired-difference matrix (points^2): the
    variance of the mean is `seed_term` (S-1 degrees of freedom) plus `prompt / P`."""

    seed: float
    """Variance of the per-seed true difference (what more seeds average away). The unbiased estimate,
    negative when the seed means agree better than the residual predicts; `seed_term` clips the sum."""
    prompt: float
    """Variance of the per-prompt difference shared by all seeds (what more eval prompts average away)."""
    residual: float
    """Seed-by-prompt interaction and sampling noise (averaged away by either)."""
    n_seeds: int
    n_prompts: int

    def seed_term(self, n_seeds: int | None = None, n_prompts: int | None = None) -> float:
        """Variance of the mean from seeds: seed/S + residual/(S P); at the observed sizes exactly the
        sample variance (ddof 1) of the per-seed means over S."""
        S, P = n_seeds or self.n_seeds, n_prompts or self.n_prompts
        return max(0.0, self.seed / S + self.residual / (S * P))

    def halfwidth(self, n_seeds: int | None = None, n_prompts: int | None = None, level: float = 0.95) -> float:
        """Half-width (points) of the interval with this many seeds and prompts: the seed term at Student's
        t with S-1 degrees of freedom (the normal with one seed), the prompt term at the normal."""
        S, P = n_seeds or self.n_seeds, n_prompts or self.n_prompts
        q = 1 - (1 - level) / 2
        z = t_quantile(q, math.inf)
        t = t_quantile(q, S - 1) if S > 1 else z
        return math.sqrt(t * t * self.seed_term(S, P) + z * z * self.prompt / P)

    def seeds_for(self, target: float = 5.0, n_prompts: int | None = None) -> int | None:
        """Fewest seeds (at least 2) whose half-width is at most `target` points with `n_prompts` prompts;
        None if the prompt term alone uses it up (more eval prompts are needed first) or it takes over 10,000."""
        P = n_prompts or self.n_prompts
        lo, hi = 2, 10_000
        if self.halfwidth(hi, P) > target:
            return None
        while lo < hi:  # the half-width falls as seeds are added
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.halfwidth(mid, P) <= target else (mid + 1, hi)
        return lo

    def seeds_range(self, target: float = 5.0, level: float = 0.95) -> tuple[int | None, int | None, int | None]:
        """(low, estimate, high) of `seeds_for(target)`, the seed mean square taken at the ends of its
        chi-square confidence interval (S-1 degrees of freedom): a handful of seeds pins it down loosely."""
        S, P, ms = self.n_seeds, self.n_prompts, self.seed * self.n_prompts + self.residual
        a = (1 - level) / 2
        ends = ((S - 1) / chi2_quantile(1 - a, S - 1), (S - 1) / chi2_quantile(a, S - 1)) if S > 1 else (1.0, 1.0)
        low, high = (replace(self, seed=(f * ms - self.residual) / P).seeds_for(target) for f in ends)
        return low, self.seeds_for(target), high


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
    return VarianceComponents(seed=(ms_s - ms_e) / P, prompt=prompt, residual=ms_e, n_seeds=S, n_prompts=P)


def mean_interval(x: np.ndarray | list, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi) of a seeds x prompts matrix (points), from the same components as the claims.

    >>> mean_interval([[20.0, 20.0], [20.0, 20.0]])
    (20.0, 20.0, 20.0)
    """
    d = _as_matrix(x, "x")
    h = variance_components(d).halfwidth(level=level)
    mean = float(d.mean())
    return mean, round(mean - h, 9), round(mean + h, 9)  # a constant gives exactly its value


def paired_difference(better: np.ndarray | list, worse: np.ndarray | list, level: float = 0.95) -> PairedDifference:
    """Paired difference `better - worse` in accuracy points, its interval (`mean_interval` of the paired
    matrix) and verdict.

    >>> r = paired_difference([[1, 1, 0, 0]] * 3, [[0, 1, 0, 0]] * 3)
    >>> r.diff, r.verdict
    (25.0, 'not separable')
    """
    d = paired_matrix(better, worse)
    mean, lo, hi = mean_interval(d, level)
    return PairedDifference(diff=mean, lo=lo, hi=hi, verdict=verdict(lo, hi), n_seeds=d.shape[0], n_prompts=d.shape[1])


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
