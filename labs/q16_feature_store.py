"""Q16: one feature definition for training and serving, against two teams' copies (``sim.feature_store``).

A seeded purchase log feeds a daily batch feature view (7- and 30-day counts, days since the last
purchase). A real logistic regression is trained on the first ten weeks, with features fetched by a
Feast-style point-in-time join (latest row at or before each request, within ``ttl_h``), and scored on
the last weeks three ways on the same requests: the serving team's own copy of the features (calendar
week instead of rolling 7 days, 0 instead of the training default for a missing value), the shared
definitions read from the online store, and a model whose training data came from a naive join on the
date (its features saw the rest of the day: leakage). A SimPy model times online fetches: an on-demand
aggregation query against a key-value online store behind an in-process TTL cache. Feature reuse is
counted from real feature definitions, deduplicated by what they compute. ``serving_skew = none`` is
the skew control; ``models = 1`` the reuse control.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

import sim.feature_store as F
from sim.cache import DiskCache
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param
from .measure import Measurements

DAYS, TRAIN_DAYS, FIRST_DAY = 91, 70, 35  # 13 weeks of log; train on weeks 6-10, test on 11-13
BOOT = 400
CACHE = DiskCache("q16_skew", code=[__file__, F])
SKEW = ("users", "new_user_pct", "spell_days", "request_day", "serving_skew", "missing_default_days", "ttl_h",
        "materialize_delay_h", "label_horizon_h")
REUSE = ("models", "features_per_model", "feature_pool", "team_variation_pct")
CATALOGUES = 100  # random team catalogues per reuse estimate
ZIPF_S = 1.0  # popularity of candidate features and of users' request keys
HIT_S = 20e-6  # an in-process cache hit: a dictionary lookup and a copy


class FeatureStoreLab(Lab):
    id = "q16"
    headline = ("baseline", "train_serve_skew_pct")
    refine_param = "requests"
    arms = (Arm("baseline", "Separate code", "serving re-implements the features: calendar week, its own default"),
            Arm("pattern", "Feature store", "one definition: training joins it point-in-time, serving reads the "
                                            "online store"),
            Arm("naive_join", "Naive join", "training joins features on the date, so they include later events"))
    assumptions = (
        "Users switch between active and dormant spells (mean spell_days); weekends are 40% busier.",
        "The label is a purchase within label_horizon_h after the request; the model is a logistic regression.",
        "Feature rows are daily batch snapshots stamped at midnight; both serving paths read the latest one "
        "that has landed (materialize_delay_h after midnight).",
        "Online fetches: one key per request, keys Zipf(1) over users; a miss pays a network hop and a store read.",
        "Reuse: each model picks features_per_model from the first feature_pool candidates, popular ones more often.",
    )
    parts = {"skew": SKEW, "reuse": REUSE}
    params = (
        Param("users", 2000, 200, 10000, unit="users", help="users in the event log (about 8 requests each)"),
        Param("new_user_pct", 30.0, 0.0, 100.0, unit="%", help="share of users who open their account during the log"),
        Param("spell_days", 14.0, 2.0, 60.0, unit="days", key=True,
              help="mean length of an active or dormant spell (long spells: recent counts predict more)"),
        Param("request_day", "any", choices=("any",) + F.WEEKDAYS, key=True,
              help="weekday of the scored requests (any: all week)"),
        Param("serving_skew", "both", choices=("both", "window", "default", "none"), key=True,
              help="how the serving copy differs: calendar week, missing default, both, or none (control)"),
        Param("missing_default_days", 30.0, 0.0, 365.0, unit="days",
              help="training's value for days since last purchase when there was none (serving copy uses 0)"),
        Param("ttl_h", 48.0, 0.0, 720.0, unit="h", help="feature view TTL for the point-in-time join (0 = no limit)"),
        Param("materialize_delay_h", 0.0, 0.0, 72.0, unit="h", key=True,
              help="how long after midnight a snapshot reaches serving (training assumes it at midnight)"),
        Param("label_horizon_h", 24.0, 1.0, 168.0, unit="h", help="the label: a purchase within this many hours"),
        Param("requests", 5000, 1000, 100000, unit="requests", help="online fetches simulated per arm"),
        Param("rate_rps", 2000.0, 10.0, 20000.0, unit="req/s", key=True, help="Poisson rate of feature fetches"),
        Param("store_connections", 8, 1, 256, unit="connections", help="concurrent reads the online store serves"),
        Param("db_connections", 32, 1, 256, unit="connections", help="concurrent queries the event database serves"),
        Param("store_read_ms", 1.0, 0.1, 50.0, unit="ms", help="median online-store read (lognormal, cv 0.5)"),
        Param("on_demand_ms", 10.0, 1.0, 500.0, unit="ms",
              help="median on-demand aggregation query the separate serving code runs (lognormal, cv 0.5)"),
        Param("network_ms", 0.5, 0.0, 20.0, unit="ms", help="median network round trip to the store or database"),
        Param("cache_ttl_s", 30.0, 0.0, 3600.0, unit="s",
              help="TTL of the in-process cache in front of the store (0 = none)"),
        Param("cache_entries", 2000, 1, 1000000, unit="entries", help="LRU bound of the in-process cache"),
        Param("models", 5, 1, 30, unit="models", help="models drawing on the feature catalogue (1 = nothing to share)"),
        Param("features_per_model", 6, 1, 20, unit="features", help="features each model uses"),
        Param("feature_pool", 16, 2, 32, unit="features", help="candidate features teams choose from"),
        Param("team_variation_pct", 50.0, 0.0, 100.0, unit="%",
              help="chance a team's own copy of a feature differs (window or default) without a registry"),
    )
    exercises = (
        Exercise("Score only Monday requests. How large is the skew of the separate serving code now?",
                 {"request_day": "mon"}, ("baseline", "train_serve_skew_pct"),
                 why="A calendar-week count on a Monday holds almost no days, so serving sees active users as dormant "
                 "and the model stops predicting their purchases; over a whole week the shortfall averages out to "
                 "less."),
        Exercise("The nightly batch reaches the online store 36 hours late. Does the shared definition still "
                 "keep skew under 2%?", {"materialize_delay_h": 36.0}, ("pattern", "train_serve_skew_pct"),
                 why="The online store serves the snapshot written when the nightly batch landed; 36 hours late, it "
                 "misses purchases that training (point-in-time, as of each request) saw, so even one shared "
                 "definition now disagrees a little."),
        Exercise("Triple the fetch rate to 6,000 req/s with the cache off. What happens to the store's P95?",
                 {"rate_rps": 6000.0, "cache_ttl_s": 0.0}, ("pattern", "online_p95_ms"),
                 why="With no cache every fetch reaches the online store; at three times the rate its utilisation "
                 "rises and requests wait in its queue, which moves the tail first."),
    )

    # ------------------------------------------------------------------ real data work
    def part_skew(self, seed: int, p) -> dict:
        key = {"seed": seed, **dict(p), "days": DAYS, "train_days": TRAIN_DAYS, "first_day": FIRST_DAY}
        got = CACHE.get_pickle("skew", key)
        if got is not None:
            return got[0]
        out = F.skew_experiment(Streams(seed)["event_log"], p.users, DAYS, TRAIN_DAYS, FIRST_DAY,
                                p.new_user_pct / 100, p.spell_days, p.request_day, p.serving_skew,
                                p.missing_default_days, p.ttl_h, p.materialize_delay_h, p.label_horizon_h)
        CACHE.put_pickle("skew", key, out, meta={"what": "test-request correctness per arm", "rows": len(out["user"])})
        return out

    def part_reuse(self, seed: int, p) -> dict:
        out = {}
        for arm, registry in (("baseline", False), ("pattern", True)):
            r = Streams(seed).fresh("catalogue")  # both arms draw the same picks (common random numbers)
            rates = []
            for _ in range(CATALOGUES):
                shared, total = F.reuse_rate(F.team_catalogue(r, p.models, p.features_per_model, p.feature_pool,
                                                              ZIPF_S, p.team_variation_pct / 100, registry))
                rates.append(100 * shared / total)
            out[arm] = np.array(rates)
        return out

    # ------------------------------------------------------------------ run
    def simulate(self, seed: int, p) -> Outcome:
        m = Measurements(self.arm_names)
        sk = self.part("skew", seed, p)
        acc, skew = _bootstrap(sk, Streams(seed)["bootstrap"])
        arms = {"baseline": ("offline", "separate"), "pattern": ("offline", "store"),
                "naive_join": ("naive_offline", "naive_online")}
        for arm, (off, on) in arms.items():
            for name, col in (("offline_accuracy_pct", off), ("online_accuracy_pct", on)):
                m.value(arm, name, 100 * sk["right"][col].mean(), _ci(100 * acc[col]))
            m.value(arm, "train_serve_skew_pct", _skew(sk["right"][off], sk["right"][on]), _ci(skew[arm]))
        leak = 100 * (acc["naive_offline"] - acc["offline"])
        m.value("naive_join", "leakage_inflation_pp",
                100 * (sk["right"]["naive_offline"].mean() - sk["right"]["offline"].mean()), _ci(leak))

        reuse = self.part("reuse", seed, p)
        for arm in ("baseline", "pattern"):
            m.mean(arm, "feature_reuse_pct", reuse[arm])

        lat = _latency(seed, p)
        for arm in ("baseline", "pattern"):
            m.percentiles(arm, lat[arm]["latency_s"], qs=(50, 99))
            m.percentiles(arm, lat[arm]["latency_s"], qs=(95,), key="online_p95_ms")
        m.share("pattern", "cache_hit_pct", int(lat["pattern"]["hit"].sum()), p.requests)
        m.value("pattern", "store_utilization_pct", 100 * lat["pattern"]["utilization"])
        m.value("baseline", "store_utilization_pct", 100 * lat["baseline"]["utilization"])

        by_day = pd.DataFrame({"weekday": sk["weekday"], "off": sk["right"]["offline"],
                               "sep": sk["right"]["separate"], "store": sk["right"]["store"]})
        g = by_day.groupby("weekday").mean()
        days = pd.concat([pd.DataFrame({"day": [F.WEEKDAYS[i] for i in g.index],
                                        "skew_pct": 100 * (g["off"] - g[col]) / g["off"], "arm": arm})
                          for arm, col in (("baseline", "sep"), ("pattern", "store"))], ignore_index=True)
        cdf = pd.concat([pd.DataFrame({"percentile": np.arange(1, 100),
                                       "latency_ms": 1e3 * np.percentile(lat[a]["latency_s"], np.arange(1, 100)),
                                       "arm": a}) for a in ("baseline", "pattern")], ignore_index=True)
        notes = [f"{sk['events']:,} purchases by {p.users:,} users over {DAYS} days; model trained on "
                 f"{sk['train_rows']:,} requests, scored on {len(sk['user']):,} later ones "
                 f"({100 * sk['positive_rate']:.0f}% positive).",
                 f"{p.requests:,} online fetches per arm at {p.rate_rps:g} req/s; intervals: bootstrap over users "
                 f"(accuracy, skew), batch means (latency), {CATALOGUES} random catalogues (reuse)."]
        return Outcome(m, {"skew_by_day": days, "latency": cdf}, notes=notes)

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        rows = [{"arm": a, "which": w, "accuracy_pct": result.metrics[a][f"{w}_accuracy_pct"]}
                for a in self.arm_names for w in ("offline", "online")]
        return [bar_chart(pd.DataFrame(rows), "arm", "accuracy_pct", "Offline vs online accuracy, same requests",
                          "accuracy (%)", color="which"),
                bar_chart(result.series["skew_by_day"], "day", "skew_pct", "Train-serve skew by request weekday",
                          "skew (%)", color="arm", rules=[(2.0, "2% target")]),
                line_chart(result.series["latency"], "percentile", "latency_ms", "Feature fetch latency",
                           "percentile", "latency (ms, log)", log_y=True, rules=[("y", 10.0, "10 ms target")])]


def _skew(off: np.ndarray, on: np.ndarray) -> float:
    return 100 * (off.mean() - on.mean()) / off.mean()


def _ci(samples: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))


def _bootstrap(sk: dict, rng: np.random.Generator) -> tuple[dict, dict]:
    """Accuracy and skew resampled by user (a user's requests are correlated), BOOT times."""
    users, inv = np.unique(sk["user"], return_inverse=True)
    n = np.bincount(inv, minlength=users.size)
    right = {k: np.bincount(inv, weights=v, minlength=users.size) for k, v in sk["right"].items()}
    idx = rng.integers(0, users.size, size=(BOOT, users.size))
    total = n[idx].sum(axis=1)
    acc = {k: v[idx].sum(axis=1) / total for k, v in right.items()}
    skew = {arm: 100 * (acc[off] - acc[on]) / acc[off] for arm, (off, on) in
            (("baseline", ("offline", "separate")), ("pattern", ("offline", "store")),
             ("naive_join", ("naive_offline", "naive_online")))}
    return acc, skew


def _latency(seed: int, p) -> dict:
    """Both serving paths on the same arrivals, keys and draws (common random numbers)."""
    s = Streams(seed)
    arrivals = np.cumsum(s["arrivals"].exponential(1 / p.rate_rps, p.requests))
    w = 1.0 / np.arange(1, p.users + 1) ** ZIPF_S
    keys = s["keys"].choice(p.users, p.requests, p=w / w.sum())
    sig = np.sqrt(np.log1p(0.25))  # lognormal with cv 0.5
    unit = s["service"].lognormal(0.0, sig, p.requests)
    net = p.network_ms / 1e3 * s["network"].lognormal(0.0, sig, p.requests)
    out = {"baseline": F.serve_fetches(arrivals, keys, unit * p.on_demand_ms / 1e3, p.db_connections, None,
                                       0.0, net)}
    cache = F.TTLCache(p.cache_ttl_s, p.cache_entries) if p.cache_ttl_s > 0 else None
    out["pattern"] = F.serve_fetches(arrivals, keys, unit * p.store_read_ms / 1e3, p.store_connections, cache,
                                     HIT_S, net)
    return out

LAB = FeatureStoreLab()
