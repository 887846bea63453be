"""sim.tracing against its references: OpenTelemetry's TraceIdRatioBased sampler and Jaeger UI's critical path."""
from __future__ import annotations

import numpy as np
import pytest

from sim.tracing import (
    TRACE_ID_LIMIT, Span, TraceIdRatioBased, critical_path, critical_path_self_time, random_trace_ids,
)


# ---------------------------------------------------------------- TraceIdRatioBased
def test_bound_is_otel_python_formula():
    # opentelemetry-python: get_bound_for_rate(rate) = round(rate * (TRACE_ID_LIMIT + 1))
    for rate in (0.0, 1e-4, 0.01, 0.1, 0.5, 1.0):
        assert TraceIdRatioBased(rate).bound == round(rate * (TRACE_ID_LIMIT + 1))
    assert TraceIdRatioBased(0.5).bound == 1 << 63


def test_decision_is_a_strict_threshold_on_the_low_64_bits():
    s = TraceIdRatioBased(0.25)
    b = s.bound
    assert s.should_sample(b - 1) and not s.should_sample(b)
    # the high 64 bits of a 128-bit id do not matter
    assert s.should_sample((0xDEADBEEF << 64) | (b - 1))
    assert not s.should_sample((0xDEADBEEF << 64) | b)
    ids = np.array([0, b - 1, b, TRACE_ID_LIMIT], dtype=np.uint64)
    assert s.sample(ids).tolist() == [True, True, False, False]


def test_rate_zero_and_one():
    ids = random_trace_ids(np.random.default_rng(1), 10_000)
    assert not TraceIdRatioBased(0.0).sample(ids).any()
    assert TraceIdRatioBased(1.0).sample(ids).all()
    assert TraceIdRatioBased(1.0).should_sample(TRACE_ID_LIMIT)


def test_vectorised_matches_scalar_and_sets_are_nested():
    ids = random_trace_ids(np.random.default_rng(2), 2000)
    low, high = TraceIdRatioBased(0.03), TraceIdRatioBased(0.3)
    vec = low.sample(ids)
    assert vec.tolist() == [low.should_sample(int(i)) for i in ids]
    # a trace sampled at a lower rate is sampled at every higher rate (consistent decisions)
    assert np.all(high.sample(ids)[vec])


def test_sampled_fraction_matches_rate():
    ids = random_trace_ids(np.random.default_rng(3), 200_000)
    for rate in (0.01, 0.1, 0.5):
        frac = TraceIdRatioBased(rate).sample(ids).mean()
        sd = np.sqrt(rate * (1 - rate) / ids.size)
        assert abs(frac - rate) < 5 * sd


def test_rate_outside_unit_interval_is_refused():
    for bad in (-0.1, 1.01):
        with pytest.raises(ValueError, match="range"):
            TraceIdRatioBased(bad)
    assert TraceIdRatioBased(0.1).description == "TraceIdRatioBased{0.1}"


# ---------------------------------------------------------------- critical path (Jaeger UI)
def _sections(spans):
    return [(s.span_id, s.start, s.end) for s in critical_path(spans)]


def test_jaeger_docstring_example_sequential_children():
    # |-------------A--------------|
    #    |--B--|    |--C--|
    spans = [Span("A", None, 0, 100), Span("B", "A", 10, 30), Span("C", "A", 50, 70)]
    assert _sections(spans) == [("A", 70, 100), ("C", 50, 70), ("A", 30, 50), ("B", 10, 30), ("A", 0, 10)]
    assert critical_path_self_time(spans) == {"A": 60, "B": 20, "C": 20}


def test_parallel_children_only_the_last_finishing_is_critical():
    spans = [Span("A", None, 0, 100), Span("B", "A", 10, 60), Span("C", "A", 10, 90)]
    assert critical_path_self_time(spans) == {"A": 20, "B": 0, "C": 80}


def test_walk_back_needs_strictly_earlier_end():
    # B ends exactly when C starts: Jaeger's findLastFinishingChildSpan uses childEnd < returning start
    spans = [Span("A", None, 0, 100), Span("B", "A", 10, 50), Span("C", "A", 50, 90)]
    assert critical_path_self_time(spans) == {"A": 60, "B": 0, "C": 40}


def test_nested_tree():
    spans = [Span("root", None, 0, 100), Span("mid", "root", 10, 90), Span("leaf", "mid", 20, 80),
             Span("side", "root", 5, 40)]
    t = critical_path_self_time(spans)
    assert t == {"root": 20, "mid": 20, "leaf": 60, "side": 0}
    assert sum(t.values()) == 100  # the critical path covers the root span exactly


def test_overflowing_children_are_clipped_or_dropped():
    # sanitizeOverFlowingChildren: a child ending after its parent is truncated at the parent's end,
    # a child starting after the parent ended is dropped (with its own children)
    spans = [Span("A", None, 0, 100), Span("B", "A", 60, 130), Span("D", "A", 120, 150), Span("E", "D", 125, 140)]
    t = critical_path_self_time(spans)
    assert t["B"] == 40 and t["A"] == 60 and t["D"] == 0 and t["E"] == 0
    spans = [Span("A", None, 10, 100), Span("B", "A", 0, 50)]  # starts before the parent: clipped to 10
    assert critical_path_self_time(spans) == {"A": 50, "B": 40}


def test_one_root_required():
    with pytest.raises(ValueError, match="root"):
        critical_path([Span("A", None, 0, 1), Span("B", None, 0, 1)])


# ---------------------------------------------------------------- naming a culprit: ShiftDetector and friends
from scipy import stats  # noqa: E402

from sim.tracing import ShiftDetector, lowest_sufficient, rate_for_events  # noqa: E402


def test_mean_z_matches_a_direct_computation():
    rng = np.random.default_rng(4)
    base, post = rng.normal(10, 2, (50, 3)), rng.normal(10, 2, (30, 3))
    post[:, 1] += 3.0
    det = ShiftDetector(post, base, "mean")
    for nb in (2, 7, 50):
        for k in (1, 5, 30):
            m, v = base[:nb].mean(axis=0), base[:nb].var(axis=0, ddof=1)
            want = (post[:k].mean(axis=0) - m) / np.sqrt(v * (1 / k + 1 / nb))
            assert det.z(nb)[k - 1] == pytest.approx(want)
    ok, arg = det.alarms(50, 4.0, 5)
    assert arg[-1] == 1 and ok[-1] and not ok[:4].any()  # the shifted column, and never before min_k


def test_variance_floor_keeps_a_constant_baseline_finite():
    det = ShiftDetector(np.full((4, 1), 1.1), np.ones((10, 1)), "mean")
    # floor (0.05 * 1)^2: z = 0.1 / sqrt(0.0025 * (1/k + 1/10))
    assert det.z(10)[3, 0] == pytest.approx(0.1 / np.sqrt(0.0025 * (1 / 4 + 1 / 10)))


def test_count_z_matches_the_laplace_formula():
    base = np.zeros((100, 2))
    base[:3, 0] = 1  # 3 events in 100 baseline traces
    post = np.zeros((20, 2))
    post[::2, 0] = 1
    det = ShiftDetector(post, base, "count")
    q = 4 / 102
    for k in (1, 10, 20):
        o = post[:k, 0].sum()
        assert det.z(100)[k - 1, 0] == pytest.approx((o - k * q) / np.sqrt(k * q * (1 - q) + 1))
    with pytest.raises(ValueError):
        det.z(1)


def test_first_alarm_matches_a_loop():
    rng = np.random.default_rng(5)
    base, post = rng.normal(0, 1, (40, 4)), rng.normal(0, 1, (200, 4))
    post[:, 2] += np.linspace(0, 2, 200)  # a slowly growing shift
    det = ShiftDetector(post, base, "mean")
    times = np.cumsum(rng.exponential(1.0, 200))
    ok, arg = det.alarms(40, 3.0, 5)
    for start, end in ((0.0, np.inf), (30.0, 120.0), (150.0, 400.0), (0.0, 3.0)):
        want = None
        first_in = max(int(np.sum(times <= start)), 1)  # the reader first sees this many traces
        for k in range(first_in, int(np.sum(times <= end)) + 1):
            if ok[k - 1]:
                want = (k, int(arg[k - 1]))
                break
        assert det.first_alarm(40, 3.0, 5, times, start, end) == want
    assert det.first_alarm(40, 3.0, 5) == ((int(np.argmax(ok)) + 1, int(arg[np.argmax(ok)])) if ok.any() else None)


def test_rate_for_events_is_the_poisson_quantile():
    for k, window, f, prob in ((1, 60.0, 1.0, 0.95), (5, 600.0, 0.01, 0.95), (40, 30.0, 0.2, 0.5)):
        rate = rate_for_events(k, window, f, prob)
        # P(at least k events in the window) = prob at exactly that rate
        assert stats.poisson.sf(k - 1, rate * f * window) == pytest.approx(prob)
    assert rate_for_events(1, 10.0) == pytest.approx(-np.log(0.05) / 10)  # first arrival: exponential
    assert np.isnan(rate_for_events(np.nan, 10.0))


def test_lowest_sufficient_by_brute_force():
    rng = np.random.default_rng(6)
    for _ in range(200):
        values = rng.permutation(np.arange(1.0, 9.0))
        ok = rng.random(8) < 0.7
        good = [v for v in values if all(o for w, o in zip(values, ok) if w >= v)]
        want = min(good) if good else np.nan
        got = lowest_sufficient(values, ok)
        assert (np.isnan(want) and np.isnan(got)) or got == want
