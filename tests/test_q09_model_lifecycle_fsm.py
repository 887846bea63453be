"""Q9 lab: behaviour the model must show, the invariants, the claims' regions, the control, any valid setting."""
import math

import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q09")
QUIET = dict(invalid_share=0.0, revoke_share=0.0, promote_window_min=0.0)


def run(seed=3, **kw):
    return LAB.run(seed, **{"deployments": 800, **kw})


def test_control_nothing_to_block_and_the_arms_agree():
    r = run(**QUIET, staging_requests_per_h=5.0)
    b, p = r.metrics["baseline"], r.metrics["pattern"]
    assert b["deployment_errors_pct"] == p["deployment_errors_pct"] > 0  # only faulty builds slip, in both arms
    assert b["reached_production_pct"] == p["reached_production_pct"]
    assert p["stale_refusals"] == 0 and p["valid_refused"] == 0
    clean = run(**QUIET, faulty_build_share=0.0)
    assert math.isnan(clean.metrics["pattern"]["transitions_blocked_pct"])
    assert "nothing to block" in clean.reasons["pattern"]["transitions_blocked_pct"]


@pytest.mark.parametrize("changes", [dict(invalid_share=1.0), dict(versions_per_day=48.0, promote_window_min=600.0),
                                     dict(revoke_share=1.0, promote_window_min=120.0), dict(require_approval=False)])
def test_no_invalid_state_past_the_machine(changes):
    r = run(faulty_build_share=0.0, **changes)
    p, b = r.metrics["pattern"], r.metrics["baseline"]
    assert p["invalid_states"] == 0 and p["deployment_errors_pct"] == 0
    assert p["transitions_blocked_pct"] == 100 and p["invalid_attempted"] > 0
    assert b["invalid_states"] > 0  # the same stream breaks the ad-hoc registry


def test_races_grow_with_concurrency_and_the_window():
    rates = [run(**{**QUIET, "versions_per_day": v, "promote_window_min": 60.0}).metrics["baseline"]
             ["deployment_errors_pct"] for v in (0.5, 4.0, 24.0)]
    assert rates[0] < rates[1] < rates[2]
    r = run(versions_per_day=24.0, promote_window_min=60.0)
    a = r.series["attempts"]
    assert (a[(a.arm == "baseline") & (a.category == "two promotions at once")]["applied"]).all()
    assert r.metrics["pattern"]["stale_refusals"] > 0


def test_only_sampled_evidence_lets_the_machine_down():
    r = run(staging_requests_per_h=2.0, faulty_build_share=0.3)
    a = r.series["attempts"]
    escaped = a[(a.arm == "pattern") & a.applied]
    assert len(escaped) > 0 and set(escaped["category"]) == {"faulty build"}
    assert r.metrics["pattern"]["transitions_blocked_pct"] < 100


def test_weak_candidate_is_a_real_model_below_the_bar():
    r = run()
    assert r.metrics["pattern"]["weak_model_accuracy_pct"] < 90 < r.metrics["pattern"]["good_model_accuracy_pct"]
    strong = run(weak_train_samples=1300, invalid_share=0.0)  # enough digits: the "weak" model clears the bar
    assert strong.metrics["pattern"]["weak_model_accuracy_pct"] > 90


@pytest.fixture(scope="module")
def verdicts():
    return {v.id: v for v in LAB.check(0)}


def test_claim_regions(verdicts):
    b = verdicts["q09.errors_baseline"]
    assert b.verdict == "conditional" and "invalid_share" in b.region and b.control["vanishes"]
    f = verdicts["q09.errors_fsm"]
    assert f.verdict == "conditional" and "staging_requests_per_h ≥" in f.region and f.control["vanishes"]
    k = verdicts["q09.blocked"]
    assert k.verdict == "conditional" and "staging_requests_per_h" in k.region
    assert k.control["verdict"] == "not_measured"
    held = [c for c in k.grid if c["verdict"] == "holds"]
    assert held and all(c["staging_requests_per_h"] >= 30 for c in held)
    cut = verdicts["q09.errors_cut"]
    assert cut.verdict in ("conditional", "holds") and cut.control["vanishes"]


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(settings_strategy(LAB, ranges={"deployments": (200, 600)}))
def test_any_valid_setting_runs_or_is_refused(values):
    check_run(LAB, values)
