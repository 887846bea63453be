"""A small feature store: an event log, feature definitions, Feast-style point-in-time joins, an online store.

Reference: Feast (REFERENCES.md §15). ``point_in_time_join`` follows
``get_historical_features``: for each entity row it takes the latest feature row of
that entity with ``event_timestamp <= entity_ts`` and ``event_timestamp >= entity_ts - ttl``
(``ttl`` None or 0: no lower bound); ties on ``event_timestamp`` go to the greatest
``created_timestamp``; rows with no match get nulls. The online store is Feast's
latest-value store, loaded by ``materialize``; here a materialization lands
``delay_h`` after the snapshot it copies, so serving reads the latest snapshot that
has landed. The in-process cache in front of it follows §9's cache-aside with a
per-key TTL (as Redis ``EXPIRE``), LRU eviction beyond ``max_entries`` and
singleflight (concurrent misses for one key wait for the one fetch; the result is then
cached by the cache, not by singleflight). Differences: time is in hours, feature rows
are daily batch snapshots computed here from a generated event log, and the feature
definitions are plain dataclasses (not Feast's ``FeatureView`` objects).
"""
from __future__ import annotations

import functools
import hashlib
import json
from collections import OrderedDict
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import simpy

from .components import ReplicaPool

DAY_H = 24.0
WEEK_H = 7 * DAY_H


# ------------------------------------------------------------------ feature definitions
@dataclass(frozen=True)
class FeatureDef:
    """One feature, as a team writes it: what it aggregates, over which window, and the default for a gap.

    ``window``: ``rolling_7d`` / ``rolling_30d`` (the last 7 or 30 days before the cutoff), ``calendar_week``
    (since Monday 00:00 of the cutoff's week). ``aggregation``: ``count`` of events or ``days_since_last``
    event (missing when the entity never had one, then ``default``).
    """

    name: str
    aggregation: str
    window: str = "all"
    default: float = 0.0
    source: str = "purchases"
    entity: str = "user_id"

    def digest(self) -> str:
        """What the feature computes (not what it is called): two teams' copies dedupe only if this matches."""
        return _digest(self)


@functools.lru_cache(maxsize=4096)
def _digest(d: FeatureDef) -> str:
    body = {k: v for k, v in asdict(d).items() if k != "name"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def training_definitions(missing_days: float = 30.0) -> tuple[FeatureDef, ...]:
    """The definitions the model is trained on (the feature store's shared ones)."""
    return (FeatureDef("purchases_7d", "count", "rolling_7d"),
            FeatureDef("purchases_30d", "count", "rolling_30d"),
            FeatureDef("days_since_last_purchase", "days_since_last", "all", default=missing_days))


def candidate_features() -> list[FeatureDef]:
    """A catalogue of plausible feature definitions (what teams pick their features from), most useful first."""
    out = []
    for source in ("purchases", "sessions", "views", "refunds"):
        for entity in ("user_id", "item_id"):
            for window in ("rolling_7d", "rolling_30d", "rolling_1d"):
                out.append(FeatureDef(f"{entity[:-3]}_{source}_{window[8:]}", "count", window, 0.0, source, entity))
            out.append(FeatureDef(f"{entity[:-3]}_days_since_{source}", "days_since_last", "all", 30.0, source,
                                  entity))
    return out


def team_catalogue(rng: np.random.Generator, models: int, per_model: int, pool: int, zipf_s: float,
                   variation: float, shared_registry: bool) -> dict[str, list[FeatureDef]]:
    """Which features each model uses: ``per_model`` picks from the first ``pool`` candidates, popular ones more
    often (Zipf weights 1/rank^s). With a shared registry every model references the one definition; without
    it each team writes its own copy, and with probability ``variation`` that copy differs (another window
    convention or another default), so it no longer dedupes with the others."""
    cands = _variants()[:pool]
    k = min(per_model, len(cands))
    w = 1.0 / np.arange(1, len(cands) + 1) ** zipf_s
    # k weighted draws without replacement (Efraimidis-Spirakis keys), one row per model
    picks = np.argsort(-np.log(rng.random((models, len(cands)))) / w, axis=1)[:, :k]
    tweak = (rng.random((models, k)) < variation) & (not shared_registry)
    style = rng.integers(0, 2, (models, k))
    return {f"model_{m + 1}": [cands[j][1 + s if t else 0] for j, t, s in zip(picks[m], tweak[m], style[m])]
            for m in range(models)}


@functools.lru_cache(maxsize=1)
def _variants() -> list[tuple[FeatureDef, FeatureDef, FeatureDef]]:
    """Each candidate and a team's two ways of drifting from it: another window convention, another default."""
    out = []
    for d in candidate_features():
        window = FeatureDef(d.name, d.aggregation, "calendar_week" if d.aggregation == "count" else d.window,
                            d.default if d.aggregation == "count" else -1.0, d.source, d.entity)
        default = FeatureDef(d.name, d.aggregation, d.window, -1.0, d.source, d.entity)
        out.append((d, window, default))
    return out


def reuse_rate(models: dict[str, list[FeatureDef]]) -> tuple[int, int]:
    """(shared, total) distinct feature definitions across models, deduplicated by what they compute.

    A definition is shared when two or more models use it (seed formula: shared / total features).
    """
    users: dict[str, set] = {}
    for model, defs in models.items():
        for d in defs:
            users.setdefault(d.digest(), set()).add(model)
    return sum(len(u) >= 2 for u in users.values()), len(users)


# ------------------------------------------------------------------ the event log
@dataclass
class EventLog:
    """Purchases of ``n_users`` over ``days`` days; times in hours from a Monday 00:00."""

    user: np.ndarray      # event's user id
    ts_h: np.ndarray      # event time (hours), sorted within each user
    signup_h: np.ndarray  # per user: when the account opened
    days: int

    @property
    def n_users(self) -> int:
        return self.signup_h.size

    def daily_counts(self) -> np.ndarray:
        """users × days matrix of purchases per calendar day."""
        c = np.zeros((self.n_users, self.days), dtype=np.int32)
        np.add.at(c, (self.user, (self.ts_h // DAY_H).astype(int)), 1)
        return c

    def last_before(self, user: np.ndarray, t_h: np.ndarray) -> np.ndarray:
        """Time of each user's last event at or before ``t_h`` (NaN when none)."""
        key = self.user * 1e6 + self.ts_h  # events sorted by (user, time): one searchsorted for all
        q = np.asarray(user) * 1e6 + np.asarray(t_h)
        i = np.searchsorted(key, q, side="right") - 1
        ok = (i >= 0) & (self.user[np.maximum(i, 0)] == user)
        return np.where(ok, self.ts_h[np.maximum(i, 0)], np.nan)


def generate_event_log(rng: np.random.Generator, n_users: int, days: int, new_user_frac: float,
                       mean_rate_per_day: float = 0.7, spell_days: float = 7.0) -> EventLog:
    """A seeded purchase log: users with a lasting taste (gamma rate) that switch between active and dormant
    spells (mean length ``spell_days``), busier at weekends; a share of users open their account during the log."""
    base = rng.gamma(0.7, mean_rate_per_day / 0.7, size=n_users)
    state = np.zeros((n_users, days), dtype=bool)
    state[:, 0] = rng.random(n_users) < 0.4
    flips = rng.random((n_users, days)) < 1 / spell_days
    for d in range(1, days):
        state[:, d] = state[:, d - 1] ^ flips[:, d]
    weekday = np.arange(days) % 7
    rate = base[:, None] * np.where(state, 2.2, 0.2) * np.where(weekday >= 5, 1.4, 1.0)[None, :]
    new = rng.random(n_users) < new_user_frac
    signup = np.where(new, rng.uniform(0, days * DAY_H, n_users), -np.inf)
    counts = rng.poisson(rate)
    u, d = np.nonzero(counts)
    reps = counts[u, d]
    user = np.repeat(u, reps)
    ts = (np.repeat(d, reps) + rng.random(reps.sum())) * DAY_H
    keep = ts >= signup[user]
    user, ts = user[keep], ts[keep]
    order = np.lexsort((ts, user))
    return EventLog(user[order], ts[order], signup, days)


# ------------------------------------------------------------------ computing features
def features_at(log: EventLog, counts: np.ndarray, user: np.ndarray, cutoff_h: np.ndarray,
                defs) -> np.ndarray:
    """Each definition's value for (user, cutoff) pairs, from events strictly before ``cutoff_h`` (a midnight)."""
    day = np.round(np.asarray(cutoff_h) / DAY_H).astype(int)
    cum = np.concatenate([np.zeros((counts.shape[0], 1), np.int64), np.cumsum(counts, axis=1)], axis=1)
    out = np.empty((len(user), len(defs)))
    for j, d in enumerate(defs):
        if d.aggregation == "count":
            if d.window == "calendar_week":
                start = day - day % 7  # day 0 is a Monday
            else:
                start = day - {"rolling_7d": 7, "rolling_30d": 30}[d.window]
            start = np.clip(start, 0, None)
            out[:, j] = cum[user, np.clip(day, 0, counts.shape[1])] - cum[user, start]
        elif d.aggregation == "days_since_last":
            last = log.last_before(user, np.asarray(cutoff_h) - 1e-9)
            out[:, j] = np.where(np.isnan(last), d.default, (cutoff_h - last) / DAY_H)
        else:
            raise ValueError(f"unknown aggregation {d.aggregation!r}")
    return out


def daily_snapshots(log: EventLog, defs) -> pd.DataFrame:
    """The batch feature view: one row per user and midnight once the account is open, stamped with the
    midnight it describes (``event_timestamp``) and when the batch job wrote it (``created_timestamp``).
    Missing values stay null here; each consumer fills its own default."""
    counts = log.daily_counts()
    midnights = np.arange(1, log.days + 1) * DAY_H
    uu, mm = np.meshgrid(np.arange(log.n_users), midnights, indexing="ij")
    uu, mm = uu.ravel(), mm.ravel()
    keep = log.signup_h[uu] <= mm
    uu, mm = uu[keep], mm[keep]
    raw = [FeatureDef(d.name, d.aggregation, d.window, np.nan) for d in defs]
    vals = features_at(log, counts, uu, mm, raw)
    df = pd.DataFrame(vals, columns=[d.name for d in defs])
    df.insert(0, "user_id", uu)
    df.insert(1, "event_timestamp", mm)
    df.insert(2, "created_timestamp", mm)
    return df


# ------------------------------------------------------------------ joins
def point_in_time_join(entity_df: pd.DataFrame, features: pd.DataFrame, ttl_h: float | None,
                       entity: str = "user_id") -> pd.DataFrame:
    """Feast's historical retrieval: the latest feature row with ts <= entity ts (and >= ts - ttl), else nulls.

    ``entity_df`` has ``entity`` and ``event_timestamp``; the result keeps its rows in their order.
    """
    feats = (features.sort_values(["event_timestamp", "created_timestamp"])
             .drop_duplicates([entity, "event_timestamp"], keep="last")  # MAX(created_timestamp)
             .rename(columns={"event_timestamp": "feature_timestamp"}).drop(columns="created_timestamp"))
    left = entity_df.reset_index(drop=True).assign(_row=lambda d: np.arange(len(d)))
    left = left.sort_values("event_timestamp", kind="stable")
    tol = float(ttl_h) if ttl_h else None
    out = pd.merge_asof(left, feats.sort_values("feature_timestamp"), left_on="event_timestamp",
                        right_on="feature_timestamp", by=entity, direction="backward",
                        allow_exact_matches=True, tolerance=tol)
    return out.sort_values("_row").drop(columns="_row").reset_index(drop=True)


def naive_date_join(entity_df: pd.DataFrame, features: pd.DataFrame, entity: str = "user_id") -> pd.DataFrame:
    """The common mistake: join on (entity, calendar date), taking the snapshot written at the END of that
    date, so events after the entity's timestamp (up to midnight) leak into its features."""
    left = entity_df.reset_index(drop=True).copy()
    left["feature_timestamp"] = (np.floor(left["event_timestamp"] / DAY_H) + 1) * DAY_H
    right = features.drop(columns="created_timestamp").rename(columns={"event_timestamp": "feature_timestamp"})
    return left.merge(right, on=[entity, "feature_timestamp"], how="left")


def last_landed_midnight(t_h, delay_h: float) -> np.ndarray:
    """The newest snapshot an online store holds at ``t_h`` when each materialization lands ``delay_h`` late."""
    return np.floor((np.asarray(t_h) - delay_h) / DAY_H) * DAY_H


# ------------------------------------------------------------------ online serving latency (SimPy)
class TTLCache:
    """Cache-aside entries with a per-key TTL (Redis EXPIRE semantics: gone once ``now >= set + ttl``) and
    LRU eviction beyond ``max_entries``. ``ttl_s <= 0`` caches nothing."""

    def __init__(self, ttl_s: float, max_entries: int):
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._exp: OrderedDict = OrderedDict()

    def get(self, key, now: float) -> bool:
        exp = self._exp.get(key)
        if exp is None:
            return False
        if now >= exp:
            del self._exp[key]
            return False
        self._exp.move_to_end(key)
        return True

    def put(self, key, now: float) -> None:
        if self.ttl_s <= 0 or self.max_entries <= 0:
            return
        self._exp[key] = now + self.ttl_s
        self._exp.move_to_end(key)
        while len(self._exp) > self.max_entries:
            self._exp.popitem(last=False)


def serve_fetches(arrivals_s: np.ndarray, keys: np.ndarray, service_s: np.ndarray, servers: int,
                  cache: TTLCache | None, hit_s: float, network_s: np.ndarray) -> dict:
    """Feature fetches through an optional in-process cache in front of a store with ``servers`` connections.

    A miss costs a network round trip plus the store's service time (FIFO over the connections); concurrent
    misses for one key share the in-flight fetch (singleflight). Returns per-request latency (s) and hits.
    """
    env = simpy.Environment()
    pool = ReplicaPool(env, servers=servers)
    n = arrivals_s.size
    lat = np.empty(n)
    hit = np.zeros(n, dtype=bool)
    inflight: dict = {}

    def fetch(i):
        t0, k = env.now, keys[i]
        if k in inflight:
            yield inflight[k]
        else:
            done = inflight[k] = env.event()
            yield env.timeout(network_s[i])
            yield from pool.serve(service_s[i])
            if cache is not None:
                cache.put(k, env.now)
            del inflight[k]
            done.succeed()
        lat[i] = env.now - t0

    def source():
        for i, t in enumerate(arrivals_s):
            if t > env.now:
                yield env.timeout(t - env.now)
            if cache is not None and cache.get(keys[i], env.now):
                hit[i], lat[i] = True, hit_s  # a hit holds nothing shared: no process needed
            else:
                env.process(fetch(i))

    env.process(source())
    env.run()
    return {"latency_s": lat, "hit": hit, "utilization": pool.utilization()}


# ------------------------------------------------------------------ the train-serve experiment
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def serving_definitions(train_defs, skew: str, serving_default: float = 0.0) -> tuple[FeatureDef, ...]:
    """The serving team's re-implementation: ``window`` swaps the rolling 7 days for the calendar week,
    ``default`` fills a missing value with ``serving_default``, ``both`` does both, ``none`` copies exactly."""
    out = []
    for d in train_defs:
        if skew in ("window", "both") and d.window == "rolling_7d":
            d = FeatureDef(d.name, d.aggregation, "calendar_week", d.default, d.source, d.entity)
        if skew in ("default", "both") and d.aggregation == "days_since_last":
            d = FeatureDef(d.name, d.aggregation, d.window, serving_default, d.source, d.entity)
        out.append(d)
    return tuple(out)


def skew_experiment(rng: np.random.Generator, users: int, days: int, train_days: int, first_day: int,
                    new_user_frac: float, spell_days: float, request_day: str, skew: str,
                    missing_default_days: float, ttl_h: float, delay_h: float, horizon_h: float,
                    requests_per_user: int = 8) -> dict:
    """Train a logistic regression on point-in-time features, then score the later weeks' requests the ways
    serving could compute them. Returns, for the test requests, their user, weekday and which predictions
    were right: ``offline`` (PIT features), ``separate`` (the serving team's own definitions), ``store`` (the
    shared definitions from the online store), ``naive_offline``/``naive_online`` (a model trained on the
    date join, scored on its own leaky features and on the store's)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    log = generate_event_log(rng, users, days, new_user_frac, spell_days=spell_days)
    defs = training_definitions(missing_default_days)
    snap = daily_snapshots(log, defs)
    u = np.repeat(np.arange(users), requests_per_user)
    span = np.arange(first_day, days - int(np.ceil(horizon_h / DAY_H)))
    if request_day != "any":
        span = span[span % 7 == WEEKDAYS.index(request_day)]
    t = (rng.choice(span, u.size) + rng.random(u.size)) * DAY_H
    keep = t >= log.signup_h[u]
    u, t = u[keep], t[keep]
    nxt = log.last_before(u, t + horizon_h)
    label = ~np.isnan(nxt) & (nxt > t)
    entities = pd.DataFrame({"user_id": u, "event_timestamp": t})
    def filled(df):
        return np.column_stack([df[d.name].fillna(d.default).to_numpy() for d in defs])

    X_pit = filled(point_in_time_join(entities, snap, ttl_h))
    X_naive = filled(naive_date_join(entities, snap))
    counts = log.daily_counts()
    cutoff = last_landed_midnight(t, delay_h)
    X_store = features_at(log, counts, u, cutoff, defs)
    X_sep = features_at(log, counts, u, cutoff, serving_definitions(defs, skew))
    train = t + horizon_h <= train_days * DAY_H
    test = t >= train_days * DAY_H

    def fit(X):
        return make_pipeline(StandardScaler(), LogisticRegression()).fit(X[train], label[train])

    model, leaky = fit(X_pit), fit(X_naive)
    y = label[test]
    right = {"offline": model.predict(X_pit[test]) == y, "separate": model.predict(X_sep[test]) == y,
             "store": model.predict(X_store[test]) == y, "naive_offline": leaky.predict(X_naive[test]) == y,
             "naive_online": leaky.predict(X_store[test]) == y}
    return {"user": u[test], "weekday": (np.floor(t[test] / DAY_H) % 7).astype(int), "right": right,
            "positive_rate": float(label.mean()), "train_rows": int(train.sum()), "events": int(log.ts_h.size),
            "features": [d.name for d in defs]}
