"""Cache tiers for feature reads: an in-process LRU, a shared TTL cache, the database behind them.

References (REFERENCES.md §9):
- ``LRUCache`` is the in-process tier with the semantics of Python's ``cachetools.TTLCache``
  (``maxsize``, ``ttl``): an entry expires ``ttl`` after it was *set* (a hit does not extend it),
  an expired entry is never returned, and a full cache evicts the least recently used entry.
  ``ttl = inf`` gives a plain LRU (``functools.lru_cache``'s policy).
- ``SharedCache`` is the Redis tier: ``SET key value EX ttl`` with passive expiry on access
  (Redis also expires keys actively by sampling; for reads that is invisible), ``maxmemory``
  counted in keys, and ``maxmemory_policy`` ``allkeys-lru`` approximated as Redis does, by
  evicting the least recently used of ``maxmemory_samples`` (default 5) random keys, or
  ``noeviction`` (Redis's default: a write that needs room fails, so the fill is skipped).
- Cache-aside with invalidation on write: no single reference (REFERENCES.md §9 says so); a
  write either leaves cached copies to their TTL, deletes the shared copy, or deletes every copy.

``che_hit_rate`` is Che's approximation for an LRU cache under the independent reference
model (Che, Tung and Wang 2002; Fricker, Robert and Roberts 2012): the characteristic time
T solves sum_i (1 - exp(-p_i T)) = C and the hit rate is sum_i p_i (1 - exp(-p_i T)).
``ttl_hit_rate`` is the exact hit rate of a TTL cache whose entries are not refreshed by hits
under Poisson requests of rate r_i: r_i T / (1 + r_i T) per key.

Where this differs: time is a number passed in (no wall clock); sizes count keys, not bytes;
a miss fills the tiers at the time it is asked (the database read's duration is not spent
holding the key absent, so concurrent misses for one key share a fill, as with singleflight).
"""
from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

L1, L2, DB = 0, 1, 2
TIER_NAMES = ("l1", "l2", "db")
POLICIES = ("ttl_only", "invalidate_l2", "invalidate_all")
REDIS_MAXMEMORY_SAMPLES = 5


class LRUCache:
    """cachetools.TTLCache semantics: LRU eviction, expiry ``ttl`` after the set; ``maxsize`` 0 disables it.

    Like cachetools, every ``set`` first drops the entries whose time has passed (``expire``), so an
    expired entry never pushes out a live one; then a full cache evicts its least recently used entry.
    """

    def __init__(self, maxsize: int, ttl: float = math.inf):
        if maxsize < 0 or not ttl > 0:
            raise ValueError(f"maxsize must be >= 0 and ttl > 0, got {maxsize}, {ttl}")
        self.maxsize, self.ttl = int(maxsize), float(ttl)
        self.data: OrderedDict = OrderedDict()  # key -> (value, expires_at, stamp), LRU first
        self.heap: list = []  # (expires_at, stamp, key); stale rows skipped lazily
        self.stamp = 0
        self.evictions = 0

    def get(self, key, now: float):
        item = self.data.get(key)
        if item is None:
            return None
        if item[1] <= now:  # expired: gone, as if never there
            del self.data[key]
            return None
        self.data.move_to_end(key)
        return item[0]

    def expire(self, now: float) -> None:
        heap, data = self.heap, self.data
        while heap and heap[0][0] <= now:
            _, stamp, key = heapq.heappop(heap)
            item = data.get(key)
            if item is not None and item[2] == stamp:
                del data[key]

    def set(self, key, value, now: float, expires_at: float | None = None) -> None:
        if self.maxsize == 0:
            return
        exp = now + self.ttl if expires_at is None else min(expires_at, now + self.ttl)
        self.expire(now)
        if key in self.data:
            self.data.move_to_end(key)
        elif len(self.data) >= self.maxsize:
            self.data.popitem(last=False)
            self.evictions += 1
        self.stamp += 1
        self.data[key] = (value, exp, self.stamp)
        if exp < math.inf:
            heapq.heappush(self.heap, (exp, self.stamp, key))
        if len(self.heap) > 4 * self.maxsize + 64:  # drop rows of entries replaced or evicted
            self.heap = [r for r in self.heap if self.data.get(r[2], (0, 0, -1))[2] == r[1]]
            heapq.heapify(self.heap)

    def delete(self, key) -> None:
        self.data.pop(key, None)

    def __len__(self):
        return len(self.data)


class SharedCache:
    """Redis-like: ``SET EX ttl``, passive expiry, ``maxmemory`` keys with sampled ``allkeys-lru`` or ``noeviction``."""

    def __init__(self, maxmemory: int, ttl: float, rng: np.random.Generator | None = None,
                 maxmemory_policy: str = "allkeys-lru", maxmemory_samples: int = REDIS_MAXMEMORY_SAMPLES):
        if maxmemory < 0 or not ttl > 0:
            raise ValueError(f"maxmemory must be >= 0 and ttl > 0, got {maxmemory}, {ttl}")
        if maxmemory_policy not in ("allkeys-lru", "noeviction"):
            raise ValueError(f"maxmemory_policy must be allkeys-lru or noeviction, got {maxmemory_policy!r}")
        self.maxmemory, self.ttl, self.policy = int(maxmemory), float(ttl), maxmemory_policy
        self.samples = int(maxmemory_samples)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.data: dict = {}  # key -> [value, expires_at, last_access, slot]
        self.keys: list = []  # dense list for random sampling
        self.evictions = self.rejected_writes = 0

    def get(self, key, now: float):
        item = self.data.get(key)
        if item is None:
            return None
        if item[1] <= now:
            self.delete(key)
            return None
        item[2] = now
        return item[0]

    def expires_at(self, key) -> float:
        item = self.data.get(key)
        return item[1] if item is not None else -math.inf

    def set(self, key, value, now: float) -> bool:
        item = self.data.get(key)
        if item is not None:
            item[0], item[1], item[2] = value, now + self.ttl, now
            return True
        if self.maxmemory == 0:
            return False
        if len(self.data) >= self.maxmemory:
            if self.policy == "noeviction":
                self.rejected_writes += 1
                return False
            self._evict(now)
        self.data[key] = [value, now + self.ttl, now, len(self.keys)]
        self.keys.append(key)
        return True

    def _evict(self, now: float) -> None:
        picks = self.rng.integers(len(self.keys), size=min(self.samples, len(self.keys)))
        victim = min((self.keys[i] for i in picks), key=lambda k: self.data[k][2])
        self.delete(victim)
        self.evictions += 1

    def delete(self, key) -> None:
        item = self.data.pop(key, None)
        if item is None:
            return
        slot, last = item[3], self.keys.pop()
        if last != key:
            self.keys[slot] = last
            self.data[last][3] = slot

    def __len__(self):
        return len(self.data)


@dataclass(frozen=True)
class TierConfig:
    l1_maxsize: int = 1000
    l1_ttl: float = 60.0
    l2_maxmemory: int = 1_000_000
    l2_ttl: float = 300.0
    instances: int = 1
    policy: str = "ttl_only"  # what a write does to cached copies (POLICIES)
    cap_l1_by_l2: bool = False  # an L1 copy expires no later than the L2 entry it came from
    maxmemory_policy: str = "allkeys-lru"


def run_tiers(read_t, read_key, read_inst, write_t, write_key, cfg: TierConfig, rng=None) -> dict:
    """Cache-aside reads through L1 (one per instance) -> L2 -> DB, interleaved with writes, in time order.

    Returns per read: ``tier`` (0 L1, 1 L2, 2 DB), ``age`` (now − when the served value was read from
    the database; 0 for a DB read), ``stale`` (the database had a newer version) and ``stale_for``
    (how long the served version had been superseded; 0 when fresh).
    """
    if cfg.policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {cfg.policy!r}")
    n = len(read_t)
    tier = np.empty(n, dtype=np.int8)
    age, stale_for = np.zeros(n), np.zeros(n)
    l1s = [LRUCache(cfg.l1_maxsize, cfg.l1_ttl) for _ in range(cfg.instances)]
    l1_data = [c.data for c in l1s]
    l2 = SharedCache(cfg.l2_maxmemory, cfg.l2_ttl, rng, cfg.maxmemory_policy)
    version: dict = {}  # key -> current database version (0 if never written)
    changed: dict = {}  # key -> times of its writes; version v was superseded at changed[key][v]
    rt, rk, ri = list(map(float, read_t)), list(map(int, read_key)), list(map(int, read_inst))
    wt, wk = list(map(float, write_t)), list(map(int, write_key))
    w, nw = 0, len(wt)
    for i in range(n):
        now, key = rt[i], rk[i]
        while w < nw and wt[w] <= now:  # writes up to this read, in order
            k = wk[w]
            version[k] = version.get(k, 0) + 1
            changed.setdefault(k, []).append(wt[w])
            if cfg.policy != "ttl_only":
                l2.delete(k)
                if cfg.policy == "invalidate_all":
                    for d in l1_data:
                        d.pop(k, None)
            w += 1
        l1 = l1s[ri[i]]
        d1 = l1_data[ri[i]]
        item = d1.get(key)  # LRUCache.get, inlined on the hot path
        if item is not None and item[1] > now:
            d1.move_to_end(key)
            hit = item[0]
            tier[i] = L1
        else:
            if item is not None:
                del d1[key]
            hit = l2.get(key, now)
            if hit is not None:
                tier[i] = L2
                l1.set(key, hit, now, l2.expires_at(key) if cfg.cap_l1_by_l2 else None)
            else:
                tier[i] = DB
                hit = (version.get(key, 0), now)
                l2.set(key, hit, now)
                l1.set(key, hit, now, now + cfg.l2_ttl if cfg.cap_l1_by_l2 else None)
        ver, fetched = hit
        age[i] = now - fetched
        if ver != version.get(key, 0):
            stale_for[i] = now - changed[key][ver]
    stale = stale_for > 0
    return {"tier": tier, "age": age, "stale": stale, "stale_for": stale_for,
            "l1_evictions": sum(c.evictions for c in l1s), "l2_evictions": l2.evictions,
            "l2_rejected": l2.rejected_writes}


def che_characteristic_time(p, capacity: float) -> float:
    """T solving sum_i (1 - exp(-p_i T)) = capacity (in the units 1/p is in); inf if everything fits."""
    p = np.asarray(p, dtype=float)
    p = p[p > 0]
    if capacity <= 0:
        return 0.0
    if capacity >= p.size:
        return math.inf
    f = lambda t: float(np.sum(-np.expm1(-p * t))) - capacity  # noqa: E731
    hi = 1.0 / p.min()
    while f(hi) < 0:
        hi *= 2
    return brentq(f, 0.0, hi, xtol=1e-12 * hi, rtol=1e-12)


def che_hit_rate(p, capacity: float) -> float:
    """Che's approximation of an LRU cache's hit rate under the independent reference model."""
    p = np.asarray(p, dtype=float)
    p = p / p.sum()
    t = che_characteristic_time(p, capacity)
    if t == 0:
        return 0.0
    if math.isinf(t):
        return 1.0
    return float(np.sum(p * -np.expm1(-p * t)))


def ttl_hit_rate(rates, ttl: float) -> float:
    """Exact hit rate of a non-refreshing TTL cache (no capacity limit) under Poisson requests per key."""
    r = np.asarray(rates, dtype=float)
    return float(np.sum(r * (r * ttl / (1 + r * ttl))) / r.sum())
