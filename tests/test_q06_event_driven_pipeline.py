"""Q6 lab: nothing is lost, at-least-once redelivery, lag excursions, and each claim's region."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.contract import ParamError
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q06")


def run(**kw):
    return LAB.run(seed=3, **kw)


@pytest.fixture(scope="module")
def default():
    return run()


@pytest.fixture(scope="module")
def verdicts():
    return {v.id: v for v in LAB.check(0, jobs=2)}


def _cells(v, **at):
    return [c for c in v.grid if all(c[k] == val for k, val in at.items())]


@pytest.mark.parametrize("changes", [{}, {"poison_pct": 5.0}, {"idempotent_consumer": True, "crashes": 10}])
def test_every_event_is_consumed_in_the_log_or_counted_lost_at_every_sample(changes):
    r = run(**changes)
    lag = r.series["lag"]
    assert (lag["produced"] == lag["consumed"] + lag["lag_records"] + lag["lost"]).all()
    acc = r.extras["accounting"]
    for group, a in acc["per_group"].items():
        assert a["processed"] + a["dead_lettered"] + a["lost"] == acc["produced"], group
        assert a["in_log"] == 0  # drained by the end
    assert r.metrics["pattern"]["lost_events"] == acc["lost_broker"] == 0


def test_short_retention_loses_exactly_what_the_broker_deleted_unread():
    # committing every batch and never crashing, what the broker deleted unread is what no consumer processed
    r = run(retention_s=2.0, commit_interval_ms=0.0, crashes=0)
    acc = r.extras["accounting"]
    assert r.metrics["pattern"]["lost_events"] == acc["lost_broker"] > 0
    for a in acc["per_group"].values():
        assert a["processed"] + a["dead_lettered"] + a["lost"] == acc["produced"]
    # with crashes, records processed but not committed before deletion look lost to the broker only
    r = run(retention_s=2.0)
    assert 0 < r.metrics["pattern"]["lost_events"] <= r.extras["accounting"]["lost_broker"]


def test_outage_lag_grows_then_drains_and_the_control_has_no_excursion(default):
    lag = default.series["lag"]
    o = default.series["outage"].iloc[0]
    dep = lag[lag["arm"] == "deployment"]
    during = dep[(dep["time_s"] > o.start_s + 1) & (dep["time_s"] < o.end_s)]
    assert np.all(np.diff(during["lag_records"]) >= 0) and during["lag_records"].iloc[-1] > 100
    assert 0 <= default.metrics["pattern"]["drain_s"] < 5
    # committed-offset lag also counts what is processed but not yet auto-committed (rate × interval)
    calm = run(outage_mode="none", crashes=0)
    assert calm.metrics["pattern"]["peak_lag_records"] <= 40.0 * 5.0 * 1.5
    down, calm = run(commit_interval_ms=0.0), run(commit_interval_ms=0.0, outage_mode="none", crashes=0)
    assert calm.metrics["pattern"]["peak_lag_records"] < 0.1 * down.metrics["pattern"]["peak_lag_records"]
    assert calm.metrics["pattern"]["event_lag_ms"] < 500
    assert math.isnan(calm.metrics["pattern"]["drain_s"]) and "nothing to drain" in calm.reasons["pattern"]["drain_s"]


def test_crash_before_commit_redelivers_and_only_idempotent_consumers_avoid_duplicates(default):
    assert default.metrics["pattern"]["duplicates"] > 0
    idem = run(idempotent_consumer=True)
    assert idem.metrics["pattern"]["duplicates"] == 0 and idem.metrics["pattern"]["redelivered"] > 0
    per_batch = run(commit_interval_ms=0.0, outage_mode="none")
    assert 0 < per_batch.metrics["pattern"]["duplicates"] <= 3 * 2  # about one batch (one record) per crash
    clean = run(outage_mode="none", crashes=0)
    assert clean.metrics["pattern"]["redelivered"] == 0


def test_baseline_loses_calls_to_a_down_service_unless_it_retries(default):
    assert default.metrics["baseline"]["lost_events"] > 0
    retry = run(sync_on_failure="retry")
    assert retry.metrics["baseline"]["lost_events"] == 0
    assert retry.metrics["baseline"]["e2e_p99_ms"] > default.metrics["baseline"]["e2e_p99_ms"]


def test_parallelism_is_capped_by_partitions_and_by_keys():
    wide = run(consumers=30, partitions=10)
    assert wide.metrics["pattern"]["concurrent_consumers"] <= 10 * 4
    few_keys = run(models=3)
    assert few_keys.metrics["pattern"]["throughput_events_per_s"] < 0.5 * run().metrics["pattern"][
        "throughput_events_per_s"]


def test_single_consumer_single_downstream_has_no_throughput_gain():
    r = run(consumers=1, downstreams=1)
    assert r.metrics["comparison"]["throughput_gain_x"] < 1.5


@pytest.mark.parametrize("linger_ms,network_ms", [(0.0, 1.0), (5.0, 1.0), (20.0, 4.0)])
def test_added_latency_is_linger_plus_replication_at_light_load(linger_ms, network_ms):
    r = run(linger_ms=linger_ms, network_ms=network_ms, rate_rps=10.0, outage_mode="none", crashes=0)
    assert r.metrics["comparison"]["added_latency_ms"] == pytest.approx(linger_ms + 1.5 * network_ms, abs=0.5)


def test_refusals_name_the_parameter():
    with pytest.raises(ParamError, match="outage_duration_s"):
        LAB.run(0, outage_start_s=30.0, outage_duration_s=20.0)


def test_claim_regions(verdicts):
    v = verdicts["q06.throughput_gain"]
    assert v.verdict == "conditional"
    assert _cells(v, consumers=4, sync_workers=1)[0]["verdict"] == "holds"
    assert _cells(v, consumers=10, sync_workers=1)[0]["verdict"] == "fails"  # more than 10x
    assert all(c["verdict"] == "fails" for c in _cells(v, consumers=1))
    v = verdicts["q06.added_latency"]
    assert _cells(v, linger_ms=5.0, network_ms=0.5)[0]["verdict"] == "fails"  # Kafka defaults, one zone
    assert all(c["verdict"] == "holds" for c in _cells(v, linger_ms=20.0))
    v = verdicts["q06.event_lag"]
    assert all(c["verdict"] == "holds" for c in _cells(v, outage_duration_s=1.0))
    assert all(c["verdict"] == "fails" for c in _cells(v, outage_duration_s=12.0))
    v = verdicts["q06.coupling"]
    assert _cells(v, downstreams=1, count_broker=True)[0]["verdict"] == "fails"
    assert _cells(v, downstreams=4, count_broker=True)[0]["verdict"] == "holds"
    v = verdicts["q06.coupling_reduction"]
    assert {c["verdict"] for c in _cells(v, count_broker=True)} == {"fails"}
    assert {c["verdict"] for c in _cells(v, count_broker=False)} == {"holds"}
    v = verdicts["q06.no_loss"]
    assert _cells(v, retention_s=2.0, outage_duration_s=12.0)[0]["verdict"] == "fails"
    assert {c["verdict"] for c in _cells(v, retention_s=604800.0)} == {"holds"}
    for v in verdicts.values():
        assert v.control["vanishes"], v.id


def _repair(d):
    window = d["requests"] / d["rate_rps"]
    d["outage_start_s"] = min(d["outage_start_s"], 0.3 * window)
    d["outage_duration_s"] = max(1.0, min(d["outage_duration_s"], 0.5 * window))
    return d


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"requests": (500, 1500), "backlog": (100, 400), "rate_rps": (1.0, 400.0),
                                      "outage_start_s": (0.0, 50.0), "outage_duration_s": (1.0, 60.0)},
                         repair=_repair))
def test_random_settings_run_or_are_refused_cleanly(values):
    check_run(LAB, values)
