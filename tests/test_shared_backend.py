"""Engine code moved out of the Q12 and Q13 labs: the farm with a shared back end, the fixed-utilisation
search, the load-step autoscaling run and the replayed regional outage."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sim.autoscaler import HPAConfig, run_load_step
from sim.balancer import LeastRequest, RingHash, RoundRobin, lindley_ends, simulate_farm, simulate_farm_backend
from sim.capacity import FarmSearch, rate_at_utilisation
from sim.failover import OutageReplay
from sim.geo import load_rtt_matrix


def draws(n=20000, rate=60.0, seed=1):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.exponential(1 / rate, n)), rng.exponential(0.1, n), rng.exponential(0.01, n)


@pytest.mark.parametrize("policy", [lambda: RoundRobin(), lambda: LeastRequest(np.random.default_rng(3), 2)])
def test_a_free_back_end_gives_the_plain_farm(policy):
    a, s, _ = draws(5000)
    plain, with_b = simulate_farm(a, s, policy(), 8), simulate_farm_backend(a, s, np.zeros(a.size), policy(), 8)
    assert np.array_equal(plain.host, with_b.host)
    np.testing.assert_allclose(with_b.end, plain.end, rtol=0, atol=1e-12)


class _OneAtATime:
    """A policy seen only through ``pick`` (no route, no candidates): the farm's generic path."""

    static = False

    def __init__(self, policy):
        self.policy = policy

    def pick(self, key, active, hosts):
        return self.policy.pick(key, active, hosts)


@pytest.mark.parametrize("make", [lambda: RoundRobin(), lambda: LeastRequest(np.random.default_rng(3), 2),
                                  lambda: RingHash(range(6), 64)])
def test_picks_drawn_up_front_equal_picks_one_at_a_time(make):
    a, s, b = draws(4000, rate=55.0)
    keys = np.random.default_rng(7).integers(0, 2**63, a.size).astype(np.uint64)
    fast, slow = (simulate_farm_backend(a, s, b, pol, 6, keys) for pol in (make(), _OneAtATime(make())))
    for field in ("host", "start", "end"):
        assert np.array_equal(getattr(fast, field), getattr(slow, field))


def test_one_replica_never_queues_at_the_back_end():
    # one worker issues one call at a time, so each call finds the back end idle: a single FIFO
    # station whose service is inference + call (the Lindley recursion, per request)
    a, s, b = draws(5000, rate=8.0)
    run = simulate_farm_backend(a, s, b, RoundRobin(), 1)
    np.testing.assert_allclose(run.end, lindley_ends(a, s + b), rtol=0, atol=1e-9)


def test_many_replicas_see_an_mm1_back_end():
    # 60 replicas at low load start a request on arrival, so calls arrive as a Poisson stream:
    # the back end is an M/M/1 at 60 / 100 = 0.6, mean response 10 ms / (1 - 0.6) = 25 ms
    a, s, b = draws(60000, rate=60.0)
    run = simulate_farm_backend(a, s, b, LeastRequest(np.random.default_rng(5), 2), 60)
    response = (run.end - run.start - s)[6000:]
    assert response.mean() == pytest.approx(0.025, rel=0.08)
    assert np.all(run.end - run.start >= s + b - 1e-12)


def test_rate_at_utilisation_finds_the_root_of_a_known_curve():
    curve = lambda r: r * 0.1 / (1 - r / 200)  # noqa: E731  (a busy share that bends up near 200 req/s)
    r = rate_at_utilisation(curve, 0.7, 199.0)
    assert curve(r) == pytest.approx(0.7, rel=3e-3)
    assert rate_at_utilisation(lambda r: r * 0.01, 0.7, 10.0) == 10.0  # the top is feasible: take it


def test_farm_search_is_linear_without_a_back_end_and_sublinear_with_one():
    a, s, b = draws(6000, rate=1.0)
    free = FarmSearch(a, s, lambda n: RoundRobin(), 0.1)
    assert free.rate_at_utilisation(10, 0.7, 0.1) == pytest.approx(70.0)
    shared = FarmSearch(a, s, lambda n: RoundRobin(), 0.1, backend=b * 1.0)  # 100 req/s back end
    one, ten = shared.rate_at_utilisation(1, 0.7, 1.0, 100.0), shared.rate_at_utilisation(10, 0.7, 0.1, 100.0)
    assert 6.0 < one < 7.0
    assert 8.0 < ten / one < 9.7


def test_load_step_scale_out_is_the_cold_start_rounded_up_to_the_probe():
    rng = np.random.default_rng(2)
    a = np.sort(np.concatenate([rng.uniform(0, 60, 480), rng.uniform(60, 480, 21000)]))
    s = rng.exponential(0.1, a.size)
    run = run_load_step(a, s, LeastRequest(rng, 2), HPAConfig(target=70.0, min_replicas=2, max_replicas=20),
                        cold_start_s=45.0, readiness_period_s=10.0, client_timeout_s=30.0, step_at_s=60.0,
                        horizon_s=480.0, slo_s=1.0)
    assert 50.0 <= run.scale_out_s < 51.0 and 0 < run.detection_s <= 15.0
    assert run.ups >= 1 and run.replicas_final > 2
    assert (run.timeline["ready_replicas"] <= run.timeline["spec_replicas"]).all()
    assert math.isfinite(run.recovery_s) and run.recovery_s > run.detection_s + run.scale_out_s - 10


def test_outage_replay_detection_and_reroute():
    geo = load_rtt_matrix()
    rng = np.random.default_rng(0)
    weights = np.full(len(geo.areas), 1 / len(geo.areas))
    rep = OutageReplay(geo.backbone_ms, (0, 1, 2), 0, weights, 10, rng.random((10, 8)),
                       rng.random((10, len(geo.areas) * 10)), 100.0, 400.0)
    assert rep.affected.size and np.all(rep.steady[rep.affected // 10] == 0)
    health = rep.health(10, 1)
    runs = rep.runs(health, 0.0)
    assert all(0 < r["detection_time_s"] <= 10 for r in runs)
    assert all(r["failover_time_s"] == r["detection_time_s"] for r in runs)  # no cache: moved on detection
    slow = rep.mean_failover(30, 3, (0.0, 60.0))
    assert 60 <= slow[0] <= 90 and slow[1] > slow[0] + 40
