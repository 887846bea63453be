"""Q7 lab: behaviour the saga model must show, its invariants, claim regions, control and a fuzz test."""
import math

import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.contract import ParamError
from lab_fuzz import check_run, settings_strategy

LAB = get_lab("q07")
SMALL = dict(workflows=600)
NOTHING_FAILS = dict(step_failure_prob=0.0, step_timeout_prob=0.0, crashes_per_hour=0.0)


def run(seed=3, **kw):
    return LAB.run(seed, **{**SMALL, **kw})


@pytest.mark.parametrize("seed", range(5))
def test_saga_arms_never_end_with_partial_state(seed):
    r = run(seed, crashes_per_hour=600.0, step_failure_prob=0.1, add_compensation="before_step",
            lost_reply_share=0.5)
    for arm in ("pattern", "choreography"):
        assert r.metrics[arm]["partial_states"] == 0
        assert r.metrics[arm]["dead_workflows"] == 0
        assert r.metrics[arm]["stuck_workflows_pct"] == 0
    assert r.metrics["baseline"]["partial_states"] > 0 and r.metrics["baseline"]["dead_workflows"] > 0


@pytest.mark.parametrize("seed", range(3))
def test_defaults_end_without_partial_state(seed):
    r = LAB.run(seed)
    for arm in ("pattern", "choreography"):
        assert r.metrics[arm]["partial_states"] == 0 and r.metrics[arm]["stuck_workflows_pct"] == 0


def test_a_crash_that_eats_a_reply_leaks_when_the_undo_is_added_after_the_step():
    # the step did its work, the reply died with the coordinator, the re-runs failed: nothing undoes it
    harsh = dict(crashes_per_hour=600.0, step_failure_prob=0.1)
    assert run(0, **harsh).metrics["pattern"]["partial_states"] > 0
    assert run(0, **harsh, add_compensation="before_step").metrics["pattern"]["partial_states"] == 0


def test_undo_added_before_the_step_covers_lost_replies():
    hard = dict(lost_reply_share=1.0, step_timeout_prob=0.1, maximum_attempts=2)
    after, before = run(**hard), run(**hard, add_compensation="before_step")

    def leaked(r):  # ended "compensated" with a resource left (not an undo that gave up)
        o = r.series["outcomes"]
        return o[(o.arm == "pattern") & (o.outcome == "partial state")].share_pct.item()

    assert leaked(after) > 0 and leaked(before) == 0
    assert before.metrics["pattern"]["success_rate_pct"] == after.metrics["pattern"]["success_rate_pct"]


def test_baseline_stuck_share_follows_the_step_failure_odds():
    # no retries, no crashes: stuck = a failure after the first step = (1 - q) - (1 - q)^5 with q per step
    r = LAB.run(1, workflows=4000, crashes_per_hour=0.0, step_failure_prob=0.03, step_timeout_prob=0.0)
    q = 0.97
    lo, hi = r.intervals["baseline"]["stuck_workflows_pct"]
    assert lo <= 100 * (q - q ** 5) <= hi


def test_retries_alone_cut_stuck_workflows_but_crashes_still_kill_the_script():
    r = run(retry_without_saga=True, crashes_per_hour=600.0)
    plain = run(crashes_per_hour=600.0)
    assert r.metrics["baseline"]["stuck_workflows_pct"] < plain.metrics["baseline"]["stuck_workflows_pct"]
    assert r.metrics["baseline"]["dead_workflows"] > 0


def test_coordination_grows_with_the_log_write_time_and_orchestration_costs_more():
    slow, fast = run(persistence_ms=10.0), run(persistence_ms=0.0)
    c_slow, c_fast = slow.metrics["comparison"], fast.metrics["comparison"]
    # 12 writes per workflow over the script: 10 ms more per write is about 120 ms more
    assert 100 < c_slow["coordination_latency_ms"] - c_fast["coordination_latency_ms"] < 140
    assert c_slow["orchestration_over_choreography_ms"] > 0


def test_control_nothing_to_compensate_nothing_stuck():
    r = run(**NOTHING_FAILS)
    for arm in ("baseline", "pattern", "choreography"):
        assert r.metrics[arm]["stuck_workflows_pct"] == 0
        assert r.metrics[arm]["success_rate_pct"] == 100
        assert math.isnan(r.metrics[arm]["compensation_rate_pct"])
        assert "nothing to compensate" in r.reasons[arm]["compensation_rate_pct"]
    assert math.isnan(r.metrics["comparison"]["stuck_reduction_pct"])


def test_probabilities_must_add_up():
    with pytest.raises(ParamError, match="step_failure_prob"):
        LAB.run(0, step_failure_prob=0.8, step_timeout_prob=0.5)


def test_claim_regions():
    got = {v.id: v for v in LAB.check(0, workflows=800)}
    cell = lambda cid, **at: next(c for c in got[cid].grid if all(c[k] == v for k, v in at.items()))  # noqa: E731
    assert got["q07.stuck_baseline"].verdict == "conditional"
    assert cell("q07.stuck_baseline", step_failure_prob=0.005, crashes_per_hour=0.0)["verdict"] == "fails"
    assert cell("q07.stuck_baseline", step_failure_prob=0.05, crashes_per_hour=600.0)["verdict"] == "holds"
    assert got["q07.stuck_baseline"].control["vanishes"]
    assert cell("q07.stuck_saga", step_failure_prob=0.03, maximum_attempts=3)["verdict"] == "holds"
    assert cell("q07.stuck_saga", step_failure_prob=0.3, maximum_attempts=1)["verdict"] == "fails"
    assert cell("q07.compensation", step_failure_prob=0.1, maximum_attempts=3)["verdict"] == "holds"
    assert cell("q07.compensation", step_failure_prob=0.3, maximum_attempts=1)["verdict"] == "fails"
    assert got["q07.compensation"].control["verdict"] == "not_measured"
    assert cell("q07.success", step_failure_prob=0.01, maximum_attempts=5)["verdict"] == "holds"
    assert cell("q07.success", step_failure_prob=0.2, maximum_attempts=1)["verdict"] == "fails"
    assert got["q07.success"].control["vanishes"]
    assert cell("q07.consistency", step_timeout_prob=0.005, workflows=8000)["verdict"] == "holds"
    assert cell("q07.consistency", step_timeout_prob=0.005, workflows=2000)["verdict"] == "inconclusive"
    assert cell("q07.consistency", step_timeout_prob=0.2, workflows=8000)["verdict"] == "fails"
    assert cell("q07.coordination_latency", persistence_ms=1.0)["verdict"] == "holds"
    assert cell("q07.coordination_latency", persistence_ms=10.0)["verdict"] == "fails"
    assert got["q07.coordination_latency"].control["vanishes"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"workflows": (200, 400), "rate_per_s": (1.0, 100.0)},
                         fixed={"step_times": "reference"}))
def test_random_settings_run_or_are_refused(values):
    check_run(LAB, values)
