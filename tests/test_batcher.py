"""sim.batcher against Triton's dynamic-batcher rules (REFERENCES.md §5), step by step, in both engines."""
from __future__ import annotations

import numpy as np
import pytest

from sim.analytic import kiefer_wolfowitz
from sim.batcher import (DynamicBatchingConfig, QuantileService, saturation_throughput, simulate_batching,
                         simulate_batching_simpy)
from sim.dist import Empirical

ENGINES = {"fast": simulate_batching, "simpy": simulate_batching_simpy}


def const(seconds):
    return lambda b, k: seconds


def run_both(arrivals, cfg, service):
    """Run both engines; they must agree request by request; return the fast one."""
    fast = simulate_batching(arrivals, cfg, service)
    slow = simulate_batching_simpy(arrivals, cfg, service)
    np.testing.assert_array_equal(fast.batch_size, slow.batch_size)
    np.testing.assert_array_equal(fast.batch_sizes, slow.batch_sizes)
    np.testing.assert_allclose(fast.dispatch, slow.dispatch, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast.end, slow.end, rtol=0, atol=1e-9)
    return fast


# ---------------------------------------------------------------- the rule itself
@pytest.mark.parametrize("cfg, queued, expired, expected", [
    (DynamicBatchingConfig(8), 5, False, 5),                       # no delay: everything queued, at once
    (DynamicBatchingConfig(8), 12, False, 8),                      # ... up to max_batch_size
    (DynamicBatchingConfig(8, (2, 4)), 7, False, 4),               # largest preferred size that can be formed
    (DynamicBatchingConfig(8, (2, 4)), 3, False, 2),
    (DynamicBatchingConfig(8, (2, 4)), 1, False, 1),               # no preferred formable, no delay: send
    (DynamicBatchingConfig(8, (2, 4)), 20, False, 4),              # a backlog still goes in preferred sizes
    (DynamicBatchingConfig(8, (), 1000), 5, False, 0),             # delay set, nothing formed: hold
    (DynamicBatchingConfig(8, (), 1000), 5, True, 5),              # delay over: send as it is
    (DynamicBatchingConfig(8, (), 1000), 9, False, 8),             # the maximum is formed: send now
    (DynamicBatchingConfig(8, (4,), 1000), 3, False, 0),
    (DynamicBatchingConfig(8, (4,), 1000), 5, False, 4),           # a preferred size is formed: send now
    (DynamicBatchingConfig(8, (4,), 1000), 0, True, 0),            # nothing queued: nothing to send
])
def test_batch_size_rule(cfg, queued, expired, expected):
    assert cfg.batch_size(queued, expired) == expected


def test_config_defaults_and_validation():
    cfg = DynamicBatchingConfig()
    assert (cfg.max_batch_size, cfg.preferred_batch_size, cfg.max_queue_delay_microseconds, cfg.instance_count) == (1, (), 0, 1)
    assert DynamicBatchingConfig(16, (8, 4, 8)).preferred_batch_size == (4, 8)
    assert DynamicBatchingConfig(16, (4, 8)).saturated_batch_size == 8
    assert DynamicBatchingConfig(16).saturated_batch_size == 16
    assert DynamicBatchingConfig(16, (4, 8), 100).next_trigger(5) == 8
    assert DynamicBatchingConfig(16, (4, 8), 100).next_trigger(9) == 16
    for bad in (dict(max_batch_size=0), dict(max_batch_size=4, preferred_batch_size=(8,)),
                dict(max_queue_delay_microseconds=-1), dict(instance_count=0), dict(max_batch_size=2.5)):
        with pytest.raises(ValueError):
            DynamicBatchingConfig(**bad)


# ---------------------------------------------------------------- step by step, both engines
@pytest.mark.parametrize("engine", ENGINES)
def test_no_delay_sends_what_is_queued_up_to_the_maximum(engine):
    # an idle instance takes the first request alone; the next five wait and go 4 + 1
    r = ENGINES[engine]([0, 0.1, 0.2, 0.3, 0.4, 0.5], DynamicBatchingConfig(4), const(1.0))
    assert r.batch_sizes.tolist() == [1, 4, 1]
    assert r.dispatch.tolist() == [0, 1, 1, 1, 1, 2]
    assert r.end.tolist() == [1, 2, 2, 2, 2, 3]


@pytest.mark.parametrize("engine", ENGINES)
def test_largest_preferred_size_first(engine):
    arrivals = [0] + [0.1 * k for k in range(1, 8)]
    r = ENGINES[engine](arrivals, DynamicBatchingConfig(8, (2, 4)), const(1.0))
    # t=1: 7 queued -> 4 (largest preferred); t=2: 3 -> 2; t=3: 1 -> 1 (no preferred, no delay)
    assert r.batch_sizes.tolist() == [1, 4, 2, 1]
    assert r.batch_start.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("engine", ENGINES)
def test_delay_holds_until_it_expires_or_an_arrival_completes_the_maximum(engine):
    cfg = DynamicBatchingConfig(4, (), 500_000)  # 0.5 s
    r = ENGINES[engine]([0, 0.1, 0.2, 1.0, 1.1, 1.2, 1.3], cfg, const(0.05))
    # the first three wait for the oldest one's deadline (0.5 s) and go together
    # the next four: the fourth arrival (1.3 s) completes max_batch_size before the deadline (1.5 s)
    assert r.batch_sizes.tolist() == [3, 4]
    assert r.dispatch.tolist() == pytest.approx([0.5] * 3 + [1.3] * 4)


@pytest.mark.parametrize("engine", ENGINES)
def test_arrival_completing_a_preferred_size_sends_it_at_once(engine):
    cfg = DynamicBatchingConfig(8, (2,), 1_000_000)  # 1 s
    r = ENGINES[engine]([0, 0.2, 0.3], cfg, const(0.01))
    # request 2 completes a preferred batch of 2 at 0.2 s; request 3 is alone and waits its full second
    assert r.batch_sizes.tolist() == [2, 1]
    assert r.dispatch.tolist() == pytest.approx([0.2, 0.2, 1.3])


@pytest.mark.parametrize("engine", ENGINES)
def test_delay_that_expires_while_busy_sends_when_an_instance_frees(engine):
    cfg = DynamicBatchingConfig(4, (), 200_000)  # 0.2 s
    r = ENGINES[engine]([0, 0.5, 0.6], cfg, const(1.0))
    # request 1 waits out its 0.2 s alone; 2 and 3 pass their deadline (0.7 s) while the instance
    # is busy until 1.2 s, and then go at once, as they are
    assert r.batch_sizes.tolist() == [1, 2]
    assert r.dispatch.tolist() == pytest.approx([0.2, 1.2, 1.2])


@pytest.mark.parametrize("engine", ENGINES)
def test_instances_take_batches_in_parallel(engine):
    cfg = DynamicBatchingConfig(2, (), 0, instance_count=2)
    r = ENGINES[engine]([0, 0.1, 0.2, 0.3, 0.4], cfg, const(1.0))
    # A: [0] at 0; B: [0.1] at 0.1; A frees at 1.0 -> 2 of the 3 queued; B frees at 1.1 -> the last
    assert r.batch_sizes.tolist() == [1, 1, 2, 1]
    assert r.dispatch.tolist() == pytest.approx([0, 0.1, 1.0, 1.0, 1.1])
    assert r.utilization(2.1) == pytest.approx((1 + 1 + 1 + 1) / (2 * 2.1))


@pytest.mark.parametrize("engine", ENGINES)
def test_arrival_at_the_instant_an_instance_frees_joins_that_batch(engine):
    r = ENGINES[engine]([0, 1.0, 1.0], DynamicBatchingConfig(4), const(1.0))
    assert r.batch_sizes.tolist() == [1, 2]
    assert r.dispatch.tolist() == [0, 1, 1]


@pytest.mark.parametrize("engine", ENGINES)
def test_batch_time_depends_on_the_formed_size(engine):
    r = ENGINES[engine]([0, 0.01, 0.02, 0.03], DynamicBatchingConfig(8), lambda b, k: 0.1 * b)
    assert r.batch_sizes.tolist() == [1, 3]
    assert r.end.tolist() == pytest.approx([0.1, 0.4, 0.4, 0.4])


def test_max_batch_size_one_is_a_fifo_multi_server_queue():
    rng = np.random.default_rng(3)
    a = np.cumsum(rng.exponential(1.0, 3000))
    s = rng.exponential(1.6, 3000)
    for c in (1, 2):
        r = run_both(a, DynamicBatchingConfig(1, (), 0, c), lambda b, k: s[k])
        wait = kiefer_wolfowitz(np.diff(a, prepend=0.0), s, c)
        np.testing.assert_allclose(r.dispatch - a, wait, rtol=0, atol=1e-9)


# ---------------------------------------------------------------- the engines agree on random inputs
@pytest.mark.parametrize("cfg", [
    DynamicBatchingConfig(32),
    DynamicBatchingConfig(8, (2, 4), 2000),
    DynamicBatchingConfig(16, (), 5000, 2),
    DynamicBatchingConfig(64, (8, 16, 32), 10000, 3),
    DynamicBatchingConfig(4, (3,), 0, 2),
])
@pytest.mark.parametrize("rate", [300.0, 3000.0, 30000.0])
def test_fast_engine_equals_simpy_request_by_request(cfg, rate):
    rng = np.random.default_rng(int(rate) + cfg.max_batch_size)
    a = np.cumsum(rng.exponential(1 / rate, 1500))
    svc = QuantileService(lambda b: Empirical(1e-3 * (0.2 + 0.01 * b) * rng.lognormal(0, 0.5, 50)), rng.random(1500))
    r = run_both(a, cfg, svc)
    assert r.batch_sizes.sum() == a.size
    assert np.all(r.batch_sizes <= cfg.max_batch_size)
    assert np.all(r.dispatch >= a) and np.all(r.end > r.dispatch)
    # requests go in arrival order
    assert np.all(np.diff(r.dispatch) >= 0)


def test_littles_law_on_a_batching_run():
    rng = np.random.default_rng(7)
    a = np.cumsum(rng.exponential(1 / 2000, 40000))
    r = simulate_batching(a, DynamicBatchingConfig(16, (), 1000), lambda b, k: 1e-3 * (0.3 + 0.02 * b))
    horizon = r.end.max()
    t = np.linspace(0, horizon, 20001)[1:-1]
    in_system = np.searchsorted(a, t, side="right") - np.searchsorted(np.sort(r.end), t, side="right")
    lam = a.size / horizon
    assert in_system.mean() == pytest.approx(lam * r.latency.mean(), rel=0.03)


# ---------------------------------------------------------------- service times and saturation
def test_quantile_service_is_comonotone_across_batch_sizes():
    rng = np.random.default_rng(0)
    base = rng.lognormal(0, 1, 200)
    u = rng.random(500)
    svc = QuantileService(lambda b: Empirical(base * b), u)
    one = np.array([svc(1, k) for k in range(500)])
    assert np.array_equal(np.array([svc(4, k) for k in range(500)]), 4 * one)  # same rank, other size
    np.testing.assert_array_equal(svc.draws(1, 500), one)
    # the draws follow the empirical distribution (inverse transform of sorted samples)
    assert np.array_equal(one, np.sort(base)[(u * 200).astype(int)])
    assert svc.mean(2) == pytest.approx(2 * base.mean())


def test_saturation_throughput_is_the_renewal_capacity():
    cfg = DynamicBatchingConfig(8, (), 0, 2)
    # deterministic 4 ms per batch of 8 on 2 instances: 2 * 8 / 0.004 = 4000 req/s
    assert saturation_throughput(cfg, const(0.004), 8000) == pytest.approx(4000)
    assert cfg.capacity_rps(lambda b: 0.004) == pytest.approx(4000)
    pref = DynamicBatchingConfig(16, (4,), 0)
    assert saturation_throughput(pref, lambda b, k: 0.001 * b, 400) == pytest.approx(1000)  # batches of 4
    rng = np.random.default_rng(1)
    svc = QuantileService(lambda b: Empirical(1e-3 * b ** 0.5 * rng.lognormal(0, 0.4, 200)), rng.random(5000))
    cfg = DynamicBatchingConfig(16)
    assert saturation_throughput(cfg, svc, 16 * 5000) == pytest.approx(cfg.capacity_rps(svc.mean), rel=0.02)


def test_bad_arrivals_are_refused():
    with pytest.raises(ValueError):
        simulate_batching([1.0, 0.5], DynamicBatchingConfig(4), const(1.0))
    with pytest.raises(ValueError):
        QuantileService(lambda b: Empirical([1.0]), [1.0])
