"""Q10 lab: the fallback chain against strict dependencies, closed forms, controls and claim regions."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.contract import ParamError
from sim.dependencies import parallel, series
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q10")
SMALL = dict(requests=20000, incident_s=10.0)


def run(seed=3, **kw):
    return LAB.run(seed, **{**SMALL, **kw})


def inside(r, arm, key, value):
    lo, hi = r.intervals[arm][key]
    return lo <= value <= hi


@pytest.fixture(scope="module")
def default():
    return LAB.run(0)


@pytest.fixture(scope="module")
def verdicts():
    return {v.id: v for v in LAB.check(0)}


def test_strict_availability_interval_contains_the_series_closed_form():
    # failures frequent enough that the interval is tight: U ~ 1.5% + 2.4% + 1%
    r = run(features_mtbf_h=200.0, features_mttr_h=3.0, large_model_mtbf_h=40.0, large_model_mttr_h=1.0,
            catalog_mttr_h=5.0, requests=60000)
    expected = 100 * series([200 / 203, 40 / 41, 500 / 505])
    assert r.metrics["baseline"]["closed_form_availability_pct"] == pytest.approx(expected)
    assert inside(r, "baseline", "availability_pct", expected)


@pytest.mark.parametrize("failures", ["exponential", "weibull"])
def test_fallback_availability_interval_contains_the_parallel_closed_form(failures):
    # only the two models fail, the chain stops at the small model: up if either model is up
    r = run(failures=failures, fallbacks="small", features_mtbf_h=1e5, features_mttr_h=0.01,
            large_model_mtbf_h=20.0, large_model_mttr_h=2.0, small_model_mtbf_h=20.0, small_model_mttr_h=3.0,
            requests=60000, horizon_years=40.0)
    expected = 100 * (1e5 / (1e5 + 0.01)) * parallel([20 / 22, 20 / 23])
    assert r.metrics["pattern"]["closed_form_availability_pct"] == pytest.approx(expected)
    assert inside(r, "pattern", "availability_pct", expected)
    assert r.metrics["pattern"]["availability_pct"] > r.metrics["baseline"]["availability_pct"] + 5


def test_control_no_failures_no_degradation_and_both_arms_equal():
    r = run(failures="none")
    b, p = r.metrics["baseline"], r.metrics["pattern"]
    for key in ("availability_pct", "answer_quality_pct", "incident_availability_pct", "incident_p99_ms"):
        assert b[key] == p[key], key
    assert p["availability_pct"] == 100.0 and p["share_large_pct"] == 100.0
    assert np.isnan(p["degradation_rate_pct"]) and "nothing to fall back" in r.reasons["pattern"]["degradation_rate_pct"]
    assert np.isnan(r.metrics["comparison"]["fallback_extra_latency_ms"])


def test_without_fallbacks_the_pattern_is_the_strict_arm():
    r = run(fallbacks="none")
    for key in ("availability_pct", "answer_quality_pct", "incident_availability_pct"):
        assert r.metrics["pattern"][key] == r.metrics["baseline"][key], key


def test_each_tier_adds_availability_and_function():
    keys = ("availability_pct", "functionality_pct")
    runs = [run(fallbacks=f, features_mttr_h=8.0) for f in ("small", "small+cache", "small+cache+popular")]
    for a, b in zip(runs, runs[1:]):
        for key in keys:
            assert b.metrics["pattern"][key] >= a.metrics["pattern"][key], key
    shares = sum(runs[-1].metrics["pattern"][f"share_{t}_pct"] for t in ("large", "small", "cache", "popular"))
    assert shares == pytest.approx(runs[-1].metrics["pattern"]["availability_pct"])


def test_older_cache_entries_answer_more_but_worse():
    young, old = run(max_cache_age_s=600.0, features_mttr_h=4.0), run(max_cache_age_s=28800.0, features_mttr_h=4.0)
    assert old.metrics["pattern"]["share_cache_pct"] > young.metrics["pattern"]["share_cache_pct"]
    assert old.metrics["pattern"]["accuracy_cache_pct"] < young.metrics["pattern"]["accuracy_cache_pct"]


def test_fallback_latency_is_the_timeout_in_a_hang_and_the_error_time_when_failing_fast():
    hang = run(large_timeout_ms=80.0, max_concurrent_calls=10000)
    extra = hang.metrics["comparison"]["fallback_extra_latency_ms"]
    assert 80.0 < extra < 80.0 + 5.0  # timeout + small model - large model (both ~1 ms or less)
    err = run(outage_mode="error", error_ms=7.0)
    assert 7.0 < err.metrics["comparison"]["fallback_extra_latency_ms"] < 7.0 + 5.0


def test_bulkhead_rejects_hung_calls_beyond_its_permits_and_falls_back_sooner():
    # 100 req/s into a 1 s hang keeps ~100 calls waiting: 25 permits reject the rest at once
    tight = run(rate_rps=100.0, large_timeout_ms=1000.0)
    wide = run(rate_rps=100.0, large_timeout_ms=1000.0, max_concurrent_calls=10000)
    assert tight.metrics["pattern"]["bulkhead_rejected"] > 0 and wide.metrics["pattern"]["bulkhead_rejected"] == 0
    assert tight.metrics["comparison"]["fallback_extra_latency_ms"] < 0.6 * wide.metrics["comparison"][
        "fallback_extra_latency_ms"]


def test_accuracy_loss_is_measured_on_the_real_models(default):
    from sim.models import get_model

    loss = 100 * (get_model("mlp").accuracy - get_model("logreg").accuracy)
    assert default.metrics["comparison"]["fallback_accuracy_loss_pct"] == pytest.approx(loss)
    assert default.metrics["pattern"]["accuracy_popular_pct"] < 20  # the majority class of ten digits


def test_the_replay_must_fit_its_request_cap():
    with pytest.raises(ParamError, match="incident_s"):
        LAB.settings({"rate_rps": 2000.0, "incident_s": 600.0})


def test_claim_regions(verdicts):
    v = verdicts
    assert v["q10.availability_strict"].verdict == "conditional"
    assert "catalog_mttr_h = 4" in v["q10.availability_strict"].region
    assert v["q10.availability_fallback"].verdict == "conditional"
    assert "features_mttr_h = 2" in v["q10.availability_fallback"].region
    assert v["q10.functionality"].region.endswith("features_mttr_h = 2 and max_cache_age_s ≥ 3600")
    assert v["q10.fallback_share"].verdict == "conditional"
    assert "outage_mode = error" in v["q10.fallback_latency"].region
    assert "large_timeout_ms ≤ 40" in v["q10.fallback_latency"].region
    assert v["q10.fallback_accuracy"].verdict == "holds" and v["q10.fallback_accuracy"].evidence == "measured"
    for claim in v.values():
        assert claim.control["vanishes"], claim.id


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"requests": (1000, 5000), "horizon_years": (1.0, 30.0),
                                      "incident_s": (10.0, 20.0), "rate_rps": (1.0, 300.0)}))
def test_random_valid_settings_run_or_are_refused_in_one_line(values):
    check_run(LAB, values)
