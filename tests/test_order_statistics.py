"""sim.metrics.order_statistic_interval: hand-checked ranks and brute-force coverage."""
import numpy as np

from sim.metrics import order_statistic_interval


def test_median_of_twenty_uses_ranks_6_and_15():
    # Binomial(20, 0.5): P(B <= 5) = 0.0207 < 0.025 <= P(B <= 6) = 0.0577, and
    # P(B <= 13) = 0.9423 < 0.975 <= P(B <= 14) = 0.9793: ranks 6 and 14 + 1 = 15 (coverage 0.9586)
    x = np.random.default_rng(3).permutation(np.arange(1.0, 21.0))
    iv = order_statistic_interval(x, 50)
    assert (iv.low, iv.high) == (6.0, 15.0)
    assert iv.estimate == 10.5


def test_coverage_is_at_least_nominal_and_not_wasteful():
    rng = np.random.default_rng(11)
    for n, q in ((100, 95), (137, 50), (700, 99)):
        samples = rng.exponential(1.0, (4000, n))
        truth = -np.log(1 - q / 100)
        ivs = [order_statistic_interval(s, q) for s in samples]
        lo, hi = np.array([iv.low for iv in ivs]), np.array([iv.high for iv in ivs])
        cover = np.mean((lo <= truth) & (truth <= hi))
        assert 0.94 <= cover <= 0.995, (n, q, cover)


def test_too_few_values_give_no_bounds():
    iv = order_statistic_interval([1.0, 2.0, 3.0], 50)
    assert iv.estimate == 2.0 and np.isnan(iv.low) and np.isnan(iv.high)
    assert np.isnan(order_statistic_interval([], 95).estimate)
    # 40 draws: even the maximum is below the P95 with probability 0.95**40 = 0.13 > 0.025
    tail = order_statistic_interval(np.arange(40.0), 95)
    assert np.isfinite(tail.estimate) and np.isnan(tail.high)


def test_ranks_are_scipy_binomial_quantiles():
    from scipy.stats import binom

    from sim.metrics import _order_ranks

    for q in (1, 5, 25, 50, 90, 95, 99, 99.9):
        for n in (*range(1, 400), 999, 1000, 4321, 30000, 123457):
            lo, hi = _order_ranks(n, q, 0.95)
            assert (lo, hi) == (int(binom.ppf(0.025, n, q / 100)), int(binom.ppf(0.975, n, q / 100)) + 1)
