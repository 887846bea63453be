"""sim.tiered_cache against its references: cachetools.TTLCache/LRU, Redis SET EX and sampled LRU, Che's
approximation for LRU under the independent reference model, the exact TTL-cache hit rate under Poisson."""
import math

import numpy as np
import pytest

from sim.dist import Zipf
from sim.tiered_cache import (DB, L1, L2, LRUCache, SharedCache, TierConfig, che_characteristic_time,
                              che_hit_rate, run_tiers, ttl_hit_rate)


def reference_lru_hits(trace, capacity):
    """A deliberately naive LRU: a list ordered from least to most recently used."""
    order, hits = [], []
    for k in trace:
        if k in order:
            order.remove(k)
            order.append(k)
            hits.append(True)
        else:
            hits.append(False)
            if capacity:
                if len(order) >= capacity:
                    order.pop(0)
                order.append(k)
    return np.array(hits)


@pytest.mark.parametrize("capacity", [0, 1, 7, 50])
def test_lru_matches_a_naive_reference_hit_for_hit(capacity):
    trace = Zipf(200, 0.9).sample(np.random.default_rng(capacity), 4000)
    c = LRUCache(capacity)
    ours = []
    for t, k in enumerate(trace.tolist()):
        got = c.get(k, float(t))
        ours.append(got is not None)
        if got is None:
            c.set(k, k, float(t))
    assert np.array_equal(np.array(ours), reference_lru_hits(trace.tolist(), capacity))
    assert len(c) <= capacity


def test_lru_entry_expires_ttl_after_its_set_and_hits_do_not_extend_it():
    c = LRUCache(10, ttl=60.0)
    c.set("a", 1, now=0.0)
    assert c.get("a", 59.999) == 1  # a hit ...
    assert c.get("a", 60.0) is None  # ... does not push the expiry past set + ttl
    c.set("a", 2, now=100.0)
    assert c.get("a", 159.0) == 2


def test_expired_entries_are_dropped_before_a_live_entry_is_evicted():
    c = LRUCache(2, ttl=10.0)
    c.set("old", 1, now=0.0)
    c.set("live", 2, now=8.0)
    c.get("old", 5.0)  # "old" is now the most recently used, but it expires at 10
    c.set("new", 3, now=12.0)  # full: cachetools expires "old" first instead of evicting "live"
    assert c.get("live", 12.0) == 2 and c.get("new", 12.0) == 3
    assert c.evictions == 0


def test_capped_expiry_never_outlives_the_given_deadline():
    c = LRUCache(4, ttl=60.0)
    c.set("k", 1, now=0.0, expires_at=15.0)
    assert c.get("k", 14.9) == 1 and c.get("k", 15.0) is None


def test_shared_cache_set_ex_and_passive_expiry():
    r = SharedCache(maxmemory=10, ttl=300.0)
    assert r.set("k", "v", now=0.0)
    assert r.get("k", 299.0) == "v"
    assert r.expires_at("k") == 300.0
    assert r.get("k", 300.0) is None and len(r) == 0
    assert r.set("k", "w", now=400.0) and r.get("k", 401.0) == "w"


def test_noeviction_refuses_writes_when_full_and_keeps_what_it_has():
    r = SharedCache(maxmemory=3, ttl=1e9, maxmemory_policy="noeviction")
    for k in "abc":
        assert r.set(k, k, now=0.0)
    assert not r.set("d", "d", now=1.0)
    assert r.rejected_writes == 1 and r.get("d", 1.0) is None and r.get("a", 1.0) == "a"
    assert r.set("a", "A", now=2.0)  # overwriting an existing key needs no room


def test_sampled_lru_is_exact_lru_when_the_sample_covers_every_key():
    r = SharedCache(maxmemory=4, ttl=1e9, maxmemory_samples=10_000, rng=np.random.default_rng(1))
    for t, k in enumerate("abcd"):
        r.set(k, k, now=float(t))
    r.get("a", 10.0)
    r.set("e", "e", now=11.0)  # b is the least recently used
    assert r.get("b", 12.0) is None and all(r.get(k, 12.0) == k for k in "acde")
    assert r.evictions == 1 and sorted(r.keys) == sorted(r.data)


def test_sampled_lru_with_five_samples_evicts_only_keys_older_than_most():
    rng = np.random.default_rng(3)
    r = SharedCache(maxmemory=100, ttl=1e9, rng=rng)
    for t in range(100):
        r.set(t, t, now=float(t))
    older_half = []
    for t in range(100, 400):
        before = sorted(r.data)  # keys in order of last access (no key is read again)
        r.set(t, t, now=float(t))
        (victim,) = set(before) - set(r.data)
        older_half.append(before.index(victim) < 50)
    assert len(r) == 100 and r.evictions == 300
    # the oldest of 5 random keys lies in the older half with probability 1 - 2^-5 = 0.97
    assert 0.9 < np.mean(older_half) < 1.0


def independent_che(p, capacity):
    """Che's approximation written independently: bisection on the characteristic time."""
    p = np.asarray(p, float) / np.sum(p)
    lo, hi = 0.0, 1.0
    while np.sum(1 - np.exp(-p * hi)) < capacity:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.sum(1 - np.exp(-p * mid)) < capacity else (lo, mid)
    return float(np.sum(p * (1 - np.exp(-p * lo))))


@pytest.mark.parametrize("s,capacity", [(0.8, 100), (1.0, 500), (1.2, 50)])
def test_che_solver_agrees_with_an_independent_implementation(s, capacity):
    w = Zipf(2000, s).weights
    t = che_characteristic_time(w, capacity)
    assert np.sum(-np.expm1(-w * t)) == pytest.approx(capacity, rel=1e-9)
    assert che_hit_rate(w, capacity) == pytest.approx(independent_che(w, capacity), abs=1e-9)


@pytest.mark.parametrize("s,capacity", [(0.7, 200), (1.0, 500), (1.3, 100)])
def test_lru_hit_rate_matches_che_under_the_independent_reference_model(s, capacity):
    # IRM: keys drawn independently from a fixed Zipf law. Che is known to be accurate to about 1 point.
    n_keys, n = 5000, 60_000
    zipf = Zipf(n_keys, s)
    keys = zipf.sample(np.random.default_rng(7), n)
    t = np.arange(n, dtype=float)
    r = run_tiers(t, keys, np.zeros(n, int), [], [], TierConfig(capacity, math.inf, 0, 1.0, 1))
    measured = np.mean(r["tier"][n // 4:] == L1)  # after the cache has filled
    assert measured == pytest.approx(che_hit_rate(zipf.weights, capacity), abs=0.012)


def test_che_edges():
    w = np.ones(10) / 10
    assert che_hit_rate(w, 0) == 0.0 and che_hit_rate(w, 10) == 1.0
    assert che_hit_rate(w, 5) == pytest.approx(0.5, abs=0.02)  # uniform: hit rate = C / N


def test_shared_ttl_cache_matches_the_exact_poisson_formula():
    # L1 off, L2 unbounded with TTL: per key a miss opens a TTL window in which every request hits
    rng = np.random.default_rng(11)
    n_keys, rate, ttl, n = 200, 20.0, 30.0, 80_000
    w = Zipf(n_keys, 1.0).weights
    t = np.cumsum(rng.exponential(1 / rate, n))
    keys = Zipf(n_keys, 1.0).sample(rng, n)
    r = run_tiers(t, keys, np.zeros(n, int), [], [], TierConfig(0, 1.0, 10**6, ttl, 1))
    keep = t > 2 * ttl
    assert np.mean(r["tier"][keep] == L2) == pytest.approx(ttl_hit_rate(rate * w, ttl), abs=0.01)


def _writes(seed=0, n=20_000, n_keys=300, rate=50.0, write_rate=2.0):
    rng = np.random.default_rng(seed)
    zipf = Zipf(n_keys, 1.0)
    t = np.cumsum(rng.exponential(1 / rate, n))
    wt = np.sort(rng.uniform(0, t[-1], int(write_rate * t[-1])))
    return t, zipf.sample(rng, n), rng.integers(3, size=n), wt, zipf.sample(rng, wt.size)


@pytest.mark.parametrize("policy", ["ttl_only", "invalidate_l2", "invalidate_all"])
def test_staleness_follows_the_write_policy(policy):
    t, k, inst, wt, wk = _writes()
    cfg = TierConfig(50, 20.0, 10**6, 60.0, 3, policy)
    r = run_tiers(t, k, inst, wt, wk, cfg)
    assert np.all(r["age"][r["tier"] == DB] == 0) and not r["stale"][r["tier"] == DB].any()
    assert np.all(r["stale_for"] <= r["age"] + 1e-9)  # a value cannot be out of date longer than it is old
    assert r["age"].max() < cfg.l1_ttl + cfg.l2_ttl
    if policy == "invalidate_all":
        assert not r["stale"].any()
    elif policy == "invalidate_l2":
        assert r["stale"].any() and not r["stale"][r["tier"] == L2].any()  # only L1 copies go stale
    else:
        assert r["stale"][r["tier"] == L2].any()


def test_without_writes_nothing_is_stale_and_capping_bounds_age_by_the_l2_ttl():
    t, k, inst, _, _ = _writes()
    r = run_tiers(t, k, inst, [], [], TierConfig(50, 20.0, 10**6, 60.0, 3, "ttl_only", cap_l1_by_l2=True))
    assert not r["stale"].any()
    assert r["age"].max() < 60.0
    loose = run_tiers(t, k, inst, [], [], TierConfig(50, 20.0, 10**6, 60.0, 3, "ttl_only"))
    assert 60.0 < loose["age"].max() < 80.0  # an L1 copy of an old L2 entry lives l1_ttl more


def test_invalidation_cuts_cache_hits_only_for_written_keys():
    t, k, inst, wt, wk = _writes()
    base = TierConfig(50, 20.0, 10**6, 60.0, 3, "ttl_only")
    a = run_tiers(t, k, inst, wt, wk, base)
    b = run_tiers(t, k, inst, wt, wk, TierConfig(**{**base.__dict__, "policy": "invalidate_all"}))
    assert np.mean(b["tier"] == DB) > np.mean(a["tier"] == DB)
    assert np.all(np.isin(a["tier"], (L1, L2, DB)))
