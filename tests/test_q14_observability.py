"""Q14 lab: tracing vs logs for diagnosis; closed forms, mechanisms that must move metrics, random settings."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs.checks import check_lab
from labs.contract import ParamError
from labs.q14_observability import LAB, TREE, UNINSTRUMENTED_ORDER
from tests.lab_fuzz import check_run, settings_strategy


@pytest.fixture(scope="module")
def default():
    return LAB.run(seed=0)


def test_contract():
    assert check_lab(LAB) == []


def test_tracing_finds_the_culprit_and_beats_logs_at_defaults(default):
    m = default.metrics
    assert m["pattern"]["culprit_named"] == 1.0 and default.extras["named"] == "feature_store"
    assert m["pattern"]["mttr_min"] < m["baseline"]["mttr_min"] and m["comparison"]["mttr_reduction_x"] > 1
    assert m["pattern"]["trace_coverage_pct"] == 100.0  # every service instrumented: every trace is whole
    assert math.isnan(m["baseline"]["trace_coverage_pct"]) and "no traces" in default.reasons["baseline"]["trace_coverage_pct"]


def test_logs_mttr_closed_form(default):
    p, m = default.params, default.metrics["baseline"]
    position = TREE.breadth_first().index(p["faulty_service"]) + 1  # topology order
    assert m["services_examined"] == position
    assert m["mttr_min"] == pytest.approx(p["detect_min"] + position * p["examine_min"] + p["fix_min"])


def test_tracing_mttr_closed_form_when_named_on_arrival(default):
    p, m = default.params, default.metrics["pattern"]
    assert m["trace_wait_min"] == 0.0  # at 50 req/s and 1% the evidence is in before the alert fires
    assert m["mttr_min"] == pytest.approx(p["detect_min"] + p["trace_review_min"] + p["fix_min"])


def test_time_to_name_scales_as_one_over_sampling_rate(default):
    df = default.series["sampling"]
    df = df[df.traces == df.traces.iloc[-1]]  # the same k-th trace at every rate (common random numbers)
    prod = df.minutes * df.sampling_pct
    assert len(df) > 5 and np.allclose(prod, prod.iloc[0])


def test_overhead_comes_from_the_measured_span_cost(default):
    m, iv = default.metrics, default.intervals["comparison"]
    assert m["pattern"]["recorded_span_us"] > m["pattern"]["unsampled_span_us"] > 0
    lo, hi = iv["tracing_overhead_ms"]
    assert 0 < lo <= m["comparison"]["tracing_overhead_ms"] <= hi
    # a traced request records >= 3 spans on its critical path (gateway server span, a client + server pair)
    assert m["comparison"]["tracing_overhead_ms"] >= 3 * m["pattern"]["recorded_span_us"] / 1e3


def test_batch_export_keeps_the_collector_round_trip_off_the_request_path():
    near = LAB.run(0, export_rtt_ms=0.1).metrics["comparison"]
    far = LAB.run(0, export_rtt_ms=2.0).metrics["comparison"]
    assert near["tracing_overhead_ms"] == far["tracing_overhead_ms"]  # batch: the RTT is not paid in-request
    assert far["sync_export_overhead_ms"] > 5 * near["sync_export_overhead_ms"]  # 20x the round trip
    simple = LAB.run(0, export_mode="simple", export_rtt_ms=2.0).metrics["comparison"]
    assert simple["tracing_overhead_ms"] == pytest.approx(far["sync_export_overhead_ms"])
    assert simple["tracing_overhead_ms"] > 5.0  # the seed's 5-15 ms needs synchronous export


def test_full_sampling_makes_every_request_pay():
    m = LAB.run(0, sampling_rate_pct=100.0).metrics["comparison"]
    assert m["mean_overhead_ms"] == pytest.approx(m["tracing_overhead_ms"])
    low = LAB.run(0, sampling_rate_pct=0.01, span_cost_us=200.0, unsampled_span_cost_us=1.0).metrics["comparison"]
    assert low["mean_overhead_ms"] < 0.05 * low["tracing_overhead_ms"]


def test_sampling_needed_falls_with_traffic():
    needed = [LAB.run(0, rate_rps=r).metrics["pattern"]["sampling_needed_pct"] for r in (0.2, 5.0, 500.0)]
    assert needed[0] > needed[1] > needed[2]


def test_too_few_traces_fall_back_to_the_log_search():
    r = LAB.run(0, rate_rps=1.0, sampling_rate_pct=0.1)
    p, m = r.params, r.metrics
    assert m["pattern"]["culprit_named"] == 0.0 and r.extras["named"] is None
    wasted = p["diagnosis_window_min"] - p["detect_min"]
    assert m["pattern"]["mttr_min"] == pytest.approx(m["baseline"]["mttr_min"] + wasted)


def test_uninstrumented_culprit_is_blamed_on_its_caller():
    r = LAB.run(0, uninstrumented_services=UNINSTRUMENTED_ORDER.index("feature_store") + 1)
    m, p = r.metrics["pattern"], r.params
    assert r.extras["named"] == "features" and m["culprit_named"] == 0.0
    assert m["trace_coverage_pct"] < 100  # a request through an uninstrumented service leaves a gap
    assert math.isnan(m["sampling_needed_pct"]) and "emits no spans" in r.reasons["pattern"]["sampling_needed_pct"]
    # features, then its subtree: feature_store is next
    assert m["mttr_min"] == pytest.approx(p["detect_min"] + p["trace_review_min"] + 2 * p["examine_min"] + p["fix_min"])


def test_no_baseline_traces_is_a_reason_not_a_failure():
    r = LAB.run(0, rate_rps=0.01, baseline_window_min=1.0)
    assert math.isnan(r.metrics["pattern"]["traces_to_name"])
    assert "baseline window" in r.reasons["pattern"]["traces_to_name"]
    assert next(c for c in r.claims if c.id == "q14.sampling").verdict == "not_measured"


def test_error_fault_is_found_by_error_origins():
    r = LAB.run(0, fault_mode="error", faulty_service="db", fault_fraction=1.0)
    assert r.extras["named"] == "db"
    assert r.metrics["baseline"]["error_rate_pct"] > 20  # 30% of requests reach the db


def test_rarer_faults_need_more_traces():
    t = [LAB.run(0, fault_fraction=f).metrics["pattern"]["traces_to_name"] for f in (1.0, 0.05, 0.01)]
    assert t[0] < t[1] < t[2]


def test_alerts_bottom_up_goes_straight_to_the_culprit():
    r = LAB.run(0, log_search="alerts_bottom_up")
    assert r.extras["log_order"][0] == "feature_store" and r.metrics["baseline"]["services_examined"] == 1.0
    assert LAB.run(0, log_search="alerts_top_down").extras["log_order"][:2] == ["features", "feature_store"]


def test_refusals_name_the_parameter():
    with pytest.raises(ParamError, match="faulty_service"):
        LAB.run(0, faulty_service="mainframe")
    with pytest.raises(ParamError, match="uninstrumented_services"):
        LAB.run(0, uninstrumented_services=len(UNINSTRUMENTED_ORDER) + 1)
    with pytest.raises(ParamError, match="^parameter diagnosis_window_min: 5 .*detect_min=30"):
        LAB.run(0, diagnosis_window_min=5.0, detect_min=30.0)


def _repair(values):  # most draws should pass the rule: the window opens no earlier than the alert
    if values["diagnosis_window_min"] < values["detect_min"] and values["requests"] % 4:
        values["diagnosis_window_min"] = min(240.0, values["detect_min"])
    return values


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"requests": (1000, 5000)}, repair=_repair))
def test_random_valid_settings_run_or_are_refused_cleanly(values):
    check_run(LAB, values)


def test_trace_coverage_falls_as_services_go_uninstrumented():
    cov = [LAB.run(0, requests=4000, uninstrumented_services=k).metrics["pattern"]["trace_coverage_pct"]
           for k in (0, 1, 2, 7)]
    assert cov[0] == 100.0 and cov[1] < 100.0  # the cache sits on every path: one gap breaks every trace
    assert all(a >= b for a, b in zip(cov, cov[1:]))


def test_overhead_region_is_pinned():
    # only a synchronous export that waits on a collector round trip reaches the seed's 5-15 ms
    from labs.claims import SweepRunner, check_claim

    v = check_claim(LAB.question.claim("q14.overhead"), SweepRunner(LAB, 0, LAB.validate({})))
    assert v.verdict == "conditional" and v.region.startswith("holds only when export_rtt_ms")
    assert all(c["verdict"] != "holds" for c in v.grid if c["export_mode"] == "batch")
    assert v.control["vanishes"] is True
