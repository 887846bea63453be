"""Q11 lab: closed forms for the unbatched server, and the dynamic batcher's effects on the measured profiles."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lab_fuzz import check_run, settings_strategy

from labs.contract import ParamError
from labs.q11_inference_metrics import FP32, INT8, LAB, profile, service_dist
from sim.analytic import erlang_c, mg1
from sim.batcher import DynamicBatchingConfig, QuantileService, simulate_batching
from sim.inference import TOP_LOAD
from sim.rng import Streams


@pytest.fixture(scope="module")
def default():
    return LAB.run(seed=0)


def _unbatched_mean_wait(rho: float, c: int, seeds=range(4), n=100_000):
    """Mean queueing wait of the lab's baseline server (max_batch_size 1) fed the mlp's batch-1 profile."""
    dist = service_dist(FP32, 1)
    lam = rho * c / dist.mean
    waits = []
    for seed in seeds:
        s = Streams(seed)
        a = np.cumsum(s["arrivals"].exponential(1 / lam, n))
        run = simulate_batching(a, DynamicBatchingConfig(1, (), 0, c),
                                QuantileService(lambda b: service_dist(FP32, b), s["service"].random(n)))
        waits.append(run.queue_wait[n // 10:].mean())
    return lam, dist, float(np.mean(waits))


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_unbatched_server_matches_pollaczek_khinchine(rho):
    lam, dist, wq = _unbatched_mean_wait(rho, 1)
    expected = mg1(lam, dist.mean, dist.scv).wq
    assert wq == pytest.approx(expected, rel=0.06)


def test_unbatched_two_instances_match_erlang_c_with_the_allen_cunneen_correction():
    lam, dist, wq = _unbatched_mean_wait(0.8, 2)
    mu = 1 / dist.mean
    approx = erlang_c(2, lam / mu) / (2 * mu - lam) * (1 + dist.scv) / 2
    assert wq == pytest.approx(approx, rel=0.12)


def test_saturation_matches_the_renewal_capacity_and_bounds_the_slo_capacity(default):
    m = default.metrics
    for arm in ("baseline", "pattern", "int8"):
        assert m[arm]["saturation_rps"] == pytest.approx(m[arm]["renewal_capacity_rps"], rel=0.05)
        assert 0 < m[arm]["capacity_rps"] <= TOP_LOAD * m[arm]["saturation_rps"] * 1.0001
    assert m["pattern"]["saturation_rps"] > m["baseline"]["saturation_rps"]


def test_overloaded_baseline_runs_at_its_capacity_and_batching_absorbs_the_load():
    r = LAB.run(seed=0, rate_rps=20000.0)
    base, pat = r.metrics["baseline"], r.metrics["pattern"]
    assert base["load_pct"] > 100
    assert base["throughput_rps"] == pytest.approx(base["saturation_rps"], rel=0.05)
    assert base["utilization_pct"] > 99
    assert pat["throughput_rps"] == pytest.approx(pat["offered_rps"], rel=0.01)
    assert pat["p99_ms"] < base["p99_ms"] / 10
    assert pat["mean_batch_size"] > 1.5
    assert any("Overloaded" in n and "baseline" in n for n in r.notes)


def test_stable_unbatched_utilization_is_offered_load_times_mean_service():
    r = LAB.run(seed=0, rate_rps=1000.0)
    base = r.metrics["baseline"]
    assert base["utilization_pct"] == pytest.approx(base["offered_rps"] * service_dist(FP32, 1).mean * 100, rel=0.03)
    assert base["throughput_rps"] == pytest.approx(base["offered_rps"], rel=0.01)


def test_no_batching_in_the_pattern_is_the_baseline():
    r = LAB.run(seed=0, max_batch_size=1, requests=3000, sweep_requests=500)
    for key in ("p50_ms", "p99_ms", "throughput_rps", "utilization_pct", "saturation_rps"):
        assert r.metrics["pattern"][key] == r.metrics["baseline"][key]
    assert r.metrics["comparison"]["throughput_gain_x"] == 1.0


def test_gain_grows_with_max_batch_size():
    gains = [LAB.run(seed=0, max_batch_size=b, requests=3000, sweep_requests=500).metrics["comparison"]["throughput_gain_x"]
             for b in (2, 8, 32)]
    assert gains[0] < gains[1] < gains[2]


def test_queue_delay_trades_median_latency_for_batch_size():
    low = dict(seed=0, rate_rps=250.0, requests=3000, sweep_requests=500)
    r0 = LAB.run(**low)
    r1 = LAB.run(**low, max_queue_delay_microseconds=10_000)
    p0, p1 = r0.metrics["pattern"], r1.metrics["pattern"]
    assert p1["mean_batch_size"] > 2 * p0["mean_batch_size"]
    assert p1["p50_ms"] > p0["p50_ms"] + 3  # most requests now wait for the 10 ms timer
    assert p1["p99_ms"] <= 10 + profile(FP32).quantile(32, 1.0) * 1e3 + 1  # nobody is held longer than the delay


def test_preferred_sizes_set_the_saturated_batch():
    r = LAB.run(seed=0, preferred_batch_size="8", requests=3000, sweep_requests=500)
    cfg = DynamicBatchingConfig(32, (8,))
    assert r.metrics["pattern"]["renewal_capacity_rps"] == pytest.approx(
        cfg.capacity_rps(lambda b: service_dist(FP32, b).mean))


def test_cross_parameter_rules_refuse_before_simulating():
    with pytest.raises(ParamError, match="preferred_batch_size.*max_batch_size=8"):
        LAB.settings({"max_batch_size": 8, "preferred_batch_size": "16,32"})
    with pytest.raises(ParamError, match="sweep_requests.*requests=1000"):
        LAB.settings({"requests": 1000, "sweep_requests": 2000})
    LAB.settings({"max_batch_size": 32, "preferred_batch_size": "16,32"})  # the largest preferred size may equal it


def test_notes_state_provenance(default):
    text = " ".join(default.notes)
    assert "data/profiles/mlp_w256.json" in text and "mlp_int8_w256.json" in text
    assert profile(FP32).provenance.get("cpu", "?") in text
    assert 1 <= len(default.notes) <= 3


def test_arms_are_declared_with_glossaries():
    for arm in LAB.arms:
        assert arm.label and arm.glossary and "\n" not in arm.glossary
    assert LAB.assumptions


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=settings_strategy(LAB, ranges={"requests": (1000, 2000), "sweep_requests": (200, 2000)},
                                fixed={"profiles": "reference"}),
       seed=st.integers(0, 3))
def test_any_valid_setting_runs_or_is_refused_with_one_line(values, seed):
    check_run(LAB, values, seed)


# ---------------------------------------------------------------------- profiles carry their CPU
def test_a_profile_from_another_cpu_is_flagged(monkeypatch):
    import labs.q11_inference_metrics as q11

    monkeypatch.setattr(q11, "cpu_model", lambda: "Some Other CPU 9000")
    r = LAB.run(seed=0, requests=2000, sweep_requests=500)
    assert r.extras["profile_cpu_differs"] is True and r.extras["this_cpu"] == "Some Other CPU 9000"
    assert any("another CPU" in n and "profiles = this_machine" in n for n in r.notes)


def test_reference_profiles_of_this_machine_are_not_flagged_and_this_machine_measures_here(monkeypatch):
    from sim.profiles import cpu_model

    here = cpu_model()
    monkeypatch.setattr("labs.q11_inference_metrics.cpu_model", lambda: here)
    ref = LAB.run(seed=0, requests=2000, sweep_requests=500)
    assert ref.extras["profile_cpu_differs"] is (profile(FP32).provenance.get("cpu") != here)
    live = LAB.run(seed=0, requests=2000, sweep_requests=500, profiles="this_machine")
    assert live.extras["profile_cpu"] == [here] and live.extras["profile_cpu_differs"] is False
    assert not any("another CPU" in n for n in live.notes)


# ---------------------------------------------------------------------- size and scale
def test_int8_speedup_is_read_from_the_width_profiles_at_max_batch_size():
    for width, b in ((256, 1), (2048, 32)):
        r = LAB.run(seed=0, width=width, max_batch_size=b, requests=2000, sweep_requests=500)
        expected = profile(FP32, width).median(b) / profile(INT8, width).median(b)
        assert r.metrics["comparison"]["int8_speedup_x"] == pytest.approx(expected)


def test_service_scale_multiplies_latency_of_an_idle_server():
    low = dict(seed=0, rate_rps=1.0, requests=2000, sweep_requests=500)
    r1, r200 = LAB.run(**low), LAB.run(**low, service_scale=200.0)
    # at 1 req/s almost nobody queues (15 ms calls, 1 s apart): latency is the call time, times the scale
    assert r200.metrics["baseline"]["p50_ms"] == pytest.approx(200 * r1.metrics["baseline"]["p50_ms"], rel=0.01)
    assert r200.metrics["baseline"]["service_p50_ms"] == pytest.approx(200 * r1.metrics["baseline"]["service_p50_ms"])


def test_capacity_is_zero_and_utilization_not_measured_when_idle_p99_misses_the_objective():
    r = LAB.run(seed=0, service_scale=2000.0, slo_ms=50.0, requests=2000, sweep_requests=500)
    assert r.metrics["baseline"]["capacity_rps"] == 0.0
    assert "idle" in r.reasons["baseline"]["utilization_at_capacity_pct"]
    assert "no capacity" in r.reasons["comparison"]["throughput_gain_x"] or "not measured" in \
        r.reasons["comparison"]["throughput_gain_x"]


# ---------------------------------------------------------------------- regions, computed by the lab
@pytest.fixture(scope="module")
def verdicts():
    return {v.id: v for v in LAB.check(0)}


REGIONS = {
    "q11.tail_ratio": ("fails", "fails everywhere tried"),
    "q11.p99_before": ("conditional", "holds only when rate_rps = 100 and service_scale = 200; or rate_rps = 1000 and "
                       "service_scale ≥ 20; or rate_rps = 4000 and service_scale ≥ 20; or rate_rps = 25000 and "
                       "service_scale ≥ 20"),
    "q11.p99_after": ("conditional", "holds only when rate_rps = 1; or rate_rps = 100; or rate_rps = 1000; or "
                      "rate_rps = 4000 and service_scale ≤ 20; or rate_rps = 25000 and service_scale = 1"),
    "q11.batching_gain": ("conditional", "holds only when width = 256 and max_batch_size = 4; or width = 2048 and "
                          "max_batch_size = 8"),
    "q11.batch_p99": ("conditional", "holds only when max_queue_delay_microseconds = 10000 and max_batch_size ≥ 4; or "
                      "max_queue_delay_microseconds = 50000 and max_batch_size ≥ 4"),
    "q11.int8_speedup": ("conditional", "holds only when width = 1024 and max_batch_size ≤ 32; or width = 2048 and "
                         "max_batch_size in {1, 64}"),
    "q11.int8_accuracy": ("holds", "holds for every setting tried"),
    "q11.throughput": ("conditional", "holds only when width = 256 and service_scale ≤ 20; or width = 1024 and "
                       "service_scale = 1; or width = 2048 and service_scale = 1"),
    "q11.utilization": ("conditional", "holds only when slo_ms = 50 and service_scale ≤ 20; or slo_ms = 300; or "
                        "slo_ms = 2000"),
}


@pytest.mark.parametrize("claim", sorted(REGIONS))
def test_each_claims_region_is_pinned(verdicts, claim):
    v = verdicts[claim]
    assert (v.verdict, v.region) == REGIONS[claim]


def test_every_control_makes_its_effect_vanish(verdicts):
    controlled = {cid: v.control for cid, v in verdicts.items() if v.control}
    assert {"q11.tail_ratio", "q11.p99_before", "q11.batching_gain", "q11.batch_p99"} <= set(controlled)
    for cid, ctl in controlled.items():
        assert ctl["vanishes"] is True, cid
    assert verdicts["q11.batching_gain"].control["measured"] == 1.0  # batches of one: no gain at all
    assert verdicts["q11.batch_p99"].control["measured"] == pytest.approx(1.0, abs=0.05)  # 1 req/s: batches never fill


def test_a_two_second_p99_needs_an_overloaded_queue(verdicts):
    """Where 'P99 >= 2000 ms' holds, the offered rate is above the unbatched server's saturation throughput."""
    for cell in verdicts["q11.p99_before"].grid:
        r = LAB.run(0, service_scale=cell["service_scale"], rate_rps=cell["rate_rps"])
        if cell["verdict"] == "holds":
            assert r.metrics["baseline"]["load_pct"] >= 100, cell
        elif r.metrics["baseline"]["load_pct"] >= 100:  # overloaded, but the window is too short to build 2 s
            assert r.notes and r.metrics["baseline"]["p99_ms"] < 2000, cell


def test_a_stable_queue_keeps_the_tail_ratio_near_the_exponential_one(verdicts):
    """Stable cells read P99/P50 between 2 and 8 (ln100/ln2 = 6.6 for exponential sojourns), overloaded ones about 2."""
    for cell in verdicts["q11.tail_ratio"].grid:
        assert 1.5 < cell["measured"] < 8, cell
