"""Q21 lab: the real API's measurements, the migration and retry models, their controls, regions and a fuzz test."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from sim.api_migration import live_versions_closed_form
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q21")
SMALL = dict(clients=200)


def run(seed=0, **kw):
    return LAB.run(seed, **{**SMALL, **kw})


def test_breakage_is_not_upgraded_at_cutoff_times_break_share():
    r = run()
    b, p = r.metrics["baseline"], r.metrics["pattern"]
    # hard cut-over: nobody has upgraded on release day, so every client the change set breaks is broken
    assert b["not_upgraded_at_cutoff_pct"] > 99
    assert b["client_breakage_pct"] == pytest.approx(b["break_share_pct"], abs=1.0)
    # the window: broken <= not upgraded at the sunset, and far below the cut-over
    assert p["client_breakage_pct"] <= p["not_upgraded_at_cutoff_pct"]
    assert p["client_breakage_pct"] < b["client_breakage_pct"] / 5


def test_break_share_is_measured_on_the_real_api_per_change():
    r = run()
    b = r.metrics["baseline"]
    assert b["break_add_optional_pct"] == 0 and b["break_rename_pct"] == 100 and b["break_all_pct"] == 100
    # tighten_range breaks clients that ask for top_k > 5: half of the 40% that send top_k
    lo, hi = r.intervals["baseline"]["break_tighten_range_pct"]
    assert lo <= 20 <= hi
    lo, hi = r.intervals["baseline"]["break_retype_pct"]
    assert lo <= 20 <= hi
    assert b["break_tighten_range+retype_pct"] > max(b["break_tighten_range_pct"], b["break_retype_pct"])
    assert b["malformed_reached_model"] == 0 and b["api_uptime_pct"] == 100
    lo, hi = r.intervals["baseline"]["validation_rejection_pct"]
    assert lo <= 2 <= hi


def test_more_version_pins_break_more_clients_under_retype():
    kw = dict(v2_changes="retype", clients=150)
    few, many = run(version_pin_share_pct=10.0, **kw), run(version_pin_share_pct=60.0, **kw)
    assert many.metrics["baseline"]["client_breakage_pct"] > 3 * few.metrics["baseline"]["client_breakage_pct"]


def test_longer_lag_and_shorter_window_break_more_in_the_pattern_arm():
    base = run().metrics["pattern"]["client_breakage_pct"]
    assert run(median_lag_days=120.0).metrics["pattern"]["client_breakage_pct"] > base
    assert run(window_days=30.0).metrics["pattern"]["client_breakage_pct"] > base
    blind = run(header_aware_pct=0.0).metrics["pattern"]["client_breakage_pct"]
    assert blind >= base


def test_versions_live_follows_the_closed_form():
    for w, i in ((180.0, 90.0), (100.0, 90.0), (0.0, 30.0), (365.0, 30.0)):
        r = run(window_days=w, release_interval_days=i)
        assert r.metrics["pattern"]["live_versions"] == live_versions_closed_form(w, i) == 1 + math.ceil(w / i)
        assert r.metrics["baseline"]["live_versions"] == 1


def test_keys_remove_duplicates_and_short_ttls_let_them_back():
    r = run()
    assert r.metrics["baseline"]["duplicate_predictions_pct"] > 0
    assert r.metrics["pattern"]["duplicate_predictions_pct"] == 0
    assert r.metrics["pattern"]["model_executions_per_request"] == 1
    # without keys, every retried request was predicted again (the server finished the original)
    assert r.metrics["baseline"]["duplicate_predictions_pct"] == pytest.approx(r.metrics["baseline"]["retried_pct"])
    short = run(key_ttl_s=0.2, timeout_over_p99=0.5)
    assert 0 < short.metrics["pattern"]["duplicate_predictions_pct"] < short.metrics["baseline"][
        "duplicate_predictions_pct"]
    assert short.metrics["pattern"]["key_ttl_over_horizon_x"] < 1


def test_control_timeout_far_above_latency_retries_nothing():
    r = run(timeout_over_p99=100.0)
    for arm in ("baseline", "pattern"):
        assert math.isnan(r.metrics[arm]["duplicate_predictions_pct"])
        assert "timed out" in r.reasons[arm]["duplicate_predictions_pct"]
        assert r.metrics[arm]["retried_pct"] == 0


def test_control_additive_change_and_zero_window_break_nobody_or_everybody_alike():
    add = run(v2_changes="add_optional")
    assert add.metrics["baseline"]["client_breakage_pct"] == add.metrics["pattern"]["client_breakage_pct"] == 0
    zero = run(window_days=0.0)
    assert zero.metrics["pattern"]["client_breakage_pct"] == zero.metrics["baseline"]["client_breakage_pct"]


def test_arms_share_draws():
    a, b = run(), run()
    assert a.metrics == b.metrics
    r = run(key_ttl_s=0.2)
    assert r.metrics["baseline"] == {**a.metrics["baseline"]}  # the key TTL only touches the pattern arm


@pytest.mark.slow
def test_claim_regions_and_controls():
    verdicts = {v.id: v for v in LAB.check(0)}
    cut = verdicts["q21.breakage_cutover"]
    assert cut.verdict == "conditional"
    cells = {c["v2_changes"]: c["verdict"] for c in cut.grid}
    assert cells["tighten_range+retype"] == "holds" and cells["rename"] == "fails" and cells["add_optional"] == "fails"
    grad = verdicts["q21.breakage_gradual"]
    assert grad.verdict == "conditional"
    g = {(c["window_days"], c["median_lag_days"]): c["verdict"] for c in grad.grid}
    assert g[(180.0, 30.0)] == "holds" and g[(0.0, 7.0)] == "fails" and g[(30.0, 180.0)] == "fails"
    live = verdicts["q21.versions_live"]
    v = {(c["window_days"], c["release_interval_days"]): c["measured"] for c in live.grid}
    assert all(v[(w, i)] == 1 + math.ceil(w / i) for w, i in v)
    dup = verdicts["q21.no_duplicates"]
    d = {(c["timeout_over_p99"], c["key_ttl_s"]): c["verdict"] for c in dup.grid}
    assert d[(1.0, 86400.0)] == "holds" and d[(0.5, 0.1)] == "fails"
    for vd in verdicts.values():
        assert vd.control["vanishes"], vd.id


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"requests": (200, 1500)},
                         fixed={"clients": 100, "top_k_share_pct": 40.0, "version_pin_share_pct": 20.0}))
def test_random_settings_run_or_are_refused_cleanly(values):
    r = check_run(LAB, values)
    if r is not None:
        assert np.isfinite(r.metrics["pattern"]["live_versions"])
