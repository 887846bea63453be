"""Q23 lab: capacity of each arm, the lag-peak closed form, poison-message policies, a crashed consumer's
partitions waiting for the session timeout, idle extra consumers, and each claim's region."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.contract import ParamError
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q23")


def run(**kw):
    return LAB.run(seed=5, **kw)


@pytest.fixture(scope="module")
def default():
    return run()


def test_sync_capacity_is_its_servers_over_the_call_time(default):
    """The synchronous arm drains at min(threads, cores × call ÷ CPU) calls per call time."""
    from labs.q11_inference_metrics import profile

    s1 = float(np.mean(profile("mlp").service_time(1).samples))
    cpu = 1e-3 + s1
    call = cpu + 20e-3
    servers = min(16, int(2 * call / cpu))
    got = default.metrics["baseline"]["throughput_events_per_s"]
    assert got == pytest.approx(servers / call, rel=0.05)


def test_lag_peak_follows_burst_rate_minus_capacity():
    r = run(burst_x=20.0, burst_s=0.5)
    predicted = r.metrics["comparison"]["lag_peak_predicted_events"]
    assert predicted > 5000  # the burst outruns the consumers
    assert r.metrics["pattern"]["consumer_lag_events"] == pytest.approx(predicted, rel=0.3)
    calm = run(burst_x=1.0)
    assert calm.metrics["comparison"]["lag_peak_predicted_events"] == 0
    # below capacity, lag is only the batches in flight: at most one poll per consumer, plus a linger's worth
    assert calm.metrics["pattern"]["consumer_lag_events"] <= 4 * 500


def test_control_no_wait_no_overhead_batch_one_gives_no_gain():
    r = run(downstream_wait_ms=0.0, call_overhead_ms=0.0, max_poll_records=1, requests=2000, burst_s=0.1)
    assert 0.6 < r.metrics["comparison"]["throughput_gain_x"] < 1.4


@pytest.mark.parametrize("policy", ["dead_letter", "skip", "retry_forever"])
def test_poison_policies(policy):
    r = run(poison_policy=policy, key_skew=1.2)
    m = r.metrics["pattern"]
    if policy == "dead_letter":
        assert m["dead_lettered"] == 1 and m["poison_stall_ms"] > 0
        assert m["out_of_order_updates"] > 0  # the busiest user's later updates overtake the parked one
    elif policy == "skip":
        assert m["dead_lettered"] == 0 and m["poison_stall_ms"] == 0 and m["out_of_order_updates"] == 0
    else:  # the consumer never gets past it: everything behind it on its partitions waits
        assert m["poison_stall_ms"] > 1e3 and m["processed_pct"] < 99.9
        assert m["consumer_lag_events"] > run(key_skew=1.2).metrics["pattern"]["consumer_lag_events"]


@pytest.mark.parametrize("timeout", [5.0, 10.0])
def test_a_crashed_consumers_partitions_wait_for_the_session_timeout(timeout):
    r = run(crash=True, session_timeout_s=timeout)
    m = r.metrics["pattern"]
    assert timeout * 1e3 <= m["max_latency_ms"] <= (timeout + 1.0) * 1e3
    assert m["duplicates"] > 0  # its last batch was processed but not committed: delivered again
    assert run().metrics["pattern"]["duplicates"] == 0


def test_extra_consumers_sit_idle():
    r = run(consumers=16, partitions=12)
    assert r.metrics["pattern"]["busy_consumers"] == 12


def test_refusals_name_the_parameter():
    with pytest.raises(ParamError, match="burst_s"):
        LAB.run(0, burst_s=5.0)
    with pytest.raises(ParamError, match="consumers"):
        LAB.run(0, crash=True, consumers=1)


def _cells(v, **at):
    return [c for c in v.grid if all(c[k] == val for k, val in at.items())]


@pytest.mark.slow
def test_claim_regions():
    verdicts = {v.id: v for v in LAB.check(0, jobs=2)}
    v = verdicts["q23.throughput_gain"]
    assert v.verdict == "conditional" and v.control["vanishes"]
    assert all(c["verdict"] == "fails" for c in _cells(v, max_poll_records=500))  # far more than 20x
    assert any(c["verdict"] == "holds" for c in v.grid)
    v = verdicts["q23.async_throughput"]
    assert _cells(v, max_poll_records=500, consumers=4)[0]["verdict"] == "holds"
    assert _cells(v, max_poll_records=10, consumers=1)[0]["verdict"] == "fails"
    v = verdicts["q23.sync_throughput"]
    assert _cells(v, downstream_wait_ms=20.0, sync_workers=16)[0]["verdict"] == "holds"
    assert _cells(v, downstream_wait_ms=5.0, sync_workers=64)[0]["verdict"] == "fails"
    v = verdicts["q23.lag"]
    assert all(c["verdict"] == "holds" for c in _cells(v, burst_x=1.0))
    assert all(c["verdict"] == "fails" for c in _cells(v, burst_x=20.0))
    v = verdicts["q23.latency"]
    assert all(c["verdict"] == "fails" for c in _cells(v, crash=True))
    assert _cells(v, burst_x=1.0, crash=False)[0]["verdict"] == "holds"
    v = verdicts["q23.update_delay"]
    assert _cells(v, downstream_wait_ms=20.0, linger_ms=5.0)[0]["verdict"] == "fails"  # faster than 100 ms
    assert _cells(v, downstream_wait_ms=100.0, linger_ms=5.0)[0]["verdict"] == "holds"


def _repair(d):
    d["burst_s"] = min(d["burst_s"], d["requests"] / d["rate_eps"] / 2)
    if d["crash"] and d["consumers"] < 2:
        d["consumers"] = 2
    return d


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"requests": (1000, 2000), "rate_eps": (10.0, 5000.0), "burst_x": (1.0, 5.0),
                                      "max_poll_records": (20, 5000), "session_timeout_s": (1.0, 60.0),
                                      "users": (1, 5000)},
                         repair=_repair))
def test_random_settings_run_or_are_refused_cleanly(values):
    check_run(LAB, values)
