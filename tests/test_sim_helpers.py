"""Engine helpers moved out of the labs: capacity search, grouped percentiles, Zipf, rescaled empirical, lognormal quantiles."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sim.balancer import RoundRobin, simulate_farm
from sim.capacity import max_load_within_slo
from sim.dist import Empirical, Lognormal, Zipf
from sim.metrics import grouped_percentile
from sim.rng import Streams


# ---------------------------------------------------------------- sim.capacity
@pytest.mark.parametrize("slo", [2.0, 10.0, 100.0])
def test_search_finds_the_root_of_a_known_curve(slo):
    # P99(rho) = 1 / (1 - rho): the objective is met up to rho* = 1 - 1 / slo
    calls = []

    def p99(rho):
        calls.append(rho)
        return 1.0 / (1.0 - rho)

    rho = max_load_within_slo(p99, slo, 1.0, 0.999, tolerance=0.001)
    exact = 1 - 1 / slo
    assert p99(rho) <= slo * 1.002  # feasible (or within the 0.2% acceptance)
    assert rho == pytest.approx(exact, abs=0.002)
    assert len(calls) < 25


def test_search_edges():
    assert max_load_within_slo(lambda r: 5.0, 1.0, 5.0, 0.9) == 0.0  # an idle system already misses it
    assert max_load_within_slo(lambda r: 0.5, 1.0, 0.5, 0.9) == 0.9  # the top of the range is feasible
    assert max_load_within_slo(lambda r: 0.5, 1.0, 0.5, 0.0) == 0.0
    with pytest.raises(ValueError):
        max_load_within_slo(lambda r: 0.5, 1.0, 0.5, 1.0)


def test_search_matches_the_mm1_closed_form():
    # M/M/1 FIFO: sojourn ~ Exp(mu - lambda), so P99 <= SLO  <=>  lambda <= mu - ln(100) / SLO
    n, mu, slo = 60000, 10.0, 1.0
    s = Streams(3)
    service = s["service"].exponential(1 / mu, n)
    unit = np.cumsum(s["arrivals"].exponential(1.0, n))
    skip = n // 10

    def p99(rho):
        a = unit / (rho * mu)
        run = simulate_farm(a, service, RoundRobin(), 1)
        return float(np.percentile((run.end - a)[skip:], 99))

    rho = max_load_within_slo(p99, slo, float(np.percentile(service[skip:], 99)), 0.999)
    assert rho * mu == pytest.approx(mu - math.log(100) / slo, rel=0.05)


# ---------------------------------------------------------------- sim.metrics.grouped_percentile
@pytest.mark.parametrize("q", [50, 99, 100, 0])
def test_grouped_percentile_matches_numpy(q):
    rng = np.random.default_rng(0)
    v, g = rng.random(3000), rng.integers(0, 9, 3000)
    out = grouped_percentile(v, g, 10, q)
    for k in range(9):
        assert out[k] == pytest.approx(np.percentile(v[g == k], q), rel=1e-12)
    assert math.isnan(out[9])
    assert np.isnan(grouped_percentile(np.array([]), np.array([], dtype=int), 3, 99)).all()


# ---------------------------------------------------------------- sim.dist
def test_zipf_draws_follow_the_weights():
    z = Zipf(100, 1.0)
    users = z.sample(np.random.default_rng(0), 200000)
    share = np.bincount(users, minlength=100) / users.size
    h = np.sum(1 / np.arange(1, 101))
    assert z.weights[0] == pytest.approx(1 / h)
    assert share[0] == pytest.approx(1 / h, rel=0.02)
    assert share[9] == pytest.approx(1 / (10 * h), rel=0.05)
    assert users.mean() == pytest.approx(z.mean, rel=0.02)
    uniform = Zipf(5, 0.0)
    assert np.allclose(uniform.weights, 0.2) and uniform.variance == pytest.approx(2.0)  # (5^2 - 1) / 12
    assert Zipf(1, 2.0).sample(np.random.default_rng(0), 10).tolist() == [0] * 10
    # a short run's draws are a prefix of a longer run's (so parts can draw only what they need)
    assert (z.sample(np.random.default_rng(4), 50) == z.sample(np.random.default_rng(4), 500)[:50]).all()
    with pytest.raises(ValueError):
        Zipf(0, 1.0)


def test_rescaled_empirical_keeps_the_shape_and_sets_the_mean():
    base = Empirical([1.0, 2.0, 3.0, 10.0])
    r = base.rescaled(0.5)
    assert r.mean == pytest.approx(0.5)
    assert r.scv == pytest.approx(base.scv)
    assert r.quantile(0.99) / r.mean == pytest.approx(base.quantile(0.99) / base.mean)
    with pytest.raises(ValueError):
        Empirical([0.0, 0.0]).rescaled(1.0)


@pytest.mark.parametrize("cv", [0.1, 1.0, 4.0])
def test_lognormal_quantile_is_exact(cv):
    d = Lognormal(0.1, cv)
    x = d.sample(np.random.default_rng(1), 400000)
    assert d.quantile(0.5) == pytest.approx(0.1 / math.sqrt(1 + cv * cv))  # the median is exp(mu)
    assert d.quantile(0.99) == pytest.approx(np.quantile(x, 0.99), rel=0.03)


def test_wilson_interval_has_exact_ends_and_covers_the_share():
    from sim.metrics import wilson

    assert wilson(0, 1000).low == 0.0 and wilson(1000, 1000).high == 1.0
    iv = wilson(30, 100)
    assert iv.low < 0.3 < iv.high and abs((iv.low + iv.high) / 2 - 0.3) < 0.01  # centred near p for moderate n
    assert wilson(0, 0).low != wilson(0, 0).low  # no trials: no interval (NaN)
