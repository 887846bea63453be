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


def test_saturation_matches_the_renewal_capacity_and_drives_the_gain(default):
    m = default.metrics
    for arm in ("baseline", "pattern", "int8"):
        assert m[arm]["saturation_rps"] == pytest.approx(m[arm]["capacity_rps"], rel=0.05)
    assert m["comparison"]["throughput_gain_x"] == pytest.approx(m["comparison"]["capacity_gain_x"], rel=0.07)
    assert m["pattern"]["saturation_rps"] > m["baseline"]["saturation_rps"]


def test_overloaded_baseline_runs_at_its_capacity_and_batching_absorbs_the_load():
    r = LAB.run(seed=0, rate_rps=8000.0)
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
    assert r.metrics["pattern"]["capacity_rps"] == pytest.approx(cfg.capacity_rps(lambda b: service_dist(FP32, b).mean))


def test_cross_parameter_rules_refuse_before_simulating():
    with pytest.raises(ParamError, match="preferred_batch_size.*max_batch_size=8"):
        LAB.settings({"max_batch_size": 8, "preferred_batch_size": "16,32"})
    with pytest.raises(ParamError, match="sweep_requests.*requests=1000"):
        LAB.settings({"requests": 1000, "sweep_requests": 2000})
    LAB.settings({"max_batch_size": 32, "preferred_batch_size": "16,32"})  # the largest preferred size may equal it


def test_notes_state_provenance(default):
    text = " ".join(default.notes)
    assert "data/profiles/mlp.json" in text and "mlp_int8.json" in text
    assert profile(FP32).provenance.get("cpu", "?") in text
    assert 1 <= len(default.notes) <= 3


def test_arms_are_declared_with_glossaries():
    for arm in LAB.arms:
        assert arm.label and arm.glossary and "\n" not in arm.glossary
    assert LAB.assumptions


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=settings_strategy(LAB, ranges={"requests": (1000, 2000), "sweep_requests": (200, 2000)}),
       seed=st.integers(0, 3))
def test_any_valid_setting_runs_or_is_refused_with_one_line(values, seed):
    check_run(LAB, values, seed)
