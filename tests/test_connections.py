"""sim.connections: round trips per connection policy (TCP, TLS 1.3, HTTP/1.1 keep-alive, HTTP/2 streams)."""
from __future__ import annotations

import numpy as np
import pytest

from sim.connections import CallCost, Link, closed_loop, little_bound_rps, open_loop, throughput


def _cost(n, client=100e-6, server=300e-6, **kw):
    return CallCost(np.full(n, client), server, **kw)


@pytest.mark.parametrize("policy,tls,rtts", [("per_request", True, 3), ("per_request", False, 2),
                                             ("keep_alive", True, 1), ("multiplexed", True, 1)])
def test_one_idle_call_pays_the_reference_round_trips(policy, tls, rtts):
    rtt = 0.010
    cost = _cost(1, tls_server_s=400e-6, tls_client_s=600e-6, connect_server_s=50e-6)
    run = open_loop(np.array([0.0]), cost, Link(rtt), policy, tls=tls)
    extra = (400e-6 + 600e-6 if tls else 0.0) + 50e-6 if policy == "per_request" else 0.0
    assert run.latency_s[0] == pytest.approx(rtts * rtt + 100e-6 + 300e-6 + extra, abs=1e-12)


def test_bandwidth_adds_the_request_bytes_once():
    cost = CallCost(np.zeros(1), 0.0, request_bytes=125_000)
    run = open_loop(np.array([0.0]), cost, Link(0.0, 1.25e9), "keep_alive")  # 10 Gbit/s: 100 us
    assert run.latency_s[0] == pytest.approx(1e-4)


def test_keep_alive_pool_throughput_is_littles_bound_when_the_network_dominates():
    cost, link = _cost(4000), Link(0.020)
    run = closed_loop(4000, 64, cost, link, "keep_alive", slots=10)
    rps, (lo, hi) = throughput(run)
    bound = little_bound_rps(10, cost, link)  # 10 / 20.4 ms
    assert rps == pytest.approx(bound, rel=0.01)
    assert lo <= bound * 1.01 and hi >= bound * 0.99


def test_multiplexed_and_new_connections_are_cpu_bound():
    cost, link = _cost(4000, tls_server_s=200e-6), Link(0.020)
    mux, _ = throughput(closed_loop(4000, 100, cost, link, "multiplexed", slots=100))
    fresh, _ = throughput(closed_loop(4000, 200, cost, link, "per_request", tls=True))
    assert mux == pytest.approx(1 / 300e-6, rel=0.01)  # 100 callers / 20.4 ms = 4900 > 3333
    assert fresh == pytest.approx(1 / 500e-6, rel=0.01)  # the server's handshake share queues on its core


def test_callers_cap_a_multiplexed_connection_too():
    cost, link = _cost(3000), Link(0.050)
    rps, _ = throughput(closed_loop(3000, 16, cost, link, "multiplexed", slots=100))
    assert rps == pytest.approx(16 / (0.050 + 400e-6), rel=0.01)


def test_server_is_an_md1_queue_when_the_network_is_free():
    # Poisson arrivals, constant 1 ms service, one core: M/D/1 mean wait rho / (2 mu (1 - rho))
    rng = np.random.default_rng(1)
    n, lam, s = 60_000, 700.0, 1e-3
    arrivals = np.cumsum(rng.exponential(1 / lam, n))
    run = open_loop(arrivals, CallCost(np.zeros(n), s), Link(0.0), "multiplexed", slots=10**6)
    rho = lam * s
    expected = s + rho * s / (2 * (1 - rho))
    assert np.nanmean(run.latency_s) == pytest.approx(expected, rel=0.05)
    assert run.busy_s == pytest.approx(n * s)


def test_more_cores_serve_more():
    cost, link = _cost(3000), Link(0.001)
    one, _ = throughput(closed_loop(3000, 64, cost, link, "multiplexed", cores=1, slots=100))
    two, _ = throughput(closed_loop(3000, 64, cost, link, "multiplexed", cores=2, slots=100))
    assert two == pytest.approx(2 * one, rel=0.02)


def test_bad_policy_and_costs_are_refused():
    with pytest.raises(ValueError, match="policy"):
        open_loop(np.array([0.0]), _cost(1), Link(), "pipelined")
    with pytest.raises(ValueError):
        CallCost(np.zeros(1), -1.0)
