"""Q28 lab: behaviour the release strategies must show, invariants, claim regions, control, fuzzing."""
import math

import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.contract import ParamError
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q28")
FAST = dict(replications=3)


def run(**kw):
    return LAB.run(seed=3, **{**FAST, **kw})


@pytest.fixture(scope="module")
def default():
    return run()


@pytest.fixture(scope="module")
def verdicts():
    return {v.id: v for v in LAB.check(0, **FAST)}


def test_recreate_goes_down_for_about_a_model_load_twice(default):
    m = default.metrics
    # rollout and rollback each wait for the fastest new pod: roughly a load time (120 s) rounded to a probe
    assert 100 < m["recreate"]["downtime_s"] < 2 * 120 + 60
    assert m["baseline"]["downtime_s"] == 0 and m["pattern"]["downtime_s"] == 0
    assert m["recreate"]["failed_pct"] > m["baseline"]["failed_pct"]


def test_blue_green_pays_capacity_not_degradation(default):
    m = default.metrics
    assert m["pattern"]["degraded_min"] == 0
    assert m["baseline"]["degraded_min"] > 1
    assert m["pattern"]["peak_pods"] == 2 * default.params["replicas"]
    assert m["pattern"]["replica_hours"] > m["baseline"]["replica_hours"]
    assert 0 <= m["pattern"]["shadow_disagreement_pct"] <= 100


def test_long_scale_down_delay_makes_the_rollback_one_switch():
    r = run(scale_down_delay_seconds=600.0, switch_delay_s=4.0)
    assert r.metrics["pattern"]["rollback_time_s"] == pytest.approx(4.0)
    assert r.metrics["baseline"]["rollback_time_s"] > 60   # rolling undo reloads the old model


def test_instant_loads_make_every_arm_the_same_fleet():
    # common random numbers: with nothing to load and nothing wrong, the three arms serve identically
    r = run(model_load_s=0.0, new_version="good")
    failed = [r.metrics[a]["failed_requests"] for a in ("recreate", "baseline", "pattern")]
    assert failed[0] == failed[1] == failed[2]
    assert all(r.metrics[a]["degraded_min"] == 0 for a in ("recreate", "baseline", "pattern"))


def test_good_version_is_the_control_nothing_to_roll_back():
    r = run(new_version="good")
    v = {c.id: c for c in r.claims}["q28.rollback"]
    assert v.verdict == "not_measured" and "nothing was rolled back" in v.detail
    assert math.isnan(r.metrics["baseline"]["rollback_time_s"])


def test_unfinished_release_is_not_measured_with_a_reason():
    r = run(requests=2000, model_load_s=900.0)
    assert math.isnan(r.metrics["baseline"]["degraded_min"])
    assert "raise requests" in r.reasons["baseline"]["degraded_min"]


def test_kubernetes_refuses_zero_surge_and_zero_unavailable():
    with pytest.raises(ParamError, match="max_unavailable"):
        LAB.run(0, max_surge=0.0, max_unavailable=0.0)


def test_claim_regions(verdicts):
    down = verdicts["q28.downtime"]
    assert down.verdict == "conditional" and "scale_down_delay_seconds = 300" in down.region
    assert down.control["vanishes"]
    rb = verdicts["q28.rollback"]
    assert rb.verdict == "conditional"
    cells = {(c["scale_down_delay_seconds"], c["analysis_interval_s"]): c["verdict"] for c in rb.grid}
    assert cells[(600.0, 20.0)] == "holds" and cells[(30.0, 60.0)] == "fails"
    assert rb.control["verdict"] == "not_measured" and rb.control["vanishes"]
    rolling = verdicts["q28.rolling_downtime"]
    assert rolling.control["vanishes"] and rolling.control["measured"] == 0
    degraded = {(c["model_load_s"], c["max_surge"]): c["measured"] for c in rolling.grid}
    for surge in (25.0, 100.0):   # longer loads, longer waves; a wider surge, fewer waves
        assert degraded[(30.0, surge)] < degraded[(120.0, surge)] < degraded[(240.0, surge)]
        assert degraded[(30.0, surge)] < 5   # fast loads: well under the claimed five minutes
    assert degraded[(240.0, 100.0)] < degraded[(240.0, 25.0)]
    outage = verdicts["q28.rolling_outage"]
    assert outage.verdict in ("conditional", "fails")
    assert all(c["verdict"] == "fails" for c in outage.grid if c["max_unavailable"] < 100)
    assert verdicts["q28.double_capacity"].verdict == "holds"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"replications": (2, 3), "requests": (2000, 8000), "rate_rps": (0.2, 8.0),
                                      "replicas": (2, 16), "model_load_s": (0.0, 300.0),
                                      "scale_down_delay_seconds": (0.0, 600.0),
                                      "abort_scale_down_delay_seconds": (0.0, 600.0)}))
def test_random_settings_run_or_are_refused(values):
    check_run(LAB, values)
