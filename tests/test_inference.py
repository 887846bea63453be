"""sim.inference: capacity within a P99 objective against the M/M/1 closed form, scaling, CPU flags."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sim.batcher import DynamicBatchingConfig, QuantileService
from sim.dist import Empirical
from sim.inference import TOP_LOAD, capacity_within_slo, cpu_differs, p99_at_rate, saturation_rps, scaled
from sim.profiles import Profile
from sim.rng import Streams


def _mm1(mu: float, n: int = 200_000, seed: int = 0):
    s = Streams(seed)
    unit = np.cumsum(s["arrivals"].exponential(1.0, n))
    svc = QuantileService(lambda b: stats.expon(scale=1 / mu), s["service"].random(n))
    return unit, DynamicBatchingConfig(1, (), 0, 1), svc


@pytest.mark.parametrize("slo_mean_services", [20.0, 50.0])
def test_capacity_within_slo_matches_the_mm1_sojourn_quantile(slo_mean_services):
    # M/M/1 FIFO sojourn is exponential with rate mu - lambda: P99 = ln(100) / (mu - lambda)
    mu = 1000.0
    slo = slo_mean_services / mu
    unit, cfg, svc = _mm1(mu)
    cap = capacity_within_slo(unit, cfg, svc, mu, slo)
    expected = mu - math.log(100) / slo
    assert cap == pytest.approx(expected, rel=0.05)  # a P99 from 200k correlated sojourns is good to ~5%
    assert p99_at_rate(unit, cap, cfg, svc) <= slo * 1.002


def test_capacity_is_zero_when_an_idle_server_misses_the_objective_and_capped_at_the_top_load():
    unit, cfg, svc = _mm1(1000.0, n=20_000)
    assert capacity_within_slo(unit, cfg, svc, 1000.0, slo_s=1e-3) == 0.0  # idle P99 = 4.6 ms
    assert capacity_within_slo(unit, cfg, svc, 1000.0, slo_s=1e3) == pytest.approx(TOP_LOAD * 1000.0)


def test_scaled_keeps_the_shape_and_multiplies_the_location():
    d = Empirical(np.array([1.0, 2.0, 3.0, 10.0]))
    s = scaled(d, 200.0)
    assert s.mean == pytest.approx(200 * d.mean)
    assert s.scv == pytest.approx(d.scv)
    assert scaled(d, 1.0) is d


def test_saturation_of_a_deterministic_batcher_is_batch_over_call_time():
    cfg = DynamicBatchingConfig(4, (), 0, 1)
    svc = QuantileService(lambda b: Empirical(np.array([1e-3 * (1 + b)])), np.full(100, 0.5))
    assert saturation_rps(cfg, svc, 1000) == pytest.approx(4 / 5e-3)


def test_cpu_differs_reads_the_profiles_provenance():
    prof = Profile("m", (1,), {1: np.array([1e-3])}, 0.9, {"cpu": "AMD EPYC"})
    assert not cpu_differs(prof, "AMD EPYC")
    assert cpu_differs(prof, "Intel(R) Xeon(R) Processor @ 2.50GHz")
    assert cpu_differs(Profile("m", (1,), {1: np.array([1e-3])}, 0.9, {}), "AMD EPYC")  # unknown counts as other
