"""Q18: feature reads through an in-process LRU, a shared TTL cache and the database (``sim.tiered_cache``).

Reads arrive as a Poisson stream; each asks for one feature key drawn from a Zipf law and lands on
one of ``instances`` application processes. Each process has its own L1 (cachetools.TTLCache
semantics: LRU, ``l1_ttl_s`` from the set); all share L2 (Redis: ``SET EX l2_ttl_s``, sampled
allkeys-lru); a miss in both reads the database, a FIFO station of ``db_connections`` with lognormal
service times. Writes change keys (hot keys more often); ``update_policy`` decides whether a write
deletes the shared copy, every copy, or nothing (copies then go stale until their TTL). Baseline: every
read goes to the database. Both arms share arrivals, keys and per-read service draws. Metrics cover
reads after the warm-up (caches start empty). Che's approximation of the L1 hit rate is reported too.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sim.analytic import departures_fifo
from sim.components import poisson_arrivals
from sim.dist import Lognormal, Zipf
from sim.rng import Streams
from sim.tiered_cache import DB, L1, L2, POLICIES, TierConfig, che_hit_rate, run_tiers

from .contract import Arm, Exercise, Lab, Outcome, Param
from .kit import arrival_rate, request_budget, window_s
from .measure import Measurements

CURVE_TTLS = (30.0, 60.0, 120.0, 300.0, 600.0)
CACHE_PARAMS = ("rate_rps", "requests", "feature_keys", "zipf_s", "instances", "routing", "l1_maxsize", "l1_ttl_s",
                "l2_maxmemory_keys", "maxmemory_policy", "cap_l1_by_l2", "update_policy", "write_rate_per_s")
LOOKUP_CV, DB_CV = 0.5, 1.0


class MultiTierCachingLab(Lab):
    id = "q18"
    headline = ("pattern", "p95_ms")
    refine_param = "requests"
    arms = (Arm("baseline", "Database only", "every feature read queries the database"),
            Arm("pattern", "L1 + L2 + database", "in-process LRU, then the shared TTL cache, then the database"),
            Arm("comparison", "Pattern vs baseline", "latency ratio and database load saved"))
    assumptions = (
        f"Lookup times are lognormal (cv {LOOKUP_CV:g}); database service is lognormal (cv {DB_CV:g}) behind a FIFO "
        "pool of db_connections (Kiefer-Wolfowitz recursion: the same waits a SimPy pool gives).",
        "A miss fills L2 and L1 when it is asked; concurrent misses for one key share that fill (singleflight).",
        "Writes pick keys with the same Zipf popularity as reads and do not use the read connections.",
        "An invalidation reaches every cache at the moment of the write (no race with an in-flight fill).",
        "Metrics cover reads after warmup_pct of the window; the caches start empty.",
    )
    parts = {"tiers": CACHE_PARAMS + ("l2_ttl_s",), "ttl_curve": CACHE_PARAMS + ("warmup_pct",)}
    params = (
        arrival_rate(30.0, 1.0, 2000.0),
        request_budget(24_000, 2_000, 200_000),
        Param("feature_keys", 10_000, 10, 1_000_000, unit="keys", help="distinct feature keys (entities)"),
        Param("zipf_s", 1.0, 0.0, 2.0, key=True, help="Zipf exponent of key popularity (0: uniform)"),
        Param("instances", 4, 1, 64, unit="processes", help="application processes, each with its own L1"),
        Param("routing", "random", choices=("random", "by_key"),
              help="random: any process serves any key; by_key: a key always lands on the same process"),
        Param("l1_maxsize", 1000, 0, 1_000_000, unit="entries", key=True,
              help="in-process LRU size per process (cachetools maxsize; 0 disables L1)"),
        Param("l1_ttl_s", 60.0, 0.1, 86_400.0, unit="s", help="L1 entry lifetime from its set"),
        Param("l2_maxmemory_keys", 1_000_000, 0, 10_000_000, unit="keys",
              help="shared cache capacity (Redis maxmemory, counted in keys; 0 disables L2)"),
        Param("maxmemory_policy", "allkeys-lru", choices=("allkeys-lru", "noeviction"),
              help="Redis eviction when full: sampled LRU (5 samples) or refuse the write"),
        Param("l2_ttl_s", 300.0, 1.0, 86_400.0, unit="s", key=True, help="shared cache TTL (SET key value EX ttl)"),
        Param("cap_l1_by_l2", False, help="an L1 copy expires no later than the L2 entry it was copied from"),
        Param("update_policy", "invalidate_l2", choices=POLICIES, key=True,
              help="what a write does: nothing (copies age out), delete the L2 copy, or delete every copy"),
        Param("write_rate_per_s", 0.5, 0.0, 200.0, unit="writes/s", help="feature updates per second"),
        Param("l1_ms", 1.0, 0.001, 100.0, unit="ms", help="mean in-process cache lookup"),
        Param("l2_ms", 5.0, 0.01, 500.0, unit="ms", help="mean shared cache round trip"),
        Param("db_ms", 50.0, 0.1, 5000.0, unit="ms", help="mean database query time (service, before queueing)"),
        Param("db_connections", 2, 1, 1024, unit="connections", help="database connections serving reads (FIFO)"),
        Param("warmup_pct", 30.0, 0.0, 90.0, unit="%", help="share of the window left out of the metrics"),
    )
    exercises = (
        Exercise("Route each key to the same process instead of any process. What happens to the L1 share?",
                 {"routing": "by_key"}, ("pattern", "l1_hit_pct"),
                 why="Routing a key to one process gives each L1 a quarter of the key space and four times the "
                 "requests per key, so its LRU holds more of the hot keys and fewer entries expire unread."),
        Exercise("Make key popularity flatter (Zipf 0.6). Does the cached P95 stay under 20 ms?",
                 {"zipf_s": 0.6}, ("pattern", "p95_ms"),
                 why="With flatter popularity the hot set no longer fits the caches, more reads fall through to the "
                 "database, and the database's latency sets the 95th percentile."),
        Exercise("Let writes leave cached copies alone (TTL only). What share of reads is stale now?",
                 {"update_policy": "ttl_only"}, ("pattern", "stale_read_pct"),
                 why="Without invalidation a write leaves every cached copy in place until its TTL expires, so reads "
                 "keep returning the old value for longer."),
        Exercise("Cap each L1 copy at the L2 entry's expiry. What is the oldest value served now?",
                 {"cap_l1_by_l2": True}, ("pattern", "staleness_s"),
                 why="An L1 copy made just before its L2 entry expires can outlive it by a full L1 TTL; capping the "
                 "copy at the L2 expiry removes that extra time from the worst case."),
    )

    def simulate(self, seed: int, p) -> Outcome:
        s, n = Streams(seed), p.requests
        t = poisson_arrivals(s["arrivals"], p.rate_rps, n)
        tiers = self.part("tiers", seed, p)
        keep = t >= p.warmup_pct / 100 * window_s(p)
        l1_t = Lognormal(p.l1_ms / 1e3, LOOKUP_CV).sample(s["l1"], n)
        l2_t = Lognormal(p.l2_ms / 1e3, LOOKUP_CV).sample(s["l2"], n)
        db_t = Lognormal(p.db_ms / 1e3, DB_CV).sample(s["db"], n)

        lat = {}
        start, end = departures_fifo(t, db_t, p.db_connections)
        lat["baseline"] = end - t
        tier = tiers["tier"]
        miss = tier == DB
        lat_p = l1_t.copy()
        lat_p[tier != L1] += l2_t[tier != L1]
        if miss.any():
            at_db = t[miss] + lat_p[miss]
            order = np.argsort(at_db, kind="stable")
            d_start, d_end = departures_fifo(at_db[order], db_t[miss][order], p.db_connections)
            back = np.empty(order.size)
            back[order] = d_end - at_db[order]
            lat_p[miss] += back
        lat["pattern"] = lat_p
        busy = {"baseline": db_t.sum(), "pattern": db_t[miss].sum()}

        m = Measurements(("baseline", "pattern", "comparison"))
        k = int(keep.sum())
        for arm in ("baseline", "pattern"):
            m.percentiles(arm, lat[arm][keep], (50, 95, 99))
            m.value(arm, "db_utilization_pct", 100 * busy[arm] / (window_s(p) * p.db_connections))
        m.share("baseline", "db_read_pct", k, k)
        m.share("baseline", "hit_rate_pct", 0, k)
        tk = tier[keep]
        m.share("pattern", "l1_hit_pct", int(np.sum(tk == L1)), k)
        m.share("pattern", "l2_hit_pct", int(np.sum(tk == L2)), k)
        m.share("pattern", "db_read_pct", int(np.sum(tk == DB)), k)
        m.share("pattern", "hit_rate_pct", int(np.sum(tk != DB)), k)
        cached = keep & (tier != DB)
        none = "no read was answered from a cache after the warm-up"
        m.value("pattern", "staleness_s", tiers["age"][cached].max() if cached.any() else np.nan, missing=none)
        m.percentiles("pattern", tiers["age"][cached], (95,), key="age_p{q}_s", scale=1.0, missing=none)
        m.share("pattern", "stale_read_pct", int(np.sum(tiers["stale"][keep])), k)
        stale = keep & tiers["stale"]
        m.percentiles("pattern", tiers["stale_for"][stale], (95,), key="stale_for_p{q}_s", scale=1.0,
                      missing="no stale read after the warm-up (writes invalidated every copy, or none happened)")
        m.value("pattern", "l1_che_hit_pct", 100 * _che_l1(p))
        m.ratio("comparison", "p95_reduction_x", ("baseline", "p95_ms"), ("pattern", "p95_ms"))
        m.saving_pct("comparison", "db_load_saving_pct", ("pattern", "db_utilization_pct"),
                     ("baseline", "db_utilization_pct"))

        curve = pd.DataFrame(self.part("ttl_curve", seed, p))
        series = {"ttl_curve": curve,
                  "tiers": pd.DataFrame({"tier": ["L1", "L2", "database"],
                                         "share_pct": [m.metrics["pattern"][x] for x in
                                                       ("l1_hit_pct", "l2_hit_pct", "db_read_pct")]}),
                  "latency_cdf": _cdf(lat, keep)}
        notes = [f"Window {window_s(p):g} s: {n} reads at {p.rate_rps:g}/s over {p.feature_keys} keys (Zipf {p.zipf_s:g}), "
                 f"{p.instances} processes; metrics over the {k} reads after the first {p.warmup_pct:g}%.",
                 f"L1 measured {m.metrics['pattern']['l1_hit_pct']:.3g}% against Che's approximation "
                 f"{m.metrics['pattern']['l1_che_hit_pct']:.3g}% (no TTL, no writes: they only lower the measured "
                 "share)."]
        return Outcome(m, series, notes=notes)

    def part_tiers(self, seed: int, p) -> dict:
        return _run(seed, p, p.l2_ttl_s)

    def part_ttl_curve(self, seed: int, p) -> list:
        n = p.requests
        t = poisson_arrivals(Streams(seed)["arrivals"], p.rate_rps, n)
        keep = t >= p.warmup_pct / 100 * window_s(p)
        rows = []
        for ttl in CURVE_TTLS:
            r = _run(seed, p, ttl)
            cached = keep & (r["tier"] != DB)
            rows.append({"l2_ttl_s": ttl, "hit_rate_pct": 100 * np.mean(r["tier"][keep] != DB),
                         "stale_read_pct": 100 * np.mean(r["stale"][keep]),
                         "oldest_served_s": float(r["age"][cached].max()) if cached.any() else np.nan})
        return rows

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        curve = result.series["ttl_curve"].melt("l2_ttl_s", ["hit_rate_pct", "stale_read_pct"], "measure", "pct")
        return [
            bar_chart(result.series["tiers"], "tier", "share_pct", "Where reads are answered (pattern arm)",
                      "share of reads (%)"),
            line_chart(result.series["latency_cdf"], "latency_ms", "cum_pct", "Latency distribution per arm",
                       "latency (ms, log)", "reads at or below (%)", log_x=True, rules=[("y", 95, "P95")]),
            line_chart(curve, "l2_ttl_s", "pct", "Shared-cache TTL against hit rate and stale reads", "L2 TTL (s, log)",
                       "% of reads", color="measure", log_x=True, points=True),
        ]


def _instances(p, keys: np.ndarray, rng) -> np.ndarray:
    if p.routing == "by_key":
        return keys % p.instances
    return rng.integers(p.instances, size=keys.size)


def _run(seed: int, p, l2_ttl: float) -> dict:
    s = Streams(seed)
    n, horizon = p.requests, window_s(p)
    t = poisson_arrivals(s["arrivals"], p.rate_rps, n)
    zipf = Zipf(p.feature_keys, p.zipf_s)
    keys = zipf.sample(s["keys"], n)
    n_w = int(s["write_count"].poisson(p.write_rate_per_s * horizon))
    w_t = np.sort(s["write_times"].uniform(0, horizon, n_w))
    w_k = zipf.sample(s["write_keys"], n_w)
    cfg = TierConfig(p.l1_maxsize, p.l1_ttl_s, p.l2_maxmemory_keys, l2_ttl, p.instances, p.update_policy,
                     p.cap_l1_by_l2, p.maxmemory_policy)
    return run_tiers(t, keys, _instances(p, keys, s["routing"]), w_t, w_k, cfg, s["l2_evict"])


def _che_l1(p) -> float:
    """Che's LRU hit rate for one process's L1 under the independent reference model it sees."""
    w = Zipf(p.feature_keys, p.zipf_s).weights
    if p.routing == "random" or p.instances == 1:
        return che_hit_rate(w, p.l1_maxsize)
    owner = np.arange(p.feature_keys) % p.instances
    total = 0.0
    for j in range(p.instances):
        share = w[owner == j]
        if share.sum() > 0:
            total += share.sum() * che_hit_rate(share, p.l1_maxsize)
    return total


def _cdf(lat: dict, keep: np.ndarray) -> pd.DataFrame:
    qs = np.linspace(0.5, 99.5, 100)
    return pd.concat([pd.DataFrame({"arm": arm, "cum_pct": qs, "latency_ms": np.percentile(v[keep] * 1e3, qs)})
                      for arm, v in lat.items() if keep.any()], ignore_index=True)


LAB = MultiTierCachingLab()
