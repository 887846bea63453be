"""Q12 lab: load balancing, scaling efficiency and autoscaling, checked against theory and its own knobs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from labs import get_lab
from labs.contract import ParamError
from labs.q12_horizontal_scaling import _SearchContext, _grouped_p99, _zipf_users
from sim.rng import Streams

LAB = get_lab("q12")


@pytest.fixture(scope="module")
def default():
    return LAB.run(seed=0)


def test_policies_rank_as_theory_says(default):
    m = default.metrics
    # one replica is the same server whatever the policy
    assert m["baseline"]["sustainable_rps_1"] == m["pattern"]["sustainable_rps_1"] == m["round_robin"]["sustainable_rps_1"]
    # P2C pools queues better than round robin; affinity to Zipf-skewed users concentrates load
    assert m["pattern"]["sustainable_rps"] > m["round_robin"]["sustainable_rps"] > m["baseline"]["sustainable_rps"]
    assert m["baseline"]["hot_replica_share_pct"] > m["baseline"]["top_user_share_pct"]
    assert m["round_robin"]["hot_replica_share_pct"] == pytest.approx(10.0, abs=0.1)


def test_efficiency_is_the_seed_formula(default):
    for arm in ("baseline", "pattern", "round_robin"):
        m = default.metrics[arm]
        assert m["speedup_x"] == pytest.approx(m["sustainable_rps"] / m["sustainable_rps_1"])
        assert m["scaling_efficiency_pct"] == pytest.approx(100 * m["speedup_x"] / 10)
        assert m["speedup_10_replicas_x"] == m["speedup_x"]  # replicas defaults to 10


def test_search_matches_mm1_closed_form():
    # M/M/1 FIFO: sojourn ~ Exp(mu - lambda), so P99 <= SLO  <=>  lambda <= mu - ln(100) / SLO
    p = LAB.validate({"slo_p99_ms": 1000.0})
    n = 60000
    streams = Streams(3)
    service = streams["service"].exponential(0.1, n)
    unit = np.cumsum(streams["arrivals"].exponential(1.0, n))
    ctx = _SearchContext(p, unit, service, np.zeros(1000, dtype=np.uint64), 10.0, streams)
    expected = 10.0 - math.log(100) / 1.0
    assert ctx.search("round_robin", 1) == pytest.approx(expected, rel=0.05)


def test_without_a_latency_objective_speedups_are_capacity_ratios():
    # a very loose SLO leaves only stability: stateless replicas all saturate (N x), sticky ones stop when
    # the replica with the largest long-run share s of the users' traffic saturates (1 / s)
    from labs.q12_horizontal_scaling import _ring, _user_hashes, _zipf_weights

    r = LAB.run(seed=0, slo_p99_ms=100000.0).metrics
    assert r["pattern"]["speedup_10_replicas_x"] == pytest.approx(10.0)
    assert r["round_robin"]["speedup_10_replicas_x"] == pytest.approx(10.0)
    share = np.bincount(_ring(10, 1024).route(_user_hashes(1000)), weights=_zipf_weights(1000, 1.0), minlength=10)
    assert r["baseline"]["speedup_10_replicas_x"] == pytest.approx(1 / share.max() / 0.999, rel=1e-6)


def test_skew_moves_the_sticky_speedup():
    uniform = LAB.run(seed=0, zipf_s=0.0).metrics["baseline"]
    skewed = LAB.run(seed=0, zipf_s=1.5).metrics["baseline"]
    assert uniform["speedup_x"] > skewed["speedup_x"] + 2
    assert skewed["hot_replica_share_pct"] > uniform["hot_replica_share_pct"]


def test_bounded_load_relieves_the_hot_replica(default):
    bounded = LAB.run(seed=0, hash_balance_factor=125).metrics["baseline"]
    assert bounded["speedup_x"] > default.metrics["baseline"]["speedup_x"] * 1.3
    assert bounded["hot_replica_share_pct"] < default.metrics["baseline"]["hot_replica_share_pct"]


def test_ten_replica_speedup_is_measured_at_ten_whatever_replicas_is():
    r = LAB.run(seed=0, replicas=4).metrics["pattern"]
    assert r["speedup_10_replicas_x"] != r["speedup_x"]
    assert r["scaling_efficiency_pct"] == pytest.approx(100 * r["speedup_x"] / 4)


def test_scale_out_is_cold_start_rounded_up_to_the_probe(default):
    m = default.metrics["pattern"]
    assert 50.0 <= m["scale_out_time_s"] < 51.0  # 45 s load, probe every 10 s -> Ready at 50 s
    assert 0 < m["detection_delay_s"] <= 15.0  # the first sync after the step
    fast = LAB.run(seed=0, cold_start_s=0.0, readiness_period_s=0.0).metrics["pattern"]
    assert fast["scale_out_time_s"] < 1.0
    assert fast["latency_recovery_s"] < m["latency_recovery_s"]


def test_cpu_saturation_slows_recovery_compared_with_in_flight(default):
    cpu = default.metrics["pattern"]
    inflight = LAB.run(seed=0, hpa_metric="in_flight").metrics["pattern"]
    # CPU reads at most 100%: each sync can only ask for ceil(N x 100 / 70); in-flight grows with the backlog
    assert inflight["latency_recovery_s"] < cpu["latency_recovery_s"]
    first_cpu = [d for d in default.series["hpa"].itertuples() if d.desired > d.current and d.time_s >= 60][0]
    assert first_cpu.proposal == math.ceil(first_cpu.current * 100 / 70)


def test_hpa_holds_replicas_through_the_scale_down_window(default):
    hpa = default.series["hpa"]
    assert (hpa["desired"] >= hpa["current"]).all()  # within 480 s nothing is removed: stabilization is 300 s
    assert (hpa["proposal"] < hpa["current"]).any()  # although the calculator already asked for fewer


def test_timeline_and_series_shapes(default):
    tl = default.series["autoscale"]
    assert list(tl.columns) == ["time_s", "requests", "p99_ms", "timeout_pct", "within_slo_pct", "ready_replicas",
                                "spec_replicas"]
    # P99 within the SLO <=> at least 99% of the window within it (when nobody gave up)
    calm = tl[tl["timeout_pct"] == 0]
    assert ((calm["p99_ms"] <= 1000.0) == (calm["within_slo_pct"] >= 99.0)).mean() > 0.9
    assert (tl["ready_replicas"] <= tl["spec_replicas"]).all()
    assert set(default.series["scaling"]["replicas"]) == {1, 5, 10}
    assert default.intervals["pattern"]["p99_ms"][0] <= default.metrics["pattern"]["p99_ms"] <= \
        default.intervals["pattern"]["p99_ms"][1]


def test_grouped_p99_matches_numpy():
    rng = np.random.default_rng(0)
    v, g = rng.random(3000), rng.integers(0, 9, 3000)
    out = _grouped_p99(v, g, 10)
    for k in range(9):
        assert out[k] == pytest.approx(np.percentile(v[g == k], 99))
    assert math.isnan(out[9])


def test_zipf_users_follow_the_weights():
    users = _zipf_users(np.random.default_rng(0), 100, 1.0, 200000)
    share = np.bincount(users, minlength=100) / users.size
    h = np.sum(1 / np.arange(1, 101))
    assert share[0] == pytest.approx(1 / h, rel=0.02)
    assert share[9] == pytest.approx(1 / (10 * h), rel=0.05)
    assert np.all(_zipf_users(np.random.default_rng(0), 5, 0.0, 1000) < 5)


@pytest.mark.parametrize("bad, name", [
    ({"hash_balance_factor": 50}, "hash_balance_factor"),
    ({"step_at_s": 500.0}, "step_at_s"),
    ({"min_replicas": 8, "max_replicas": 4}, "max_replicas"),
    ({"slo_p99_ms": 400.0}, "slo_p99_ms"),
    # an objective at the mean inference time is below the profile's own P99, whatever was measured
    ({"service_dist": "mlp_profile", "slo_p99_ms": 100.0}, "slo_p99_ms"),
    ({"step_rps": 5000.0}, "step_rps"),
])
def test_cross_parameter_checks_name_the_parameter(bad, name):
    with pytest.raises(ParamError, match=name):
        LAB.run(seed=0, **bad)
