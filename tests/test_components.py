"""Semantics of the simulator's building blocks (sim.components, sim.rng, sim.dist,
sim.metrics) on hand-made schedules with exact answers, and on seeded draws
with statistical tolerances of at least 4 standard errors (fixed seeds, so
deterministic; the tolerances are wide enough to pass for almost every seed)."""
import math

import numpy as np
import pytest
import simpy
from scipy import signal, stats

from sim.components import (
    FaultSchedule, Link, Outage, ReplicaPool, Slots, constant_arrivals, drive, on_off_arrivals,
    poisson_arrivals, profile_arrivals, ramp_arrivals, step_arrivals,
)
from sim.dist import Deterministic, Empirical, Exponential, Lognormal, Mixture, Uniform
from sim.metrics import (
    FALLBACK, OK, PENDING, REJECTED, TIMEOUT, RequestLog, TimeWeighted, batch_means,
    summarize, t_interval, windowed,
)
from sim.rng import Streams


# ------------------------------------------------------------------ helpers

def run_pool(pool_kwargs, arrivals, services, patience=None, probes=(), until=None):
    """Drive a ReplicaPool with explicit arrival times and service times.

    ``patience[i]`` (if given) is passed as the per-call timeout. ``probes``
    are times at which (in_queue, in_service) is recorded. Returns
    (results, pool, probe_values) with results[i] = (outcome, start, leave_time).
    """
    env = simpy.Environment()
    pool = ReplicaPool(env, **pool_kwargs)
    results = {}

    def customer(i):
        kw = {} if patience is None else {"timeout": patience[i]}
        outcome, start = yield from pool.serve(services[i], **kw)
        results[i] = (outcome, float(start), float(env.now))

    seen = {}

    def probe():
        for t in probes:
            yield env.timeout(t - env.now)
            seen[t] = (pool.in_queue, pool.in_service)

    env.process(drive(env, np.asarray(arrivals, dtype=float), customer))
    env.process(probe())
    env.run(until=until)
    return results, pool, seen


def z_ok(observed, expected, sd, z=4.0):
    return abs(observed - expected) <= z * sd


# ------------------------------------------------------------------ ReplicaPool

def test_queue_limit_rejects_only_when_all_servers_busy_and_queue_full():
    # 1 server, room for 2 waiting; service 10 s each.
    arrivals = [0.0, 0.1, 0.2, 0.3, 25.0]
    res, pool, seen = run_pool({"servers": 1, "queue_limit": 2}, arrivals, [10.0] * 5, probes=[0.25, 0.35])
    assert [res[i][0] for i in range(5)] == [OK, OK, OK, REJECTED, OK]
    assert res[3][1:] == (0.3, 0.3)  # rejected at once, at its arrival
    assert [res[i][1] for i in (0, 1, 2, 4)] == [0.0, 10.0, 20.0, 30.0]  # FIFO, 25 waits for 20..30
    assert seen[0.25] == (2, 1) and seen[0.35] == (2, 1)  # the rejected one never took a slot
    assert pool.completed == 4


def test_queue_limit_zero_admits_while_a_server_is_free():
    # 2 servers, no waiting room: the second arrival finds a free server (accepted),
    # the third finds both busy (rejected), the fourth comes after a departure.
    arrivals = [0.0, 0.1, 0.2, 5.5]
    res, pool, _ = run_pool({"servers": 2, "queue_limit": 0}, arrivals, [5.0, 10.0, 1.0, 1.0])
    assert [res[i][0] for i in range(4)] == [OK, OK, REJECTED, OK]
    assert res[3][1] == 5.5


def test_pool_patience_times_out_waiting_request():
    # pool-level timeout 2 s: customer 1 arrives at 1 behind a 10 s job and leaves at 3
    res, pool, seen = run_pool({"servers": 1, "timeout": 2.0}, [0.0, 1.0], [10.0, 1.0], probes=[2.0, 3.5])
    assert res[0] == (OK, 0.0, 10.0)
    assert res[1] == (TIMEOUT, 3.0, 3.0)
    assert seen[2.0] == (1, 1) and seen[3.5] == (0, 1)
    assert pool.queue.mean(10.0) == pytest.approx(2.0 / 10.0, rel=1e-12)  # waited 1..3
    assert pool.completed == 1


def test_patience_is_not_applied_to_a_request_served_at_once():
    # a free server: service starts immediately and runs its full length past the patience
    res, _, _ = run_pool({"servers": 1, "timeout": 1.0}, [0.0], [5.0])
    assert res[0] == (OK, 0.0, 5.0)


def test_timed_out_request_frees_its_queue_slot():
    # 1 server, 1 waiting slot. 1 waits with patience 2 (leaves at 3); 2 arrives at 4 and
    # must be admitted into the freed slot; 3 arrives at 4.5 and finds the slot taken by 2.
    arrivals = [0.0, 1.0, 4.0, 4.5]
    patience = [None, 2.0, None, None]
    res, pool, seen = run_pool({"servers": 1, "queue_limit": 1}, arrivals, [10.0, 1.0, 1.0, 1.0],
                               patience=patience, probes=[3.5])
    assert seen[3.5] == (0, 1)
    assert res[1] == (TIMEOUT, 3.0, 3.0)
    assert res[2] == (OK, 10.0, 11.0)
    assert res[3][0] == REJECTED
    # queue area: customer 1 waited 1..3, customer 2 waited 4..10
    assert pool.queue.mean(11.0) * 11.0 == pytest.approx(2.0 + 6.0, rel=1e-12)


def test_patience_expiring_as_a_server_frees_does_not_leak_the_server():
    # Customer 2's patience ends at 0.5 + 1.5 = 2.0, exactly when customer 1 (who
    # started at 1.0, after customer 2 arrived) finishes. Whichever way SimPy orders
    # the two events, the replica must not stay held by a request nobody serves.
    arrivals = [0.0, 0.1, 0.5, 5.0]
    patience = [None, None, 1.5, None]
    res, pool, seen = run_pool({"servers": 1}, arrivals, [1.0] * 4, patience=patience, probes=[2.5])
    assert res[1] == (OK, 1.0, 2.0)
    assert res[2][0] in (OK, TIMEOUT) and res[2][1] == 2.0
    assert seen[2.5] == ((0, 1) if res[2][0] == OK else (0, 0))
    assert res[3] == (OK, 5.0, 6.0)  # served at once: the replica is free
    assert pool.in_service == 0 and pool.in_queue == 0


def test_slots_grant_first_come_first_served_like_simpy_resource():
    # 2 slots, holds of 3 s from arrivals 0, 0.5, 1, 1.5, 2: the same start times as simpy.Resource,
    # a free slot taken without an event, a waiter that gives up leaving the queue
    arrivals, hold = [0.0, 0.5, 1.0, 1.5, 2.0], 3.0
    starts = {}
    for kind in ("slots", "resource"):
        env = simpy.Environment()
        res = Slots(env, 2) if kind == "slots" else simpy.Resource(env, capacity=2)
        got = starts[kind] = {}

        def user(i, env=env, res=res, got=got):
            if isinstance(res, Slots):
                ev = res.take()
                if i == 0:
                    assert ev is None and res.count == 1  # free: held at once
                if ev is not None:
                    yield ev
                got[i] = env.now
                yield env.timeout(hold)
                res.give()
            else:
                with res.request() as req:
                    yield req
                    got[i] = env.now
                    yield env.timeout(hold)

        env.process(drive(env, np.array(arrivals), user))
        env.run()
        assert (res.count, len(res.waiting if kind == "slots" else res.queue)) == (0, 0)
    assert starts["slots"] == starts["resource"] == {0: 0.0, 1: 0.5, 2: 3.0, 3: 3.5, 4: 6.0}

    env = simpy.Environment()
    s = Slots(env, 1)
    assert s.take() is None
    a, b = s.take(), s.take()
    s.leave(a)  # gave up while queued
    assert list(s.waiting) == [b]
    s.give()  # handed straight to b
    assert b.triggered and s.count == 1
    s.leave(b)  # handed over in the instant it gave up: passed on (nobody waits, so freed)
    assert s.count == 0 and not s.waiting
    with pytest.raises(ValueError):
        Slots(env, 0)


def test_utilization_bookkeeping_on_hand_made_schedule():
    # 2 servers. A: 0..4, B: 1..3, C arrives 2, waits until 3, served 3..6.
    # busy: [0,1)=1, [1,4)=2, [4,6)=1 -> area 1 + 6 + 2 = 9 server-seconds.
    env = simpy.Environment()
    pool = ReplicaPool(env, servers=2, keep_history=True)
    starts = {}

    def customer(i, svc):
        outcome, start = yield from pool.serve(svc)
        starts[i] = (outcome, start)

    env.process(drive(env, np.array([0.0, 1.0, 2.0]),
                      lambda i: customer(i, [4.0, 2.0, 3.0][i])))
    env.run(until=8.0)
    assert starts == {0: (OK, 0.0), 1: (OK, 1.0), 2: (OK, 3.0)}
    assert pool.utilization(2.0) == pytest.approx(3.0 / 4.0, rel=1e-12)
    assert pool.utilization(6.0) == pytest.approx(9.0 / 12.0, rel=1e-12)
    assert pool.utilization() == pytest.approx(9.0 / 16.0, rel=1e-12)  # now = 8, idle since 6
    assert pool.queue.mean(6.0) == pytest.approx(1.0 / 6.0, rel=1e-12)
    s = pool.busy.series()
    # value in force at each instant (last update at or before t)
    at = lambda t: s["value"][s["time_s"] <= t].iloc[-1]
    assert [at(t) for t in (0.5, 1.5, 2.5, 3.5, 4.5, 5.9, 7.0)] == [1, 2, 2, 2, 1, 1, 0]
    assert pool.completed == 3


def test_pool_rejects_bad_parameters():
    env = simpy.Environment()
    with pytest.raises(ValueError):
        ReplicaPool(env, servers=0)
    with pytest.raises(ValueError):
        ReplicaPool(env, servers=1, queue_limit=-1)


# ------------------------------------------------------------------ Link

def _transit_all(link_seed, order, n, loss):
    """Traverse a Link in the given request order; return {index: (delay, delivered)}."""
    env = simpy.Environment()
    link = Link(env, Lognormal(0.02, 1.5), Streams(link_seed)["link"], capacity=n, loss=loss)
    out = {}

    def one(i):
        t0 = env.now
        delivered = yield from link.transit(i)
        out[i] = (env.now - t0, delivered)

    def source():
        for i in order:
            yield from one(i)
            yield env.timeout(0.5)  # later requests see a different clock

    env.process(source())
    env.run()
    return out


def test_link_delays_are_per_request_index_across_environments():
    n = 500
    fwd = _transit_all(11, range(n), n, loss=0.2)
    rev = _transit_all(11, [i for i in reversed(range(n)) if i % 3], n, loss=0.2)  # other order, a subset
    assert len(rev) < n
    for i, (d, ok) in rev.items():
        assert d == pytest.approx(fwd[i][0], abs=1e-12)
        assert ok == fwd[i][1]
    delays = np.array([fwd[i][0] for i in range(n)])
    assert np.unique(delays).size == n  # really random per index, not one constant
    other = _transit_all(12, range(n), n, loss=0.2)  # another seed gives other delays
    assert not np.allclose(delays, [other[i][0] for i in range(n)])


def test_link_loss_fraction():
    n = 20_000
    env = simpy.Environment()
    link = Link(env, Deterministic(0.001), Streams(3)["link"], capacity=n, loss=0.1)
    delivered = []

    def source():
        for i in range(n):
            delivered.append((yield from link.transit(i)))

    env.process(source())
    env.run()
    lost = 1 - np.mean(delivered)
    assert z_ok(lost, 0.1, math.sqrt(0.1 * 0.9 / n))
    assert env.now == pytest.approx(n * 0.001, rel=1e-9)
    no_loss = Link(env, Deterministic(0.001), Streams(3)["link"], capacity=10)
    assert not no_loss.lost.any()
    with pytest.raises(ValueError):
        Link(env, Deterministic(0.001), Streams(3)["link"], capacity=10, loss=1.0)


# ------------------------------------------------------------------ arrivals

def test_poisson_arrivals_rate_and_exponential_gaps():
    rate, n = 50.0, 20_000
    t = poisson_arrivals(Streams(1)["arrivals"], rate, n, start=100.0)
    assert t.size == n and t[0] > 100.0 and np.all(np.diff(t) > 0)
    span = t[-1] - 100.0  # Gamma(n, rate): rate estimate n/span has relative sd 1/sqrt(n)
    assert z_ok(n / span, rate, rate / math.sqrt(n))
    gaps = np.diff(np.concatenate([[100.0], t]))
    assert stats.kstest(gaps * rate, "expon").pvalue > 1e-3
    with pytest.raises(ValueError):
        poisson_arrivals(Streams(1)["arrivals"], 0.0, 10)


def test_constant_arrivals_spacing():
    t = constant_arrivals(4.0, 1000, start=2.0)
    assert t.size == 1000
    assert t[0] == pytest.approx(2.25) and t[-1] == pytest.approx(2.0 + 1000 / 4.0)
    np.testing.assert_allclose(np.diff(t), 0.25, rtol=1e-9)
    with pytest.raises(ValueError):
        constant_arrivals(-1.0, 5)


def test_step_arrivals_counts_before_and_after_the_step():
    s, reps = Streams(2), 30
    before = after = 0
    for r in range(reps):
        t = step_arrivals(s[f"step/{r}"], before=10.0, after=40.0, at=60.0, horizon=120.0)
        assert np.all(np.diff(t) >= 0) and t.min() >= 0 and t.max() <= 120.0
        before += np.sum(t < 60.0)
        after += np.sum(t >= 60.0)
    # Poisson counts: expected 600 and 2400 per replication
    assert z_ok(before, 600 * reps, math.sqrt(600 * reps))
    assert z_ok(after, 2400 * reps, math.sqrt(2400 * reps))


def test_step_is_sharp():
    # Just before the step the old rate holds, just after it the new one. (The rate
    # profile used to be integrated with one rate value at the step, which smeared
    # half the jump over the grid cell before it: 2.3 instead of 1.0 arrivals in
    # [59.9, 60) here, and horizon / 4096 wide on any horizon.)
    s, reps = Streams(5), 400
    before = after = 0
    for r in range(reps):
        t = step_arrivals(s[f"step/{r}"], before=10.0, after=100.0, at=60.0, horizon=120.0)
        before += np.sum((t >= 59.9) & (t < 60.0))
        after += np.sum((t >= 60.0) & (t < 60.1))
    assert z_ok(before, 1.0 * reps, math.sqrt(1.0 * reps))
    assert z_ok(after, 10.0 * reps, math.sqrt(10.0 * reps))


def test_ramp_arrivals_mean_rate_and_shape():
    s, reps = Streams(4), 20
    first = second = 0
    for r in range(reps):
        t = ramp_arrivals(s[f"ramp/{r}"], 10.0, 50.0, horizon=100.0)
        first += np.sum(t < 50.0)
        second += np.sum(t >= 50.0)
    # rate 10 + 0.4 t: integral 1000 over [0, 50), 2000 over [50, 100); mean rate 30
    assert z_ok(first, 1000 * reps, math.sqrt(1000 * reps))
    assert z_ok(second, 2000 * reps, math.sqrt(2000 * reps))
    assert z_ok((first + second) / (100.0 * reps), 30.0, math.sqrt(3000 * reps) / (100.0 * reps))


def test_profile_arrivals_validation_and_zero_rate():
    rng = Streams(0)["p"]
    assert profile_arrivals(rng, [0, 10], [0, 0], 10.0).size == 0
    with pytest.raises(ValueError):
        profile_arrivals(rng, [0, 10, 5], [1, 1, 1], 10.0)  # knots not sorted
    with pytest.raises(ValueError):
        profile_arrivals(rng, [0, 10], [1, -1], 10.0)


def test_on_off_long_run_rate_is_time_weighted_average():
    # ON 2 s at 100/s, OFF 8 s at 10/s on average: (100*2 + 10*8) / 10 = 28/s
    s = Streams(6)
    rates = []
    for r in range(10):
        t = on_off_arrivals(s[f"mmpp/{r}"], 100.0, 10.0, 2.0, 8.0, horizon=5000.0)
        assert np.all(t < 5000.0) and np.all(np.diff(t) >= 0)
        rates.append(t.size / 5000.0)
    ci = t_interval(rates)
    assert abs(ci.estimate / 28.0 - 1) < 0.05
    assert ci.low <= 28.0 <= ci.high
    # and it is bursty: counts per second are overdispersed relative to Poisson
    t = on_off_arrivals(s["mmpp/burst"], 100.0, 10.0, 2.0, 8.0, horizon=5000.0)
    counts = np.bincount(t.astype(int), minlength=5000)
    assert counts.var() / counts.mean() > 5


# ------------------------------------------------------------------ faults

def test_fault_schedule_mode_at_boundaries():
    f = FaultSchedule([Outage(30.0, 35.0, "hang"), Outage(10.0, 20.0, "error")])  # unsorted input
    assert f.mode_at(0.0) is None
    assert f.mode_at(np.nextafter(10.0, 0)) is None
    assert f.mode_at(10.0) == "error"  # start inclusive
    assert f.mode_at(np.nextafter(20.0, 0)) == "error"
    assert f.mode_at(20.0) is None  # end exclusive
    assert f.mode_at(25.0) is None
    assert f.mode_at(30.0) == "hang"
    assert f.mode_at(35.0) is None and f.mode_at(1e9) is None
    assert f.down_time(32.0) == pytest.approx(12.0)
    assert f.down_time(100.0) == pytest.approx(15.0)
    assert FaultSchedule().mode_at(5.0) is None
    assert FaultSchedule([Outage(5.0, 5.0)]).mode_at(5.0) is None  # empty window
    # back-to-back windows: the boundary belongs to the later one
    g = FaultSchedule([Outage(0.0, 1.0, "error"), Outage(1.0, 2.0, "hang")])
    assert g.mode_at(1.0) == "hang"


def test_fault_schedule_overlapping_outages_are_rejected():
    # mode_at finds the last window starting at or before t, so an outage nested in
    # a longer one would hide the rest of the longer one (mode_at(50) was None).
    with pytest.raises(ValueError):
        FaultSchedule([Outage(0.0, 100.0, "error"), Outage(10.0, 20.0, "hang")])


def test_outage_validation():
    with pytest.raises(ValueError):
        Outage(5.0, 4.0)
    with pytest.raises(ValueError):
        Outage(0.0, 1.0, "slow")


def test_alternating_down_fraction():
    mtbf, mttr, horizon = 90.0, 10.0, 1e6
    f = FaultSchedule.alternating(Streams(8)["faults"], mtbf, mttr, horizon, mode="hang")
    starts = np.array([o.start for o in f.outages])
    ends = np.array([o.end for o in f.outages])
    assert np.all(starts[1:] >= ends[:-1])  # ordered, disjoint
    assert {o.mode for o in f.outages} == {"hang"}
    frac = f.down_time(horizon) / horizon
    # ~10^4 cycles; ratio estimator sd = sqrt(Var(0.9 R - 0.1 U) / n) / E[cycle] ~ 1.3e-3
    assert abs(frac - mttr / (mtbf + mttr)) < 0.005
    # renewal count: variance ~ horizon Var(cycle) / E[cycle]^3
    assert z_ok(len(f.outages), horizon / (mtbf + mttr),
                math.sqrt(horizon * (mtbf**2 + mttr**2) / (mtbf + mttr) ** 3))
    # mode_at agrees with the windows
    probe = Streams(8)["probe"].uniform(0, horizon, 20_000)
    inside = np.array([f.mode_at(t) == "hang" for t in probe])
    k = np.searchsorted(starts, probe, side="right") - 1
    np.testing.assert_array_equal(inside, (k >= 0) & (probe < ends[np.maximum(k, 0)]))
    assert abs(inside.mean() - 0.1) < 0.01


# ------------------------------------------------------------------ streams

def test_streams_same_name_same_draws_across_instances():
    a = Streams(42)["arrivals"].random(1000)
    b = Streams(42)["arrivals"].random(1000)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, Streams(43)["arrivals"].random(1000))


def test_streams_request_order_irrelevant():
    s1, s2 = Streams(7), Streams(7)
    x1 = s1["service"].random(10)
    y1 = s1["arrivals"].random(10)
    y2 = s2["arrivals"].random(10)  # asked for in the other order
    s2["faults"].random(3)  # and an extra stream in between
    x2 = s2["service"].random(10)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)


def test_streams_different_names_independent():
    s = Streams(1)
    n = 100_000
    a, b = s["arrivals"].random(n), s["service"].random(n)
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / math.sqrt(n)
    # lagged too (a shifted copy of one stream would be perfectly correlated at some lag)
    for lag in (1, 2, 7):
        assert abs(np.corrcoef(a[lag:], b[:-lag])[0, 1]) < 4 / math.sqrt(n)
        assert abs(np.corrcoef(b[lag:], a[:-lag])[0, 1]) < 4 / math.sqrt(n)


def test_streams_continue_and_fresh_restarts():
    s = Streams(5)
    assert s["x"] is s["x"]
    first = s["x"].random(5)
    second = s["x"].random(5)
    assert not np.array_equal(first, second)  # draws continue
    np.testing.assert_array_equal(s.fresh("x").random(10), np.concatenate([first, second]))
    for bad in (-1, 1.5):
        with pytest.raises(ValueError):
            Streams(bad)


# ------------------------------------------------------------------ distributions

N_DRAW = 400_000


def _moments_match(dist, rng, n=N_DRAW):
    x = dist.sample(rng, n)
    assert x.shape == (n,) and np.all(x >= 0)
    m, v = x.mean(), x.var(ddof=1)
    assert z_ok(m, dist.mean, math.sqrt(dist.variance / n))
    # sd of the sample variance: sqrt((m4 - v^2) / n), m4 estimated from the draws
    m4 = np.mean((x - m) ** 4)
    assert z_ok(v, dist.variance, math.sqrt((m4 - v**2) / n))
    return x


def test_mixture_moments():
    d = Mixture([Exponential(0.5), Deterministic(3.0)], [3, 1])
    assert d.weights == pytest.approx((0.75, 0.25))
    assert d.mean == pytest.approx(0.75 * 0.5 + 0.25 * 3.0)
    second = 0.75 * 2 * 0.5**2 + 0.25 * 9.0
    assert d.variance == pytest.approx(second - 1.125**2)
    x = _moments_match(d, Streams(1)["mix"])
    assert z_ok(np.mean(x == 3.0), 0.25, math.sqrt(0.25 * 0.75 / N_DRAW))
    assert isinstance(d.sample(Streams(1)["one"]), float)


def test_hyperexponential_mixture_scv():
    # balanced-means H2 with scv 2 (used by the M/G/1 validation)
    m1, m2 = (3 + math.sqrt(3)) / 2, (3 - math.sqrt(3)) / 2
    d = Mixture([Exponential(m1), Exponential(m2)], [0.5 / m1, 0.5 / m2])
    assert d.mean == pytest.approx(1.0) and d.scv == pytest.approx(2.0)
    _moments_match(d, Streams(2)["h2"])


@pytest.mark.parametrize("cv", [0.5, 1.0, 2.0])
def test_lognormal_mean_and_cv(cv):
    d = Lognormal(2.0, cv)
    assert d.scv == pytest.approx(cv**2)
    x = d.sample(Streams(3)[f"ln/{cv}"], N_DRAW)
    assert np.all(x > 0)
    # the log is normal with the implied mu, sigma (the sample mean of a heavy tail is slow)
    mu, sigma = np.log(2.0) - np.log1p(cv**2) / 2, np.sqrt(np.log1p(cv**2))
    lx = np.log(x)
    assert z_ok(lx.mean(), mu, sigma / math.sqrt(N_DRAW))
    assert z_ok(lx.std(), sigma, sigma / math.sqrt(2 * N_DRAW))
    if cv <= 1.0:
        _moments_match(d, Streams(3)[f"ln2/{cv}"])


def test_empirical_resamples_with_population_moments():
    values = np.array([0.8] * 9 + [2.8])  # mean 1.0, population variance 0.36
    d = Empirical(values)
    assert d.mean == pytest.approx(1.0) and d.variance == pytest.approx(0.36)
    x = _moments_match(d, Streams(4)["emp"])
    assert set(np.unique(x)) == {0.8, 2.8}
    assert d.quantile(0.5) == pytest.approx(0.8)
    assert isinstance(d.sample(Streams(4)["one"]), float)


def test_simple_distributions():
    rng = Streams(9)["d"]
    _moments_match(Exponential(0.3), rng)
    _moments_match(Uniform(1.0, 3.0), rng)
    np.testing.assert_array_equal(Deterministic(2.5).sample(rng, 4), [2.5] * 4)
    assert Deterministic(2.5).sample(rng) == 2.5 and Deterministic(2.5).scv == 0.0
    sc = Exponential(2.0).scaled(0.5)
    assert sc.mean == pytest.approx(1.0) and sc.scv == pytest.approx(1.0)
    np.testing.assert_allclose(sc.sample(Streams(9).fresh("s"), 5),
                               0.5 * Exponential(2.0).sample(Streams(9).fresh("s"), 5))


@pytest.mark.parametrize("make", [
    lambda: Exponential(0.0), lambda: Exponential(-1.0), lambda: Exponential(float("nan")),
    lambda: Deterministic(-0.1), lambda: Deterministic(float("nan")),
    lambda: Uniform(2.0, 1.0), lambda: Uniform(-1.0, 1.0),
    lambda: Lognormal(0.0, 1.0), lambda: Lognormal(1.0, 0.0), lambda: Lognormal(1.0, -1.0),
    lambda: Empirical([]), lambda: Empirical([1.0, float("nan")]), lambda: Empirical([1.0, -1.0]),
    lambda: Mixture([Exponential(1.0)], [0.5, 0.5]), lambda: Mixture([], []),
    lambda: Mixture([Exponential(1.0)], [-1.0]), lambda: Mixture([Exponential(1.0)] * 2, [0, 0]),
])
def test_bad_distribution_parameters_raise(make):
    with pytest.raises(ValueError):
        make()


# ------------------------------------------------------------------ metrics

def _hand_log():
    log = RequestLog(6, arm="pattern")
    log.arrival[:] = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    lat = [0.1, 0.2, 0.3, 0.4, 1.0]
    log.end[:5] = log.arrival[:5] + lat
    log.start[:5] = log.arrival[:5]
    log.outcome[:] = [OK, OK, TIMEOUT, OK, FALLBACK, PENDING]  # the last never finished
    return log


def test_summarize_exact_on_hand_built_log():
    s = summarize(_hand_log(), horizon=10.0)
    assert s["requests"] == 5
    assert s["mean_ms"] == pytest.approx(400.0)
    assert s["p50_ms"] == pytest.approx(300.0)
    # linear interpolation between order statistics: p95 at rank 3.8, p99 at 3.96
    assert s["p95_ms"] == pytest.approx(400.0 + 0.8 * 600.0)
    assert s["p99_ms"] == pytest.approx(400.0 + 0.96 * 600.0)
    assert s["availability_pct"] == pytest.approx(80.0)  # OK x3 + FALLBACK of 5 finished
    assert s["error_rate_pct"] == pytest.approx(20.0)
    assert s["throughput_rps"] == pytest.approx(4 / 10.0)
    w = summarize(_hand_log(), horizon=10.0, warmup=1.5)  # drops arrivals 0 and 1
    assert w["requests"] == 3
    assert w["mean_ms"] == pytest.approx(1000 * (0.3 + 0.4 + 1.0) / 3)
    assert w["availability_pct"] == pytest.approx(200 / 3)
    assert w["throughput_rps"] == pytest.approx(2 / 8.5)
    strict = summarize(_hand_log(), horizon=10.0, ok_outcomes=(OK,))
    assert strict["availability_pct"] == pytest.approx(60.0)


def test_windowed_counts_on_hand_built_log():
    df = windowed(_hand_log(), width=2.0, horizon=6.0)
    assert list(df["time_s"]) == [0.0, 2.0, 4.0]
    assert list(df["requests"]) == [2, 2, 1]
    assert list(df["error_pct"]) == pytest.approx([0.0, 50.0, 0.0])


def test_t_interval_known_values():
    ci = t_interval([1.0, 2.0, 3.0, 4.0, 5.0, float("nan")])
    h = stats.t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5)
    assert ci.as_tuple() == pytest.approx((3.0, 3.0 - h, 3.0 + h))
    assert h == pytest.approx(1.9632, abs=1e-4)
    one = t_interval([2.0])
    assert one.estimate == 2.0 and math.isnan(one.low)


def _ar1(rng, n, phi, mean):
    e = rng.normal(0.0, 1.0, n)
    x = signal.lfilter([1.0], [1.0, -phi], e)
    return mean + x


def test_batch_means_covers_ar1_mean():
    # AR(1) with phi = 0.9: autocorrelation time ~19, so a naive iid interval is
    # sqrt(19) ~ 4.4 times too narrow; 20 batches of 5000 are nearly independent.
    s, seeds, n, phi, mean = Streams(10), 100, 100_000, 0.9, 5.0
    covered = naive = 0
    for k in range(seeds):
        x = _ar1(s[f"ar1/{k}"], n, phi, mean)
        bm = batch_means(x, n_batches=20)
        assert bm.estimate == pytest.approx(x.mean())
        covered += bm.low <= mean <= bm.high
        iid = t_interval(x)
        naive += iid.low <= mean <= iid.high
    assert covered >= 88  # nominal 95; binomial sd ~2.2
    assert naive <= 60  # the plain interval ignores correlation (~35% coverage)


def test_batch_means_too_few_values():
    bm = batch_means(np.arange(10.0), n_batches=20)
    assert bm.estimate == pytest.approx(4.5) and math.isnan(bm.low)


def test_time_weighted_mean_on_step_function():
    tw = TimeWeighted(0.0, 0.0, keep_history=True)
    tw.update(2.0, 3.0)
    tw.update(5.0, 1.0)
    tw.update(9.0, 0.0)
    assert tw.mean(10.0) == pytest.approx((0 * 2 + 3 * 3 + 1 * 4 + 0 * 1) / 10)
    assert tw.mean(9.0) == pytest.approx(13 / 9)
    # looking back before the last update uses the history
    assert tw.mean(4.0) == pytest.approx(3 * 2 / 4)
    assert tw.mean(6.0) == pytest.approx((3 * 3 + 1 * 1) / 6)
    assert tw.mean(5.0) == pytest.approx(9 / 5)
    assert tw.value == 0.0
    assert list(tw.series()["value"]) == [0.0, 3.0, 1.0, 0.0]
    late = TimeWeighted(10.0, 2.0)
    late.update(12.0, 4.0)
    assert late.mean(14.0) == pytest.approx((2 * 2 + 4 * 2) / 4)
    assert TimeWeighted(10.0, 2.0).mean(10.0) == 2.0  # zero span: the current value
    with pytest.raises(ValueError):
        late.series()
    # without history a look-back cannot be answered (it used to return the area
    # up to the last update divided by the shorter span: mean(11) gave 8.0 here)
    with pytest.raises(ValueError):
        late.mean(11.0)
