"""Q8 lab: behaviour the model must show, beyond the generic contract."""
import math

import numpy as np
import pytest

from labs import get_lab
from labs.contract import ParamError

LAB = get_lab("q08")
SMALL = dict(requests=3000, rate_rps=20.0, outage_start_s=30.0, outage_duration_s=90.0)


def run(**kw):
    return LAB.run(seed=5, **{**SMALL, **kw})


def test_arms_are_identical_when_the_breaker_never_opens():
    # an outage too short to reach the minimum number of calls: the breaker stays closed,
    # and common random numbers make both arms see exactly the same requests
    r = run(outage_duration_s=1.0, client_timeout_s=0.5, minimum_number_of_calls=1000)
    assert r.metrics["pattern"]["open_episodes"] == 0
    for key in ("p99_all_ms", "availability_pct", "wasted_caller_s"):
        assert r.metrics["baseline"][key] == pytest.approx(r.metrics["pattern"][key], rel=1e-12)


def test_breaker_saves_caller_time_during_a_hang():
    r = run(outage_mode="hang", client_timeout_s=5.0)
    b, p = r.metrics["baseline"], r.metrics["pattern"]
    assert p["wasted_caller_s"] < 0.5 * b["wasted_caller_s"]
    assert p["p99_open_ms"] < 50  # while open, callers get the cached answer at once


def test_hang_is_only_detected_after_the_client_timeout():
    # resilience4j records a call when it completes: a hung call counts only at its timeout
    for timeout in (2.0, 8.0):
        r = run(outage_mode="hang", client_timeout_s=timeout)
        assert r.metrics["pattern"]["time_to_open_s"] >= timeout


def test_opening_rate_and_cooldown_follow_the_settings():
    r = run(outage_mode="error", wait_duration_in_open_state=12.0, failure_rate_threshold=40.0)
    p = r.metrics["pattern"]
    assert p["error_rate_threshold_pct"] >= 40.0
    assert 12.0 <= p["wait_duration_in_open_state_s"] < 13.0  # first call strictly after the wait
    assert p["recovery_time_s"] >= 0


def test_resilience4j_defaults_never_open_at_low_traffic():
    # 100-call minimum in a 100-call count window: at 1 req/s a 20 s outage fails 20 of 100 calls
    r = LAB.run(seed=1, requests=1000, rate_rps=1.0, outage_start_s=200.0, outage_duration_s=20.0,
                outage_mode="error", sliding_window_type="COUNT_BASED", sliding_window_size=100,
                minimum_number_of_calls=100)
    assert r.metrics["pattern"]["open_episodes"] == 0
    assert math.isnan(r.metrics["pattern"]["time_to_open_s"])


@pytest.mark.parametrize("changes", [
    {"client_timeout_s": 0.2}, {"service_ms": 2000.0, "client_timeout_s": 1.0}, {"client_timeout_s": 0.01},
    {p.name: (p.choices[0] if p.choices else p.low) for p in LAB.params if p.name not in SMALL},
])
def test_callers_give_up_at_their_deadline_whatever_the_queue(changes):
    # regression: queueing plus service beyond the timeout used to schedule a negative delay.
    # With threads to spare nobody waits for a worker, so no caller waits past its deadline.
    r = run(**{**changes, "caller_threads": 10000})
    timeout_ms = r.params["client_timeout_s"] * 1e3
    fallback_ms = r.params["fallback_ms"]
    for arm in ("baseline", "pattern"):
        assert r.metrics[arm]["p99_all_ms"] <= timeout_ms + fallback_ms + 1e-6


def test_a_slow_server_times_callers_out_but_keeps_working():
    # 2 s inference against a 1 s deadline: nothing answers in time, yet the replicas stay busy
    r = run(service_ms=2000.0, client_timeout_s=1.0, outage_mode="none", replicas=64, cache_coverage=0.0)
    b = r.metrics["baseline"]
    assert b["availability_pct"] < 40
    assert b["server_utilization_pct"] > 40


def test_metrics_that_do_not_exist_are_not_measured_with_a_reason():
    r = run(outage_mode="none")
    assert r.metrics["comparison"]["resource_savings_pct"] != r.metrics["comparison"]["resource_savings_pct"]
    verdicts = {v.id: v for v in r.claims}
    assert verdicts["q08.compute_saved"].verdict == "not_measured"
    assert "nothing to save" in verdicts["q08.compute_saved"].detail
    assert verdicts["q08.opens_on_half_errors"].verdict == "not_measured"
    assert "never opened" in verdicts["q08.opens_on_half_errors"].detail


def test_outage_must_fit_the_window():
    with pytest.raises(ParamError, match="outage_duration_s"):
        LAB.run(seed=0, requests=1000, rate_rps=10.0, outage_start_s=50.0, outage_duration_s=80.0)
    with pytest.raises(ParamError, match="outage_start_s"):
        LAB.run(seed=0, requests=1000, rate_rps=10.0, outage_start_s=200.0)


def test_latency_series_covers_both_arms_and_the_state_timeline_starts_closed():
    r = run()
    assert set(r.series["latency"]["arm"]) == {"baseline", "pattern"}
    states = r.series["breaker_state"]
    assert states["state"].iloc[0] == "CLOSED"
    assert np.all(np.diff(states["time_s"]) >= 0)


def _region(claim_id: str) -> str:
    from labs.claims import SweepRunner, check_claim

    return check_claim(LAB.question.claim(claim_id), SweepRunner(LAB, 0, LAB.validate({}))).region


def test_regions_are_pinned():
    # savings ~ 1 - time to open / outage length, and a hang opens the breaker only after the timeout
    assert _region("q08.compute_saved") == ("holds only when outage_duration_s = 60 and client_timeout_s ≤ 10; "
                                            "or outage_duration_s = 180")
    assert _region("q08.opens_on_half_errors") == "holds only when client_timeout_s ≤ 5"
