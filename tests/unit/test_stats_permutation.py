"""Sign-flip and randomization tests against scipy.stats.permutation_test and brute force."""

import itertools

import numpy as np
import pytest
from scipy import stats

from causalloc.stats import randomization_test, sign_flip_test


def _scipy_sign_flip(d, **kwargs):
    return stats.permutation_test(
        (d,), np.mean, permutation_type="samples", vectorized=True, axis=-1, **kwargs
    ).pvalue


@pytest.mark.parametrize("n", [3, 6, 10])
def test_exact_sign_flip_equals_scipy(n):
    rng = np.random.default_rng(n)
    diffs = rng.normal(0.3, 1, size=(25, n))
    diffs[0] = np.round(diffs[0], 1)  # ties in |d|
    diffs[1, 0] = 0.0  # a zero difference
    ours = sign_flip_test(diffs, rng=np.random.default_rng(0))
    assert ours["p_perm_exact"].all() and (ours["n_resamples"] == 2**n).all()
    expected = [_scipy_sign_flip(d, n_resamples=np.inf) for d in diffs]
    np.testing.assert_allclose(ours["p_perm"], expected, rtol=1e-12)


def test_sign_flip_extremes_and_symmetry():
    diffs = np.array([[1.0, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0]])
    p = sign_flip_test(diffs, rng=np.random.default_rng(0))["p_perm"].to_numpy()
    assert p[0] == pytest.approx(2 / 64)  # smallest attainable two-sided p at n = 6
    assert p[1] == 1.0
    flipped = sign_flip_test(-diffs, rng=np.random.default_rng(0))["p_perm"].to_numpy()
    np.testing.assert_array_equal(p, flipped)


def test_monte_carlo_sign_flip_close_to_exact_and_seeded():
    rng = np.random.default_rng(3)
    diffs = rng.normal(0.4, 1, size=(5, 12))
    exact = sign_flip_test(diffs, rng=np.random.default_rng(0))["p_perm"].to_numpy()
    mc = sign_flip_test(
        diffs, rng=np.random.default_rng(1), n_resamples=20000, max_exact_patterns=1000
    )
    assert not mc["p_perm_exact"].any() and (mc["n_resamples"] == 20000).all()
    np.testing.assert_allclose(mc["p_perm"], exact, atol=0.015)
    again = sign_flip_test(
        diffs, rng=np.random.default_rng(1), n_resamples=20000, max_exact_patterns=1000
    )
    np.testing.assert_array_equal(mc["p_perm"], again["p_perm"])
    # the smallest Monte Carlo p is 2 / (R + 1), never 0
    big = sign_flip_test(np.full((1, 20), 1.0), rng=np.random.default_rng(0), n_resamples=999)
    assert big["p_perm"].iloc[0] == pytest.approx(2 / 1000)


def _brute_force_randomization(treated, draws):
    pool = np.column_stack([treated, draws])  # [n, K+1]
    k = draws.shape[1]

    def stat(choice):
        rows = np.arange(len(pool))
        chosen = pool[rows, choice]
        others = (pool.sum(axis=1) - chosen) / k
        return np.mean(chosen - others)

    observed = stat(np.zeros(len(pool), dtype=int))
    null = np.array([stat(np.array(c)) for c in itertools.product(range(k + 1), repeat=len(pool))])
    eps = 1e-12
    p = 2 * min((null >= observed - eps).mean(), (null <= observed + eps).mean())
    return min(p, 1.0), observed


def test_randomization_test_exact_equals_brute_force():
    rng = np.random.default_rng(5)
    treated = rng.normal(0.8, 1, size=(4, 4))
    draws = rng.normal(0, 1, size=(4, 4, 3))
    ours = randomization_test(treated, draws, rng=np.random.default_rng(0))
    assert ours["p_rand_exact"].all() and (ours["k_random"] == 3).all()
    for i in range(4):
        expected, observed = _brute_force_randomization(treated[i], draws[i])
        assert observed == pytest.approx(np.mean(treated[i] - draws[i].mean(axis=1)))
        assert ours["p_rand"].iloc[i] == pytest.approx(expected, rel=1e-12)


def test_randomization_with_one_draw_is_the_sign_flip_test():
    rng = np.random.default_rng(6)
    treated, draws = rng.normal(size=(10, 7)), rng.normal(size=(10, 7, 1))
    rand = randomization_test(treated, draws, rng=np.random.default_rng(0))["p_rand"]
    flip = sign_flip_test(treated - draws[..., 0], rng=np.random.default_rng(0))["p_perm"]
    np.testing.assert_allclose(rand, flip, rtol=1e-12)


def test_randomization_monte_carlo_close_to_exact():
    rng = np.random.default_rng(7)
    treated = rng.normal(0.5, 1, size=(3, 5))
    draws = rng.normal(0, 1, size=(3, 5, 4))  # 5^5 = 3125 assignments
    exact = randomization_test(treated, draws, rng=np.random.default_rng(0))
    mc = randomization_test(
        treated, draws, rng=np.random.default_rng(1), n_resamples=20000, max_exact_patterns=100
    )
    assert exact["p_rand_exact"].all() and not mc["p_rand_exact"].any()
    np.testing.assert_allclose(mc["p_rand"], exact["p_rand"], atol=0.02)
