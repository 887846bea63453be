"""Q14 lab: tracing vs logs for diagnosis; sanity checks, closed forms and parameters that must move metrics."""
from __future__ import annotations

import numpy as np
import pytest

from labs.contract import ParamError
from labs.q14_observability import LAB, TREE, UNINSTRUMENTED_ORDER


@pytest.fixture(scope="module")
def default():
    return LAB.run(seed=0)


def test_tracing_finds_the_culprit_and_beats_logs_at_defaults(default):
    m = default.metrics
    assert m["pattern"]["culprit_named"] == 1.0
    assert default.extras["named"] == "feature_store"
    assert m["pattern"]["mttr_min"] < m["baseline"]["mttr_min"]
    assert m["comparison"]["mttr_reduction_x"] > 1
    assert m["pattern"]["trace_coverage_pct"] == 100.0 and m["baseline"]["trace_coverage_pct"] == 0.0


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
    df = df[df.traces_needed == df.traces_needed.iloc[-1]]
    prod = df.time_to_name_min * df.sampling_pct
    assert len(df) > 5 and np.allclose(prod, prod.iloc[0])


def test_overhead_is_linear_in_span_cost_and_zero_without_it():
    zero = LAB.run(0, span_cost_us=0.0, unsampled_span_cost_us=0.0).metrics
    assert zero["comparison"]["tracing_overhead_ms"] == 0.0
    assert zero["pattern"]["p99_ms"] == zero["baseline"]["p99_ms"]  # common random numbers
    a = LAB.run(0, span_cost_us=100.0).metrics["comparison"]["tracing_overhead_ms"]
    b = LAB.run(0, span_cost_us=400.0).metrics["comparison"]["tracing_overhead_ms"]
    assert b == pytest.approx(4 * a, rel=0.02)
    # the critical path holds at least the gateway's span and one client+server pair per hop
    assert a >= 0.1 * 3


def test_full_sampling_makes_every_request_pay():
    m = LAB.run(0, sampling_rate_pct=100.0, span_cost_us=200.0).metrics["comparison"]
    assert m["mean_overhead_ms"] == pytest.approx(m["tracing_overhead_ms"])
    low = LAB.run(0, sampling_rate_pct=1.0, span_cost_us=200.0).metrics["comparison"]
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
    m = r.metrics["pattern"]
    assert r.extras["named"] == "features" and m["culprit_named"] == 0.0
    assert m["trace_coverage_pct"] == pytest.approx(100 * 7 / 11)
    assert np.isnan(m["sampling_needed_pct"])  # no rate names the right service
    p = r.params
    # the engineer examines features, then its subtree: feature_store is next
    assert m["mttr_min"] == pytest.approx(p["detect_min"] + p["trace_review_min"] + 2 * p["examine_min"] + p["fix_min"])


def test_error_fault_is_found_by_error_origins():
    r = LAB.run(0, fault_mode="error", faulty_service="db")
    assert r.extras["named"] == "db"
    assert r.metrics["baseline"]["error_rate_pct"] > 20  # 30% of requests reach the db


def test_rare_faults_need_more_traces():
    full = LAB.run(0, fault_fraction=1.0).metrics["pattern"]["traces_to_name"]
    rare = LAB.run(0, fault_fraction=0.02).metrics["pattern"]["traces_to_name"]
    assert rare > full


def test_alerts_bottom_up_goes_straight_to_the_culprit():
    r = LAB.run(0, log_search="alerts_bottom_up")
    assert r.extras["log_order"][0] == "feature_store"
    assert r.metrics["baseline"]["services_examined"] == 1.0
    top = LAB.run(0, log_search="alerts_top_down")
    assert top.extras["log_order"][:2] == ["features", "feature_store"]


def test_bad_choice_names_the_parameter():
    with pytest.raises(ParamError, match="faulty_service"):
        LAB.run(0, faulty_service="mainframe")
    with pytest.raises(ParamError, match="uninstrumented_services"):
        LAB.run(0, uninstrumented_services=len(UNINSTRUMENTED_ORDER) + 1)
