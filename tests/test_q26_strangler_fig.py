"""Q26 lab: behaviour the strangler-fig model must show, its control, its claim regions, and a fuzz test."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.contract import ParamError
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q26")
SMALL = dict(migrations=300)


def run(seed=3, **kw):
    return LAB.run(seed, **{**SMALL, **kw})


def test_staging_exposes_fewer_users_per_defect_than_a_big_bang():
    r = run()
    b, p, s = (r.metrics[a] for a in ("baseline", "pattern", "shadow"))
    assert p["users_hit_per_regression"] < 0.5 * b["users_hit_per_regression"]
    assert s["users_hit_per_regression"] == 0  # caught while mirrored: no user saw an answer from it
    # a big bang at 100% sees every request, so it notices sooner than a 1% first stage
    assert b["time_to_detect_min"] < p["time_to_detect_min"]


def test_big_bang_hits_about_one_analysis_window_of_users():
    # 25 req/s per endpoint × 60 s × 5% regressed, plus the 10 s revert at 100%
    r = run()
    expected = 25 * (60 + 10) * 0.05 * (1 - 0.01)
    lo, hi = r.intervals["baseline"]["users_hit_per_regression"]
    assert lo <= expected <= hi


def test_a_first_stage_of_100_percent_is_the_big_bang():
    r = run(first_stage_pct=100.0)
    for key in ("migration_failure_pct", "users_hit_pct", "false_rollback_pct", "time_to_detect_min"):
        assert r.metrics["pattern"][key] == r.metrics["baseline"][key]


def test_shadow_watches_exactly_what_a_big_bang_watches_when_mirroring_everything():
    r = run()
    for key in ("detected_pct", "false_rollback_pct", "time_to_detect_min"):
        assert r.metrics["shadow"][key] == r.metrics["baseline"][key]
    partial = run(mirror_pct=5.0)
    assert partial.metrics["shadow"]["time_to_detect_min"] > r.metrics["shadow"]["time_to_detect_min"]


def test_a_slow_revert_keeps_the_weight_in_force_when_the_monitor_fired():
    # the aborted plan never pushes its next step: a shadow caught while mirroring stays at weight 0,
    # and a staged rollout caught at 10% keeps 10% (not 50%) for the ten minutes of the revert
    r = run(revert_s=600.0)
    assert r.metrics["shadow"]["users_hit_per_regression"] == 0
    per_endpoint = r.params["rate_rps"] / r.params["endpoints"]
    assert r.metrics["pattern"]["users_hit_per_regression"] < per_endpoint * 0.10 * 660 * 0.05 + 20
    assert r.metrics["baseline"]["users_hit_per_regression"] > per_endpoint * 600 * 0.05


def test_control_no_regression_no_users_hit_and_rollbacks_within_alpha():
    r = run(regression_size_pct=0.0)
    for arm in LAB.arm_names:
        m = r.metrics[arm]
        assert m["users_hit_pct"] == 0 and m["migration_failure_pct"] == 0
        assert r.intervals[arm]["false_rollback_pct"][0] <= 100 * r.params["alpha"]
        assert math.isnan(m["rollback_time_min"]) and "no regression" in r.reasons[arm]["rollback_time_min"]


@pytest.mark.parametrize("alpha", [0.02, 0.1])
def test_false_rollback_share_matches_alpha_where_counts_are_large(alpha):
    # 2,500 req/s per endpoint at 20% errors: the exact test is barely discrete, so Šidák over the
    # 20 windows gives a healthy endpoint a rollback chance of alpha, checked on 16,000 endpoints
    r = LAB.run(1, rate_rps=20000.0, base_error_pct=20.0, regression_size_pct=0.0, alpha=alpha, migrations=2000)
    lo, hi = r.intervals["baseline"]["false_rollback_pct"]
    assert lo <= 100 * alpha <= hi


def test_the_z_test_rolls_back_healthy_endpoints_too_often_in_small_windows():
    kw = dict(regression_size_pct=0.0, min_requests=20, rate_rps=20.0)
    exact, z = run(**kw), run(test="z", **kw)
    assert exact.intervals["pattern"]["false_rollback_pct"][0] <= 5.0
    assert z.intervals["pattern"]["false_rollback_pct"][0] > 5.0


def test_more_traffic_catches_a_regression_in_the_first_stage_sooner():
    slow, fast = run(rate_rps=20.0), run(rate_rps=2000.0)
    assert fast.metrics["pattern"]["rollback_time_min"] < slow.metrics["pattern"]["rollback_time_min"]
    assert fast.metrics["pattern"]["rollback_time_min"] < 5


def test_parity_comes_from_the_real_models_and_breaks_under_input_skew():
    r = run()
    acc_old, acc_new = r.metrics["pattern"]["accuracy_legacy_pct"], r.metrics["pattern"]["accuracy_new_pct"]
    assert r.metrics["pattern"]["metric_parity_pct"] == pytest.approx(abs(acc_new - acc_old))
    lo, hi = r.intervals["pattern"]["metric_parity_pct"]
    assert lo <= r.metrics["pattern"]["metric_parity_pct"] <= hi
    same = run(new_model="logreg")
    assert same.metrics["pattern"]["metric_parity_pct"] == 0
    assert run(new_input_scale=0.5).metrics["pattern"]["metric_parity_pct"] > 3


def test_dwell_must_be_whole_windows_and_size_is_capped():
    with pytest.raises(ParamError, match="dwell_s"):
        LAB.run(0, dwell_s=90.0)
    with pytest.raises(ParamError, match="migrations"):
        LAB.run(0, migrations=20000, endpoints=64)


@pytest.fixture(scope="module")
def verdicts():
    return {v.id: v for v in LAB.check(0)}


def test_claim_regions(verdicts):
    big = verdicts["q26.failure_big_bang"]
    assert big.verdict == "conditional" and "rate_rps = 200" in big.region
    assert all(c["verdict"] == "fails" for c in big.grid if c["rate_rps"] == 20.0)  # too little harm per window
    staged = verdicts["q26.failure_strangler"]
    assert staged.verdict == "conditional"
    cell = {(c["rate_rps"], c["first_stage_pct"]): c["verdict"] for c in staged.grid}
    assert cell[(200.0, 1.0)] == "holds" and cell[(20000.0, 1.0)] == "fails" and cell[(2000.0, 50.0)] == "fails"
    roll = verdicts["q26.rollback"]
    assert roll.verdict == "conditional" and "rate_rps = 2000" in roll.region
    assert {c["verdict"] for c in roll.grid if c["rate_rps"] == 20.0} == {"fails"}
    parity = verdicts["q26.parity"]
    assert parity.verdict == "conditional"
    assert {c["verdict"] for c in parity.grid if c["new_input_scale"] == 0.5} == {"fails"}
    assert {c["verdict"] for c in parity.grid if c["new_model"] == "mlp" and c["new_input_scale"] == 1.0} == {"holds"}


def test_controls_remove_the_effect(verdicts):
    for v in verdicts.values():
        assert v.control["vanishes"], v.id


def _repair(d):
    d = dict(d)
    k = max(1, min(120, round(d["dwell_s"] / d["analysis_interval_s"])))
    d["dwell_s"] = k * d["analysis_interval_s"]
    d["migrations"] = min(d["migrations"], max(50, 200_000 // (d["endpoints"] * 4 * k)))
    return d


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"migrations": (50, 400)}, repair=_repair))
def test_random_settings_run_or_are_refused_cleanly(values):
    r = check_run(LAB, values)
    if r is not None:
        assert np.isfinite(r.metrics["pattern"]["migration_failure_pct"])
