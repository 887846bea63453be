"""sim.dependencies: alternating renewal failures against the two-state availability closed forms."""
import math

import numpy as np
import pytest

from sim.dependencies import Dependency, Timeline, combine, parallel, series


@pytest.mark.parametrize("dist,shape", [("exponential", 1.0), ("weibull", 0.7), ("weibull", 2.5)])
def test_time_average_matches_mtbf_over_mtbf_plus_mttr(dist, shape):
    d = Dependency("x", 100.0, 2.0, dist, shape)
    tl = d.timeline(np.random.default_rng(3), 2e6)  # about 20k cycles
    assert tl.availability() == pytest.approx(d.availability, abs=4e-4)
    assert tl.failures == pytest.approx(2e6 / 102.0, rel=0.05)


def test_weibull_keeps_the_means():
    d = Dependency("w", 10.0, 1.0, "weibull", 0.5)
    x = d._draw(np.random.default_rng(0), 10.0, 400_000)
    assert x.mean() == pytest.approx(10.0, rel=0.02)
    assert np.std(x) > 1.5 * x.mean()  # shape < 1: heavier spread than exponential (cv 1)


def test_up_at_and_down_since_read_the_intervals():
    tl = Timeline(np.array([10.0, 30.0]), np.array([12.0, 35.0]), 50.0)
    t = np.array([0.0, 10.0, 11.9, 12.0, 31.0, 35.0, 49.0])
    assert tl.up_at(t).tolist() == [True, False, False, True, False, True, True]
    since = tl.down_since(t)
    assert since[1] == 10.0 and since[4] == 30.0 and np.isnan(since[0]) and np.isnan(since[3])
    assert tl.availability() == pytest.approx(1 - 7 / 50)
    assert Timeline.always_up(5.0).up_at([1.0, 2.0]).all()


def test_combine_is_exact_on_change_points():
    a = Timeline(np.array([1.0, 6.0]), np.array([4.0, 8.0]), 10.0)
    b = Timeline(np.array([3.0]), np.array([7.0]), 10.0)
    both_down = combine([a, b], lambda x, y: x | y)
    assert both_down.starts.tolist() == [3.0, 6.0] and both_down.ends.tolist() == [4.0, 7.0]
    either_down = combine([a, b], lambda x, y: x & y)
    assert either_down.starts.tolist() == [1.0] and either_down.ends.tolist() == [8.0]


def test_independent_series_and_parallel_follow_the_closed_forms():
    rng = np.random.default_rng(11)
    deps = [Dependency("a", 20.0, 4.0), Dependency("b", 30.0, 6.0), Dependency("c", 10.0, 1.0)]
    tls = [d.timeline(rng, 1e6) for d in deps]
    av = [d.availability for d in deps]
    ser = combine(tls, lambda *u: np.logical_and.reduce(u)).availability()
    par = combine(tls, lambda *u: np.logical_or.reduce(u)).availability()
    assert ser == pytest.approx(series(av), abs=5e-3)
    assert 1 - par == pytest.approx(1 - parallel(av), rel=0.1)  # about 2.5e-3 unavailable: a relative check
    assert series(av) == pytest.approx(math.prod(av))
    assert parallel([0.9, 0.9]) == pytest.approx(0.99)


def test_refuses_nonsense():
    for bad in (dict(mtbf=0.0, mttr=1.0), dict(mtbf=1.0, mttr=-1.0), dict(mtbf=1.0, mttr=1.0, distribution="gamma"),
                dict(mtbf=1.0, mttr=1.0, distribution="weibull", shape=0.0)):
        with pytest.raises(ValueError):
            Dependency("x", **bad)


# ---------------------------------------------------------------- sim.fallback
def test_first_available_tier_or_minus_one():
    from sim.fallback import first_available

    masks = [[True, False, False, False], [True, True, False, False], [False, True, True, False]]
    assert first_available(masks).tolist() == [0, 1, 2, -1]


def test_cached_answer_age_adds_an_exponential_gap_at_the_user_rate():
    from sim.fallback import cached_answer_age

    age = cached_answer_age(np.random.default_rng(0), np.full(200_000, 30.0), np.full(200_000, 0.1))
    assert age.min() >= 30.0 and (age - 30.0).mean() == pytest.approx(10.0, rel=0.02)


def test_tier_quality_from_predictions():
    from sim.fallback import tier_quality

    y = np.array([0, 0, 1, 1])
    large = {"y": y, "pred": np.array([0, 0, 1, 0]), "majority": 1}
    small = {"y": y, "pred": np.array([0, 1, 1, 0])}
    q = tier_quality(large, small)
    assert q["large"] == 0.75 and q["small"] == 0.5 and q["popular"] == 0.5
    assert q["stale"] == pytest.approx(0.75 * 0.5 + 0.25 * 0.5)  # P(pred = c) x P(y = c), summed
