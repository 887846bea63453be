"""sim.balancer against Envoy's load balancers and a SimPy model of the replica farm."""
from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np
import pytest
import simpy

from sim.balancer import (FifoFarm, LeastRequest, RandomPick, RingHash, RoundRobin, keys_moved_fraction,
                          lindley_ends, simulate_farm, xxhash64)


# ---------------------------------------------------------------- xxHash64
@pytest.mark.parametrize("data, digest", [
    (b"", 0xEF46DB3751D8E999),
    (b"a", 0xD24EC4F1A98C6E5B),
    (b"abc", 0x44BC2CF5AD770999),
    (b"Nobody inspects the spammish repetition", 0xFBCEA83C8A378BF1),
])
def test_xxhash64_reference_vectors(data, digest):
    assert xxhash64(data) == digest


def _libxxhash():
    name = ctypes.util.find_library("xxhash") or "libxxhash.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.XXH64.restype = ctypes.c_uint64
    lib.XXH64.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
    return lib


def test_xxhash64_matches_libxxhash_on_every_length():
    lib = _libxxhash()
    if lib is None:
        pytest.skip("libxxhash not installed")
    rng = np.random.default_rng(0)
    for n in range(0, 100):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        for seed in (0, 1, 2**63 + 5):
            assert xxhash64(data, seed) == lib.XXH64(data, n, seed)
    assert xxhash64("user-7") == lib.XXH64(b"user-7", 6, 0)


# ---------------------------------------------------------------- round robin, random
def test_round_robin_takes_hosts_in_turn_and_route_matches_pick():
    rr = RoundRobin()
    hosts = [3, 5, 9]
    assert [rr.pick(0, None, hosts) for _ in range(7)] == [3, 5, 9, 3, 5, 9, 3]
    a, b = RoundRobin(start=2), RoundRobin(start=2)
    assert list(a.route(np.zeros(10), hosts)) == [b.pick(0, None, hosts) for _ in range(10)]


def test_random_pick_is_uniform():
    r = RandomPick(np.random.default_rng(0))
    counts = np.bincount(r.route(np.zeros(40000), list(range(4))), minlength=4)
    assert np.all(np.abs(counts / 40000 - 0.25) < 0.01)


# ---------------------------------------------------------------- least request (P2C)
class _Scripted:
    """Stands in for the uniform draws so a test can name the hosts drawn."""

    def __init__(self, picks, n):
        self.u = [(h + 0.5) / n for h in picks]

    def __call__(self):
        return self.u.pop(0)


def test_least_request_keeps_fewer_active_and_first_draw_wins_ties():
    lr = LeastRequest(np.random.default_rng(0))
    active = [5, 1, 1, 0]
    hosts = [0, 1, 2, 3]
    lr._u = _Scripted([0, 1], 4)
    assert lr.pick(0, active, hosts) == 1  # 1 active beats 5
    lr._u = _Scripted([1, 0], 4)
    assert lr.pick(0, active, hosts) == 1  # the second draw must be strictly better
    lr._u = _Scripted([1, 2], 4)
    assert lr.pick(0, active, hosts) == 1  # a tie keeps the first draw
    lr._u = _Scripted([2, 2], 4)
    assert lr.pick(0, active, hosts) == 2  # draws are with replacement


def test_least_request_choice_count():
    three = LeastRequest(np.random.default_rng(0), choice_count=3)
    three._u = _Scripted([0, 1, 3], 4)
    assert three.pick(0, [5, 2, 9, 0], [0, 1, 2, 3]) == 3
    with pytest.raises(ValueError):
        LeastRequest(np.random.default_rng(0), choice_count=0)


def test_least_request_candidates_are_the_draws_pick_would_make():
    a, b = LeastRequest(np.random.default_rng(7)), LeastRequest(np.random.default_rng(7))
    cand = a.candidates(1000, 6)
    for c1, c2 in cand:
        assert int(b._u() * 6) == c1 and int(b._u() * 6) == c2
    assert a._u() == b._u()  # both consumed the same number of draws


# ---------------------------------------------------------------- ring hash (Ketama)
def test_ring_size_and_entries_per_host_follow_envoy():
    for n in (1, 3, 10, 7):
        ring = RingHash(range(n))
        per_host = math.ceil(1024 / n)
        assert ring.ring_size == per_host * n
        assert np.all(np.bincount(ring.ring_hosts, minlength=n) == per_host)
    assert RingHash(range(3), minimum_ring_size=16).ring_size == 18
    big = RingHash(range(2), minimum_ring_size=4096, maximum_ring_size=4096)
    assert big.ring_size == 4096


def test_ring_entries_are_xxhash_of_host_underscore_index():
    ring = RingHash([4], minimum_ring_size=8)
    assert sorted(ring.ring_hashes) == sorted(xxhash64(f"replica-4_{i}") for i in range(8))
    assert ring.ring_hashes == sorted(ring.ring_hashes)


def test_ring_lookup_is_first_entry_clockwise_with_wraparound():
    ring = RingHash(range(4), minimum_ring_size=64)
    hs, owners = ring.ring_hashes, ring.ring_hosts
    assert ring.host_for_hash(hs[5]) == owners[5]  # an exact hit belongs to that entry
    assert ring.host_for_hash(hs[5] + 1) == owners[6]  # just past it: the next one
    assert ring.host_for_hash(0) == owners[0]
    assert ring.host_for_hash(hs[-1] + 1) == owners[0]  # past the last entry: wrap to the first
    keys = np.array([0, hs[5], hs[5] + 1, hs[-1] + 1, 2**64 - 1], dtype=np.uint64)
    assert list(ring.route(keys)) == [ring.host_for_hash(int(k)) for k in keys]


def test_adding_a_host_moves_keys_to_it_and_some_between_old_hosts():
    keys = np.array([xxhash64(f"user-{k}") for k in range(20000)], dtype=np.uint64)
    before, after = RingHash(range(9)), RingHash(range(10))
    b, a = before.route(keys), after.route(keys)
    to_new = np.mean(a == 9)
    assert abs(to_new - 1 / 10) < 0.02  # the new host takes its 1/(N+1) share
    # Envoy gives each host ceil(minimum_ring_size / N) entries, so growing 9 -> 10 hosts also drops
    # entries _103.._113 of every old host: their keys move between old hosts too.
    between_old = np.mean((a != b) & (a != 9))
    assert 0.02 < between_old < 0.15
    assert keys_moved_fraction(before, after, keys) == pytest.approx(to_new + between_old)
    # a naive modulo hash would move about 90%
    assert np.mean(keys % np.uint64(9) != keys % np.uint64(10)) > 0.85


def test_ring_balance_improves_with_ring_size():
    keys = np.array([xxhash64(f"user-{k}") for k in range(20000)], dtype=np.uint64)

    def spread(size):
        share = np.bincount(RingHash(range(10), minimum_ring_size=size).route(keys), minlength=10) / keys.size
        return share.max() / share.mean()

    assert spread(16384) < spread(16)
    assert spread(16384) < 1.1


def test_bounded_load_slots_follow_envoy_formula():
    ring = RingHash(range(3), hash_balance_factor=150)
    # total_slots = ceil((9 + 1) * 150 / 100) = 15; per equal-weight host ceil(15 / 3) = 5
    assert ring.slots(9) == 5
    assert ring.slots(0) == 1  # never below one
    with pytest.raises(ValueError):
        RingHash(range(3), hash_balance_factor=99)


def test_bounded_load_sends_an_overloaded_hosts_key_elsewhere():
    ring = RingHash(range(4), hash_balance_factor=125)
    key = xxhash64("user-1")
    home = ring.host_for_hash(key)
    active = [1, 1, 1, 1]
    assert ring.pick(key, active) == home  # within bounds: sticky
    active[home] = 50
    other = ring.pick(key, active)
    assert other != home and active[other] <= ring.slots(sum(active))
    assert ring.pick(key, active) == other  # the probe order is fixed by the key
    plain = RingHash(range(4))
    assert plain.pick(key, active) == home  # without bounded load affinity ignores load


# ---------------------------------------------------------------- the farm
def test_lindley_ends_matches_the_recursion():
    rng = np.random.default_rng(1)
    a = np.cumsum(rng.exponential(1.0, 500))
    s = rng.exponential(0.9, 500)
    end, last = [], -math.inf
    for ai, si in zip(a, s):
        last = max(ai, last) + si
        end.append(last)
    assert np.allclose(lindley_ends(a, s), end, rtol=0, atol=1e-9)


def _simpy_farm(arrivals, service, policy, n_hosts, keys, timeout=math.inf):
    """The same farm as a plain SimPy model: one Resource per replica, active counted by the model."""
    env = simpy.Environment()
    res = [simpy.Resource(env, capacity=1) for _ in range(n_hosts)]
    active = [0] * n_hosts
    hosts = list(range(n_hosts))
    n = len(arrivals)
    host, end, served = np.zeros(n, dtype=int), np.zeros(n), np.zeros(n, dtype=bool)

    def request(i):
        h = policy.pick(int(keys[i]), active, hosts)
        host[i] = h
        active[h] += 1
        req = res[h].request()
        if math.isinf(timeout) or req.triggered:
            yield req
            got = True
        else:
            got = req in (yield req | env.timeout(timeout))
        if got:
            yield env.timeout(service[i])
            res[h].release(req)
            served[i] = True
        else:
            req.cancel()
        active[h] -= 1
        end[i] = env.now

    def source():
        for i, t in enumerate(arrivals):
            yield env.timeout(t - env.now)
            env.process(request(i))

    env.process(source())
    env.run()
    return host, end, served


@pytest.mark.parametrize("make", [
    lambda: RoundRobin(),
    lambda: LeastRequest(np.random.default_rng(3)),
    lambda: LeastRequest(np.random.default_rng(3), choice_count=3),
    lambda: RingHash(range(5), minimum_ring_size=64),
    lambda: RingHash(range(5), minimum_ring_size=64, hash_balance_factor=150),
])
@pytest.mark.parametrize("timeout", [math.inf, 0.5])
def test_farm_matches_simpy_request_by_request(make, timeout):
    rng = np.random.default_rng(11)
    n = 3000
    a = np.cumsum(rng.exponential(1 / 45.0, n))  # 90% of five replicas of 10/s
    s = rng.exponential(0.1, n)
    keys = np.array([xxhash64(f"user-{k}") for k in rng.integers(0, 50, n)], dtype=np.uint64)
    run = simulate_farm(a, s, make(), 5, keys, timeout)
    host, end, served = _simpy_farm(a, s, make(), 5, keys, timeout)
    assert np.array_equal(run.host, host)
    assert np.array_equal(run.served, served)
    assert np.max(np.abs(run.end - end)) < 1e-9
    if timeout < math.inf:
        assert (~served).sum() > 0  # the case exercises giving up


def test_fast_paths_agree_with_the_generic_loop():
    rng = np.random.default_rng(5)
    n = 4000
    a = np.cumsum(rng.exponential(1 / 35.0, n))
    s = rng.lognormal(-2.5, 0.8, n)
    keys = rng.integers(0, 2**63, n).astype(np.uint64)
    for make in (lambda: LeastRequest(np.random.default_rng(2)), lambda: RoundRobin(),
                 lambda: RingHash(range(4))):
        fast = simulate_farm(a, s, make(), 4, keys)
        slow = simulate_farm(a, s, make(), 4, keys, timeout=1e12)  # forces the request-by-request loop
        assert np.array_equal(fast.host, slow.host)
        assert np.max(np.abs(fast.end - slow.end)) < 1e-9
    # route_batch in pieces gives the same as one pass
    farm = FifoFarm(LeastRequest(np.random.default_rng(2)), 4, timeout=1e12)
    out = ([0] * n, [0.0] * n, [0.0] * n, [False] * n)
    i = 0
    for stop in np.arange(5.0, a[-1] + 5.0, 5.0):
        i = farm.route_batch(a.tolist(), s.tolist(), [0] * n, i, stop, *out)
    assert i == n
    assert np.max(np.abs(np.array(out[2]) - simulate_farm(a, s, LeastRequest(np.random.default_rng(2)), 4).end)) < 1e-9


def test_busy_time_and_in_flight_area_are_exact():
    rng = np.random.default_rng(9)
    n = 2000
    a = np.cumsum(rng.exponential(1 / 25.0, n))
    s = rng.exponential(0.1, n)
    farm = FifoFarm(LeastRequest(np.random.default_rng(4)), 3, timeout=0.4)
    out = ([0] * n, [0.0] * n, [0.0] * n, [False] * n)
    checks = np.linspace(1.0, a[-1] - 1.0, 7)
    i = 0
    got = []
    for t in checks:
        i = farm.route_batch(a.tolist(), s.tolist(), [0] * n, i, t, *out)
        got.append([(farm.busy_until(h, t), farm.in_flight_area(h, t)) for h in range(3)])
    host, start, end, served = (np.array(x) for x in out)
    for t, row in zip(checks, got):
        for h in range(3):
            mine = (host == h) & (a < t)
            busy = np.sum(np.clip(np.minimum(end, t) - start, 0, None)[mine & served])
            area = np.sum(np.minimum(end, t)[mine] - a[mine])
            assert row[h][0] == pytest.approx(busy, abs=1e-7)
            assert row[h][1] == pytest.approx(area, abs=1e-6)


def test_hosts_out_of_rotation_drain_and_get_nothing_new():
    farm = FifoFarm(RoundRobin(), 3)
    for k in range(6):
        farm.route(k * 0.01, 1.0)
    farm.hosts.remove(1)
    hs = [farm.route(1 + k * 0.01, 1.0)[0] for k in range(6)]
    assert 1 not in hs
    assert farm.in_flight(1, 2.05) == 0  # its two requests ended by then
