"""Q16 lab: train-serve skew, point-in-time vs naive joins, online-store latency, reuse; regions and a fuzz test."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.contract import ParamError
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q16")
SMALL = dict(users=800, requests=2000)


def run(seed=0, **kw):
    return LAB.run(seed, **{**SMALL, **kw})


@pytest.fixture(scope="module")
def base():
    return run()


def test_separate_serving_code_loses_accuracy_and_the_shared_definition_does_not(base):
    b, p = base.metrics["baseline"], base.metrics["pattern"]
    assert b["offline_accuracy_pct"] == p["offline_accuracy_pct"]  # one trained model, same requests
    assert base.intervals["baseline"]["train_serve_skew_pct"][0] > 0
    assert p["train_serve_skew_pct"] == 0 and p["online_accuracy_pct"] == p["offline_accuracy_pct"]
    ratio = 1 - b["online_accuracy_pct"] / b["offline_accuracy_pct"]
    assert b["train_serve_skew_pct"] == pytest.approx(100 * ratio)  # the seed's formula


def test_the_naive_join_inflates_offline_accuracy_and_the_inflation_does_not_survive_serving(base):
    n = base.metrics["naive_join"]
    assert base.intervals["naive_join"]["leakage_inflation_pp"][0] > 0
    assert n["offline_accuracy_pct"] == pytest.approx(base.metrics["pattern"]["offline_accuracy_pct"]
                                                      + n["leakage_inflation_pp"])
    assert n["online_accuracy_pct"] < n["offline_accuracy_pct"]


def test_calendar_week_hurts_most_early_in_the_week():
    mon = run(request_day="mon", serving_skew="window").metrics["baseline"]["train_serve_skew_pct"]
    sun = run(request_day="sun", serving_skew="window").metrics["baseline"]["train_serve_skew_pct"]
    assert mon > sun + 5  # on Monday the calendar week holds no complete day; on Sunday six of seven


def test_control_identical_definitions_give_no_skew():
    r = run(serving_skew="none")
    b = r.metrics["baseline"]
    assert b["train_serve_skew_pct"] == 0 and b["online_accuracy_pct"] == b["offline_accuracy_pct"]


def test_late_materialization_makes_even_a_shared_definition_skew():
    late = run(materialize_delay_h=60.0).metrics["pattern"]["train_serve_skew_pct"]
    assert late > 0.5


def test_the_online_store_with_a_cache_is_faster_than_on_demand_queries(base):
    b, p = base.metrics["baseline"], base.metrics["pattern"]
    assert base.intervals["pattern"]["online_p95_ms"][1] < base.intervals["baseline"]["online_p95_ms"][0]
    assert 0 < p["cache_hit_pct"] < 100 and p["p50_ms"] < b["p50_ms"]
    nocache = run(cache_ttl_s=0.0).metrics["pattern"]
    assert nocache["cache_hit_pct"] == 0 and nocache["online_p95_ms"] > p["online_p95_ms"]


def test_a_loaded_store_queues_and_its_p95_grows():
    # 4,000 req/s of 5 ms reads (mean 5.6 ms), no cache: about 22 connections' worth of work for 8, so a queue
    # builds even though singleflight folds concurrent misses of hot keys into one read
    light = run(cache_ttl_s=0.0, store_read_ms=5.0, rate_rps=500.0).metrics["pattern"]["online_p95_ms"]
    heavy = run(cache_ttl_s=0.0, store_read_ms=5.0, rate_rps=4000.0).metrics["pattern"]["online_p95_ms"]
    assert heavy > 3 * light


def test_reuse_needs_more_than_one_model_and_a_registry(base):
    assert base.metrics["pattern"]["feature_reuse_pct"] > base.metrics["baseline"]["feature_reuse_pct"]
    one = run(models=1).metrics
    assert one["pattern"]["feature_reuse_pct"] == 0 and one["baseline"]["feature_reuse_pct"] == 0
    same = run(team_variation_pct=0.0).metrics
    assert same["pattern"]["feature_reuse_pct"] == same["baseline"]["feature_reuse_pct"]


def test_same_seed_same_numbers_and_other_seed_other_log():
    a, b = run(), run()
    assert a.to_dict()["metrics"] == b.to_dict()["metrics"]
    assert run(seed=1).metrics["baseline"]["offline_accuracy_pct"] != a.metrics["baseline"]["offline_accuracy_pct"]


def test_refusals_name_the_parameter():
    with pytest.raises(ParamError, match="request_day"):
        LAB.run(0, request_day="someday")
    with pytest.raises(ParamError, match="spell_days"):
        LAB.run(0, spell_days=0.5)


@pytest.fixture(scope="module")
def verdicts():
    return {v.id: v for v in LAB.check(0)}


@pytest.mark.slow
def test_claim_regions(verdicts):
    base = verdicts["q16.skew_baseline"]
    assert base.verdict == "conditional"
    cells = {(c["request_day"], c["spell_days"]): c["verdict"] for c in base.grid}
    assert cells[("wed", 30.0)] == "holds" and cells[("any", 14.0)] == "fails" and cells[("sat", 14.0)] == "fails"
    assert {c["verdict"] for c in base.grid if c["request_day"] == "sat"} == {"fails"}
    store = verdicts["q16.skew_store"]
    assert store.verdict == "conditional"
    assert all(c["verdict"] == "holds" for c in store.grid if c["materialize_delay_h"] == 0)
    assert all(c["verdict"] != "holds" for c in store.grid if c["materialize_delay_h"] == 60)
    lat = verdicts["q16.online_p95"]
    assert lat.verdict == "conditional"
    cell = {(c["store_read_ms"], c["cache_ttl_s"]): c["verdict"] for c in lat.grid}
    assert cell[(1.0, 0.0)] == "holds" and cell[(5.0, 30.0)] == "holds" and cell[(5.0, 0.0)] == "fails"
    reuse = verdicts["q16.reuse"]
    assert reuse.verdict == "conditional" and reuse.evidence == "assumed"
    r = {(c["models"], c["feature_pool"]): c["verdict"] for c in reuse.grid}
    assert r[(5, 16)] == "holds" and r[(2, 32)] == "fails"


@pytest.mark.slow
def test_controls_remove_the_effect(verdicts):
    for v in verdicts.values():
        if v.control:
            assert v.control["vanishes"], v.id


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"users": (200, 600), "requests": (1000, 2000), "rate_rps": (10.0, 3000.0)}))
def test_random_settings_run_or_are_refused_cleanly(values):
    r = check_run(LAB, values)
    if r is not None:
        assert np.isfinite(r.metrics["pattern"]["offline_accuracy_pct"])
