"""sim.bulkhead against resilience4j's semaphore bulkhead and time limiter semantics."""
import math

import pytest
import simpy

from sim.bulkhead import Bulkhead, BulkheadConfig, guarded_call
from sim.metrics import ERROR, OK, REJECTED, TIMEOUT


def run_calls(config, calls, timeout=1.0):
    """calls: (start, duration, fails); returns [(index, end time, outcome)] and the bulkhead."""
    env = simpy.Environment()
    bh = Bulkhead(env, config)
    out = []

    def call(i, at, duration, fails):
        yield env.timeout(at)
        outcome, _ = yield from guarded_call(env, bh, duration, timeout, fails)
        out.append((i, env.now, outcome))

    for i, c in enumerate(calls):
        env.process(call(i, *c))
    env.run()
    return sorted(out), bh


def test_defaults_are_resilience4j_defaults():
    c = BulkheadConfig()
    assert c.max_concurrent_calls == 25 and c.max_wait_duration == 0.0


def test_full_bulkhead_rejects_at_once_when_max_wait_is_zero():
    out, bh = run_calls(BulkheadConfig(2, 0.0), [(0.0, 0.5, False)] * 4)
    assert [o for _, _, o in out] == [OK, OK, REJECTED, REJECTED]
    assert [t for _, t, o in out if o == REJECTED] == [0.0, 0.0]
    assert bh.rejected == 2 and bh.permitted == 2 and bh.peak == 2


def test_waiting_callers_get_permits_in_arrival_order_within_max_wait():
    # one permit; A holds it 0.2 s; B (t=0.05) and C (t=0.1) wait; B gets it at 0.2, C would get it
    # at 0.4 but gives up at 0.1 + 0.25 = 0.35
    out, bh = run_calls(BulkheadConfig(1, 0.25), [(0.0, 0.2, False), (0.05, 0.2, False), (0.1, 0.2, False)])
    assert out[0] == (0, 0.2, OK)
    assert out[1] == (1, pytest.approx(0.4), OK)
    assert out[2] == (2, pytest.approx(0.35), REJECTED)


def test_time_limiter_cancels_and_returns_the_permit_at_the_timeout():
    # a hung call holds its permit only until the 1 s timeout: the next caller gets it then
    out, _ = run_calls(BulkheadConfig(1, 5.0), [(0.0, math.inf, False), (0.1, 0.05, False)], timeout=1.0)
    assert out[0] == (0, 1.0, TIMEOUT)
    assert out[1] == (1, pytest.approx(1.05), OK)


def test_wait_for_a_permit_counts_against_the_time_limit():
    out, _ = run_calls(BulkheadConfig(1, 5.0), [(0.0, 0.8, False), (0.0, 0.5, False)], timeout=1.0)
    assert out[1] == (1, pytest.approx(1.0), TIMEOUT)  # waited 0.8 s, then 0.2 s left for a 0.5 s call


def test_failed_calls_end_in_time_as_errors():
    out, _ = run_calls(BulkheadConfig(), [(0.0, 0.01, True)])
    assert out == [(0, 0.01, ERROR)]


def test_config_refuses_nonsense():
    with pytest.raises(ValueError):
        BulkheadConfig(0)
    with pytest.raises(ValueError):
        BulkheadConfig(2, -1.0)
