"""Closed forms against textbook values and each other; recursions against
independent brute force and against the closed forms."""
import math
from dataclasses import astuple

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.special import gammaln, logsumexp

from sim import analytic as an
from sim.analytic import (
    QueueStats, departures_fifo, erlang_c, kiefer_wolfowitz, lindley, littles_law_l,
    md1, mg1, mm1, mm1_sojourn_quantile, mmc, mmc_wait_quantile,
)


def assert_same(s: QueueStats, ref: QueueStats):
    assert astuple(s) == pytest.approx(astuple(ref), rel=1e-12, abs=1e-15)


# ------------------------------------------------------------ closed forms

def erlang_c_sum(c, a):
    """Explicit textbook formula."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def erlang_c_log(c, a):
    """The same formula in log space, for c too large for factorials."""
    log_top = c * math.log(a) - gammaln(c + 1) + math.log(c / (c - a))
    k = np.arange(c)
    return math.exp(log_top - logsumexp(np.append(k * math.log(a) - gammaln(k + 1), log_top)))


def test_erlang_c_textbook():
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3, rel=1e-14)
    assert erlang_c(1, 0.7) == pytest.approx(0.7, rel=1e-14)  # M/M/1: P(wait) = rho
    assert erlang_c(3, 0.0) == 0.0


@pytest.mark.parametrize("c", [1, 2, 3, 5, 10, 20, 50])
@pytest.mark.parametrize("load", [0.05, 0.3, 0.7, 0.95, 0.999])
def test_erlang_c_matches_explicit_sum(c, load):
    assert erlang_c(c, load * c) == pytest.approx(erlang_c_sum(c, load * c), rel=1e-11)


@pytest.mark.parametrize("c, load", [(500, 0.9), (2000, 0.98), (10_000, 0.995)])
def test_erlang_c_stable_for_many_servers(c, load):
    p = erlang_c(c, load * c)
    assert 0 < p < 1
    assert p == pytest.approx(erlang_c_log(c, load * c), rel=1e-9)


def test_mm1_textbook():
    s = mm1(2.0, 3.0)
    assert_same(s, QueueStats(rho=2 / 3, wq=2 / 3, w=1.0, lq=4 / 3, l=2.0, p_wait=2 / 3))


def test_mmc_textbook():
    s = mmc(1.0, 1.0, 2)  # a = 1, C = 1/3, Wq = C / (c mu - lam)
    assert_same(s, QueueStats(rho=0.5, wq=1 / 3, w=4 / 3, lq=1 / 3, l=4 / 3, p_wait=1 / 3))


@pytest.mark.parametrize("lam, mu", [(0.0, 1.0), (0.1, 1.0), (0.7, 1.0), (9.9, 10.0), (3.0, 4.5)])
def test_special_cases_agree(lam, mu):
    assert_same(mmc(lam, mu, 1), mm1(lam, mu))
    assert_same(mg1(lam, 1 / mu, 1.0), mm1(lam, mu))
    assert_same(mg1(lam, 1 / mu, 0.0), md1(lam, 1 / mu))
    assert md1(lam, 1 / mu).wq == pytest.approx(mm1(lam, mu).wq / 2, rel=1e-12, abs=0)


@pytest.mark.parametrize("stats, lam, es", [
    (mm1(0.8, 1.0), 0.8, 1.0),
    (mmc(7.0, 1.0, 10), 7.0, 1.0),
    (mmc(30.0, 2.0, 16), 30.0, 0.5),
    (md1(0.5, 1.5), 0.5, 1.5),
    (mg1(2.0, 0.3, 4.0), 2.0, 0.3),
])
def test_littles_law_inside_stats(stats, lam, es):
    assert stats.l == pytest.approx(littles_law_l(lam, stats.w), rel=1e-12)
    assert stats.lq == pytest.approx(littles_law_l(lam, stats.wq), rel=1e-12)
    assert stats.w == pytest.approx(stats.wq + es, rel=1e-12)
    assert 0 <= stats.p_wait <= 1 and 0 <= stats.rho < 1


def test_quantiles():
    lam, mu, c = 0.7, 1.0, 1
    assert mm1_sojourn_quantile(lam, mu, 0.5) == pytest.approx(math.log(2) / (mu - lam))
    assert mm1_sojourn_quantile(lam, mu, 0.0) == 0.0
    # M/M/1 wait: P(Wq > t) = rho exp(-(mu - lam) t)
    assert mmc_wait_quantile(lam, mu, c, 0.3) == 0.0  # q <= 1 - rho: no wait
    t = mmc_wait_quantile(lam, mu, c, 0.9)
    assert 0.7 * math.exp(-(mu - lam) * t) == pytest.approx(0.1)
    # M/M/c: the survival function at the quantile is 1 - q
    lam, mu, c = 5.0, 1.0, 6
    p = erlang_c(c, lam / mu)
    for q in (0.9, 0.99, 0.999):
        t = mmc_wait_quantile(lam, mu, c, q)
        assert p * math.exp(-(c * mu - lam) * t) == pytest.approx(1 - q)
    assert mmc_wait_quantile(lam, mu, c, 1 - p) == 0.0


@pytest.mark.parametrize("call", [
    lambda: mm1(1.0, 1.0),
    lambda: mm1(2.0, 1.0),
    lambda: mm1(-0.1, 1.0),
    lambda: mm1(0.5, 0.0),
    lambda: mm1(0.5, -1.0),
    lambda: mm1(float("nan"), 1.0),
    lambda: mmc(1.0, 1.0, 0),
    lambda: mmc(1.0, 1.0, 1.5),
    lambda: mmc(3.0, 1.0, 2),
    lambda: mmc(2.0, 1.0, 2),
    lambda: erlang_c(0, 0.5),
    lambda: erlang_c(2, 2.0),
    lambda: erlang_c(2, -1.0),
    lambda: md1(0.5, 0.0),
    lambda: md1(1.0, 1.0),
    lambda: mg1(0.5, 1.0, -0.1),
    lambda: mg1(-0.5, 1.0, 1.0),
    lambda: mmc_wait_quantile(0.5, 1.0, 1, 1.0),
    lambda: mmc_wait_quantile(0.5, 1.0, 1, -0.1),
    lambda: mmc_wait_quantile(1.5, 1.0, 1, 0.5),
    lambda: mm1_sojourn_quantile(0.5, 1.0, 1.0),
    lambda: mm1_sojourn_quantile(1.0, 1.0, 0.5),
    lambda: littles_law_l(-1.0, 1.0),
    lambda: lindley([0.0, 1.0], [1.0]),
    lambda: lindley([0.0, -1.0], [1.0, 1.0]),
    lambda: lindley([[0.0, 1.0]], [[1.0, 1.0]]),
    lambda: kiefer_wolfowitz([0.0, 1.0], [1.0, np.inf], 2),
    lambda: kiefer_wolfowitz([0.0, 1.0], [1.0, 1.0], 0),
    lambda: departures_fifo([1.0, 0.5], [1.0, 1.0], 1),
])
def test_invalid_inputs_raise(call):
    with pytest.raises(ValueError):
        call()


# --------------------------------------------------------------- recursions

def lindley_loop(a, s):
    w = [0.0] * len(a)
    for n in range(1, len(a)):
        w[n] = max(0.0, w[n - 1] + s[n - 1] - a[n])
    return np.array(w)


def brute_force_waits(a, s, c):
    """Event-by-event: each arrival, in order, takes the earliest-free server."""
    free = [0.0] * c
    t, waits = 0.0, []
    for gap, svc in zip(a, s):
        t += gap
        k = min(range(c), key=free.__getitem__)
        start = max(t, free[k])
        waits.append(start - t)
        free[k] = start + svc
    return np.array(waits)


def mmc_inputs(seed, n, rho, c, mu=1.0):
    rng = np.random.default_rng(seed)
    return rng.exponential(1 / (rho * c * mu), n), rng.exponential(1 / mu, n)


def test_lindley_by_hand():
    #           arrive at 0, 1, 2, 3, 10
    a, s = [0, 1, 1, 1, 7], [3, 1, 1, 0.5, 1]
    np.testing.assert_array_equal(lindley(a, s), [0, 2, 2, 2, 0])
    np.testing.assert_array_equal(lindley([], []), [])
    np.testing.assert_array_equal(lindley([5.0], [1.0]), [0.0])


@pytest.mark.parametrize("rho", [0.3, 0.7, 0.95, 1.2])
@pytest.mark.parametrize("n", [2, 127, 128, 129, 130, 257, 5000])
def test_lindley_matches_loop(rho, n):
    a, s = mmc_inputs(n, n, rho, 1)
    np.testing.assert_allclose(lindley(a, s), lindley_loop(a, s), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rho", [0.7, 0.99])
def test_lindley_matches_loop_long_run(rho):
    a, s = mmc_inputs(1, 100_000, rho, 1)
    ref = lindley_loop(a, s)
    np.testing.assert_allclose(lindley(a, s), ref, rtol=1e-12, atol=1e-12 * ref.max())


@pytest.mark.parametrize("rho", [0.5, 0.9, 1.1])
def test_kw_single_server_is_lindley(rho):
    a, s = mmc_inputs(7, 20_000, rho, 1)
    np.testing.assert_allclose(kiefer_wolfowitz(a, s, 1), lindley(a, s), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c", [2, 3, 5, 16])
@pytest.mark.parametrize("rho", [0.5, 0.9, 1.1])
def test_kw_matches_brute_force(c, rho):
    a, s = mmc_inputs(c, 3000, rho, c)
    np.testing.assert_allclose(kiefer_wolfowitz(a, s, c), brute_force_waits(a, s, c), rtol=1e-9, atol=1e-9)


def test_departures_fifo():
    rng = np.random.default_rng(3)
    arrivals = np.cumsum(rng.exponential(1.0, 2000))
    s = rng.exponential(0.8, 2000)
    start, end = departures_fifo(arrivals, s, 1)
    np.testing.assert_allclose(start[1:], np.maximum(arrivals[1:], end[:-1]), rtol=1e-12)
    np.testing.assert_allclose(end - start, s, atol=1e-9)  # absolute times: rounding ~ ulp(t)
    start, end = departures_fifo(arrivals, s, 3)
    assert np.all(start >= arrivals) and np.all(np.diff(start) >= -1e-12)  # FIFO: starts in order
    busy = np.add.reduce((start[:, None] <= start[None, :]) & (end[:, None] > start[None, :] + 1e-9))
    assert busy.max() <= 3  # never more than c in service


# ----------------------------------------------- recursions vs closed forms

@pytest.mark.parametrize("c", [1, 3])
def test_kw_mean_wait_matches_mmc(c):
    """500k customers at rho = 0.7: sd of the relative error ~1.7%."""
    a, s = mmc_inputs(2024, 500_000, 0.7, c)
    assert kiefer_wolfowitz(a, s, c).mean() == pytest.approx(mmc(0.7 * c, 1.0, c).wq, rel=0.05)


def test_kw_wait_quantile_matches_mmc():
    c = 4
    a, s = mmc_inputs(11, 300_000, 0.7, c)
    waits = kiefer_wolfowitz(a, s, c)
    for q in (0.9, 0.99):
        assert np.quantile(waits, q) == pytest.approx(mmc_wait_quantile(0.7 * c, 1.0, c, q), rel=0.07)
    assert np.mean(waits > 0) == pytest.approx(erlang_c(c, 0.7 * c), rel=0.05)


@pytest.mark.parametrize("name, scv", [("deterministic", 0.0), ("gamma k=2", 0.5), ("exponential", 1.0),
                                       ("hyperexp", 4.0)])
def test_lindley_mean_wait_matches_pollaczek_khinchine(name, scv):
    rng = np.random.default_rng(5)
    n, lam, es = 2_000_000, 0.6, 1.0
    a = rng.exponential(1 / lam, n)
    if scv == 0:
        s = np.full(n, es)
    elif scv == 4.0:  # balanced-means H2 with scv 4
        p = 0.5 * (1 + math.sqrt(3 / 5))
        s = np.where(rng.random(n) < p, rng.exponential(es / (2 * p), n), rng.exponential(es / (2 * (1 - p)), n))
    else:
        s = rng.gamma(1 / scv, es * scv, n)
    assert s.var() / s.mean() ** 2 == pytest.approx(scv, abs=0.05)
    assert lindley(a, s).mean() == pytest.approx(mg1(lam, es, scv).wq, rel=0.05)


# ------------------------------------------------------------ properties

times = st.floats(0, 1e3, allow_nan=False, allow_infinity=False)


@st.composite
def runs(draw, elements):
    n = draw(st.integers(0, 40))
    return draw(st.lists(elements, min_size=n, max_size=n)), draw(st.lists(elements, min_size=n, max_size=n))


@given(runs(times), st.integers(1, 6))
def test_waits_nonnegative(run, c):
    a, s = run
    assert np.all(lindley(a, s) >= 0)
    assert np.all(kiefer_wolfowitz(a, s, c) >= 0)


# Multiples of 1/16 below 2^10: all sums are exact, so the properties hold
# with no rounding slack at all.
dyadic = st.integers(0, 64).map(lambda k: k / 16)


@given(runs(dyadic), st.integers(1, 6))
def test_more_servers_never_wait_longer(run, c):
    a, s = run
    fewer, more = kiefer_wolfowitz(a, s, c), kiefer_wolfowitz(a, s, c + 1)
    assert np.all(more <= fewer)
    np.testing.assert_array_equal(fewer, brute_force_waits(a, s, c))


@given(runs(dyadic))
def test_exact_agreement_on_exact_arithmetic(run):
    a, s = run
    ref = lindley_loop(a, s)
    np.testing.assert_array_equal(lindley(a, s), ref)
    np.testing.assert_array_equal(kiefer_wolfowitz(a, s, 1), ref)


def test_block_size_does_not_change_results(monkeypatch):
    a, s = mmc_inputs(9, 1000, 0.9, 1)
    ref = lindley(a, s)
    for block in (1, 7, 1000, 4096):
        monkeypatch.setattr(an, "_BLOCK", block)
        np.testing.assert_allclose(lindley(a, s), ref, rtol=1e-12, atol=1e-12)


def test_limited_fifo_is_the_plain_fifo_without_a_limit_and_erlang_b_without_a_queue():
    from sim.analytic import departures_fifo, departures_fifo_limited

    rng = np.random.default_rng(7)
    t = np.cumsum(rng.exponential(1.0, 20000))
    s = rng.exponential(2.5, 20000)
    end, refused = departures_fifo_limited(t, s, 3, float("inf"))
    assert refused == 0 and np.allclose(end, departures_fifo(t, s, 3)[1])
    end, refused = departures_fifo_limited(t, s, 3, 0)  # M/M/3/3: refusals follow Erlang's loss formula
    a, c = 2.5, 3
    erlang_b = (a ** c / math.factorial(c)) / sum(a ** k / math.factorial(k) for k in range(c + 1))
    assert refused / t.size == pytest.approx(erlang_b, abs=0.015)
    assert np.isnan(end).sum() == refused
