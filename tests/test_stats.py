"""Paired bootstrap, verdicts and power on constructed data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from othinklab.stats import (
    HOLDS,
    NOT_SEPARABLE,
    REVERSED,
    bootstrap_means,
    paired_difference,
    seed_spread,
    variance_components,
)


def _random_correct(seeds: int, prompts: int, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((seeds, prompts)) < p).astype(float)


def test_identical_methods_interval_contains_zero():
    a = _random_correct(5, 200, 0.5, 0)
    r = paired_difference(a, a.copy())
    assert r.diff == 0 and r.lo <= 0 <= r.hi and r.verdict == NOT_SEPARABLE


def test_constant_shift_gives_a_point_interval_and_holds():
    worse = np.full((5, 100), 0.3)
    r = paired_difference(worse + 0.1, worse)  # sampled accuracy: +0.1 on every prompt of every seed
    assert (r.diff, r.lo, r.hi, r.verdict) == (pytest.approx(10.0), pytest.approx(10.0), pytest.approx(10.0), HOLDS)
    flipped = paired_difference(worse, worse + 0.1)
    assert flipped.verdict == REVERSED and flipped.hi == pytest.approx(-10.0)


def test_clear_greedy_gain_holds_and_swapping_sides_reverses():
    worse = _random_correct(5, 300, 0.3, 1)
    better = np.maximum(worse, _random_correct(5, 300, 0.4, 2))  # fixes ~40% of the failures, breaks none
    r = paired_difference(better, worse)
    assert r.verdict == HOLDS and r.lo > 0 and r.lo <= r.diff <= r.hi
    assert paired_difference(worse, better).verdict == REVERSED


def test_seed_noise_widens_the_interval_beyond_prompt_noise():
    """Same mean gain, but one world has a large per-seed swing: only the hierarchical interval sees it."""
    rng = np.random.default_rng(3)
    base = _random_correct(6, 200, 0.5, 4)
    calm = np.clip(base + 0.05, 0, 1)
    swing = np.clip(base + 0.05 + rng.choice([-0.3, 0.3], size=(6, 1)), 0, 1)
    w_calm = paired_difference(calm, base)
    w_swing = paired_difference(swing, base)
    assert (w_swing.hi - w_swing.lo) > 3 * (w_calm.hi - w_calm.lo)


def test_base_row_is_broadcast_over_seeds():
    base = _random_correct(1, 50, 0.4, 5)
    trained = np.repeat(base, 4, axis=0)
    trained[:, :10] = 1.0
    r = paired_difference(trained, base)
    assert r.n_seeds == 4 and r.diff == pytest.approx(100 * (1 - base[0, :10]).mean() * 10 / 50)


def test_mismatched_prompts_are_refused():
    with pytest.raises(ValueError, match="prompt"):
        paired_difference(np.zeros((2, 5)), np.zeros((2, 6)))
    with pytest.raises(ValueError, match="seed"):
        paired_difference(np.zeros((2, 5)), np.zeros((3, 5)))


def test_bootstrap_is_seeded_and_centred():
    d = np.random.default_rng(6).normal(3.0, 10.0, size=(8, 100))
    a, b = bootstrap_means(d, n_boot=500, seed=1), bootstrap_means(d, n_boot=500, seed=1)
    assert np.array_equal(a, b) and abs(a.mean() - d.mean()) < 0.5


def test_variance_components_recover_known_structure_and_power():
    rng = np.random.default_rng(7)
    S, P = 40, 400
    d = rng.normal(0, 10, size=(S, 1)) + rng.normal(0, 4, size=(1, P)) + rng.normal(0, 20, size=(S, P))
    v = variance_components(d)
    assert v.seed == pytest.approx(100, rel=0.35)
    assert v.prompt == pytest.approx(16, rel=0.5)
    assert v.residual == pytest.approx(400, rel=0.1)
    # the half-width shrinks like 1/sqrt(seeds) once the seed term dominates, and seeds_for inverts it
    need = v.seeds_for(target=5.0, n_prompts=P)
    assert need is not None and v.halfwidth(need, P) <= 5.0 < v.halfwidth(need - 1, P)
    # a prompt term larger than the target cannot be fixed by seeds
    assert variance_components(np.tile(rng.normal(0, 200, size=(1, 30)), (3, 1))).seeds_for(5.0) is None


def test_seed_spread():
    s = seed_spread([0.465, 0.73, 0.6])
    assert (s["min"], s["max"], s["n_seeds"]) == (46.5, 73.0, 3) and s["sd"] > 10
    assert np.isnan(seed_spread([0.5])["sd"])


def test_interval_covers_a_null_difference_at_its_level_with_few_seeds():
    """5 seeds whose true differences vary (sd 8 points) around 0, 200 prompts: a 95% interval must call
    a difference about 5% of the time. The raw crossed bootstrap, on the same draws, calls it about three
    times as often; with seed-by-prompt noise dominating it errs the other way, and the rescaled one must
    not (it would lose power for nothing)."""
    from othinklab.stats import bootstrap_means, t_quantile

    assert abs(t_quantile(0.975, 4) - 2.776) < 2e-3
    for sd_seed, sd_noise, low, high in ((8.0, 5.0, 0.02, 0.09), (0.0, 50.0, 0.015, 0.09)):
        rng = np.random.default_rng(0)
        called = raw = 0
        sims = 300
        for i in range(sims):
            d = (rng.normal(0.0, sd_seed, size=(5, 1)) + rng.normal(0.0, sd_noise, size=(5, 200))) / 100.0
            r = paired_difference(d, np.zeros((1, 200)), n_boot=400, seed=i)
            called += r.verdict != "not separable"
            lo, hi = np.quantile(bootstrap_means(100.0 * d, n_boot=400, seed=i), [0.025, 0.975])
            raw += not (lo <= 0.0 <= hi)
        assert low <= called / sims <= high, (sd_seed, called / sims)
        if sd_seed:
            assert raw / sims >= 2 * called / sims  # the raw bootstrap is anti-conservative here
        else:
            assert raw / sims < low  # and over-wide here


def test_a_real_effect_is_still_found_with_five_seeds():
    rng = np.random.default_rng(1)
    d = (12.0 + rng.normal(0.0, 4.0, size=(5, 1)) + rng.normal(0.0, 30.0, size=(5, 200))) / 100.0
    assert paired_difference(d, np.zeros((1, 200))).verdict == "holds"
