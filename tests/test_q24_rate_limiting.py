"""Q24 lab: limiter behaviour on shared traffic, the closed forms, controls, claim regions and a fuzz test."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.contract import ParamError
from sim.rate_limiters import burst_duration_closed_form
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q24")
SMALL = dict(duration_s=30.0, attack_rps=300.0)
KEYED = ("pattern", "fixed_window", "sliding_log", "sliding_counter")


def run(seed=0, **kw):
    return LAB.run(seed, **{**SMALL, **kw})


@pytest.fixture(scope="module")
def default():
    return LAB.run(0)


def test_attacker_held_to_r_plus_b_over_t_per_key(default):
    p = default.params
    cap = p["rate_rps"] + p["burst_tokens"] / p["duration_s"]
    assert default.metrics["pattern"]["attacker_admitted_rps"] == pytest.approx(cap, rel=0.02)
    assert default.metrics["baseline"]["attacker_admitted_rps"] == pytest.approx(p["attack_rps"], rel=0.05)
    for arm in KEYED[1:]:  # the window limiters hold it to R (one window's worth more at most)
        assert default.metrics[arm]["attacker_admitted_rps"] <= p["rate_rps"] * (1 + p["window_s"] / p["duration_s"])
    many = run(attacker_keys=10)
    assert many.metrics["pattern"]["attacker_admitted_rps"] == pytest.approx(10 * (10 + 20 / 30), rel=0.03)


def test_burst_duration_matches_the_closed_form_and_is_2s_for_the_seeds_config(default):
    d = default.metrics["pattern"]["burst_duration_s"]
    assert burst_duration_closed_form(20, 10, 2) == 2.0
    assert abs(d - 2.0) <= 1 / 10 + 1 / 20
    for B, k in ((100, 2.0), (50, 3.0), (20, 1.5)):
        r = run(burst_tokens=B, burst_multiple=k)
        assert abs(r.metrics["pattern"]["burst_duration_s"] - B / ((k - 1) * 10)) <= 1 / ((k - 1) * 10) + 1 / (k * 10)


def test_burst_capacity_is_one_plus_b_over_r_in_a_second(default):
    assert default.metrics["pattern"]["burst_capacity_x"] == pytest.approx(1 + 20 / 10, abs=0.11)
    assert run(burst_tokens=1).metrics["pattern"]["burst_capacity_x"] < 1.2


def test_timer_refill_agrees_on_the_sustained_rate(default):
    timer = LAB.run(0, refill="timer")
    a, b = default.metrics["pattern"]["attacker_admitted_rps"], timer.metrics["pattern"]["attacker_admitted_rps"]
    assert a == pytest.approx(b, abs=0.1)
    with pytest.raises(ParamError, match="fill_interval_s"):
        LAB.run(0, refill="timer", rate_rps=15.0, fill_interval_s=0.1)


def test_fixed_window_doubles_at_an_edge_and_uniform_arrivals_are_the_control(default):
    assert default.metrics["fixed_window"]["edge_burst_x"] == 2.0
    for arm in ("pattern", "sliding_log", "sliding_counter"):
        assert default.metrics[arm]["edge_burst_x"] <= 1.05
    uniform = run(edge_probe="uniform")
    for arm in KEYED:
        assert uniform.metrics[arm]["edge_burst_x"] <= 1.05


def test_fair_users_pass_per_key_limits_but_a_global_limit_refuses_them(default):
    m = default.metrics
    assert m["pattern"]["fair_rejection_rate_pct"] < 1 and m["baseline"]["fair_rejection_rate_pct"] == 0
    assert m["global"]["fair_rejection_rate_pct"] > 50  # the attacker takes most of the shared tokens
    assert m["global"]["fair_users_refused"] > 0.9 * default.params["fair_users"]
    quiet = run(attack_rps=0.0)
    assert quiet.metrics["global"]["fair_rejection_rate_pct"] < 5


def test_fair_rejection_grows_with_load_over_the_limit():
    low, high = run(fair_load_x=0.5), run(fair_load_x=2.0)
    assert high.metrics["pattern"]["fair_rejection_rate_pct"] > 20 > low.metrics["pattern"]["fair_rejection_rate_pct"]
    # pro users have ten times the limit, so at 2x their load they are refused about as often as free users
    assert high.metrics["pattern"]["fair_rejection_pro_pct"] > 10


def test_ignoring_retry_after_costs_more_attempts(default):
    m = default.metrics["pattern"]
    assert m["attempts_per_call_ignore_x"] > m["attempts_per_call_honour_x"] > 1
    assert default.metrics["baseline"]["attempts_per_call_ignore_x"] == 1


def test_backend_is_protected(default):
    m = default.metrics
    assert m["baseline"]["backend_rps"] > 10 * m["pattern"]["backend_rps"]
    assert m["global"]["backend_rps"] <= default.params["global_rps"] * 1.05 + 1
    assert m["global"]["backend_peak_rps"] <= 2 * default.params["global_rps"] + 1  # one second of depth


def test_rejection_counts_the_attack_at_its_real_rate(default):
    # per-key arms simulate a thinned attacker but count its refusals at attack_rps
    r = default.metrics
    assert r["pattern"]["rejection_rate_pct"] == pytest.approx(r["sliding_log"]["rejection_rate_pct"], abs=1.0)
    assert r["pattern"]["rejection_rate_pct"] > 90


def test_common_random_numbers_and_determinism():
    a, b = run(seed=2), run(seed=2)
    assert a.metrics == b.metrics
    c = run(seed=2, global_rps=50.0)
    assert c.metrics["pattern"] == a.metrics["pattern"]  # the global limit touches only its own arm


@pytest.mark.slow
def test_claim_regions_and_controls():
    v = {x.id: x for x in LAB.check(0)}
    ratio = {(c["burst_tokens"], c["rate_rps"]): c["verdict"] for c in v["q24.burst_ratio"].grid}
    assert ratio[(20, 10.0)] == "holds" and ratio[(5, 10.0)] == "fails" and ratio[(50, 100.0)] == "fails"
    dur = {(c["burst_tokens"], c["burst_multiple"]): c["measured"] for c in v["q24.burst_duration"].grid}
    for (B, k), d in dur.items():
        assert abs(d - B / ((k - 1) * 10)) <= 1 / ((k - 1) * 10) + 1 / (k * 10)
    assert v["q24.burst_duration"].verdict == "conditional"
    fair = {(c["fair_load_x"], c["burst_tokens"]): c["verdict"] for c in v["q24.fair_rejection"].grid}
    assert fair[(0.5, 20)] == "holds" and fair[(2.0, 20)] == "fails" and fair[(0.5, 1)] == "fails"
    att = {(c["attacker_keys"], c["burst_tokens"]): c["measured"] for c in v["q24.attack_capped"].grid}
    for (K, B), x in att.items():
        assert x == pytest.approx(min(1000.0, K * (10 + B / 60)), rel=0.05)  # never more than it sends
    for x in v.values():
        assert x.control["vanishes"], x.id


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"duration_s": (10.0, 30.0), "attack_rps": (0.0, 2000.0),
                                      "fair_users": (1, 30), "rate_rps": (1.0, 50.0), "burst_tokens": (1, 200),
                                      "window_s": (0.1, 60.0), "pro_multiplier": (1.0, 10.0),
                                      "fair_load_x": (0.01, 3.0)}))
def test_random_settings_run_or_are_refused_cleanly(values):
    r = check_run(LAB, values)
    if r is not None:
        v = r.metrics["pattern"]["rejection_rate_pct"]
        assert math.isfinite(v) or r.reasons["pattern"]["rejection_rate_pct"]
        assert np.isfinite(r.metrics["pattern"]["burst_capacity_x"])
