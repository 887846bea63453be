"""sim.feature_store against Feast's point-in-time semantics (REFERENCES §15) and §9's cache-aside rules."""
import math

import numpy as np
import pandas as pd
import pytest

import sim.feature_store as F


def _rows(rows):
    return pd.DataFrame(rows, columns=["user_id", "event_timestamp", "created_timestamp", "v"])


FEATURES = _rows([(1, 10.0, 10.0, 1.0), (1, 20.0, 20.0, 2.0), (1, 30.0, 30.0, 3.0),
                  (1, 20.0, 25.0, 7.0),  # a rewrite of the t=20 row: the later created_timestamp wins
                  (2, 15.0, 15.0, 9.0)])


def test_point_in_time_join_takes_the_latest_row_at_or_before_each_request_never_a_later_one():
    ent = pd.DataFrame({"user_id": [1, 1, 1, 1, 2, 2, 2, 3],
                        "event_timestamp": [25.0, 20.0, 5.0, 29.999, 60.0, 65.0, 65.001, 50.0]})
    out = F.point_in_time_join(ent, FEATURES, ttl_h=50.0)
    got = out["v"].tolist()
    assert got[0] == 7.0          # t=25: the t=20 row (rewritten), not the t=30 one from its future
    assert got[1] == 7.0          # exact timestamp match is included (<=)
    assert math.isnan(got[2])     # nothing before t=5: null
    assert got[3] == 7.0          # a hair before the t=30 row: still the t=20 one
    assert got[4] == 9.0          # ttl: 15 >= 60 - 50
    assert got[5] == 9.0          # boundary: 15 >= 65 - 50 is kept
    assert math.isnan(got[6])     # 15 < 65.001 - 50: too old for the TTL, null
    assert math.isnan(got[7])     # an entity with no rows at all
    assert out["user_id"].tolist() == ent["user_id"].tolist()  # the entity rows keep their order
    assert (out["feature_timestamp"].dropna().to_numpy() <= ent["event_timestamp"][out["feature_timestamp"].notna()]
            .to_numpy()).all()


def test_ttl_zero_or_none_means_no_lower_bound():
    ent = pd.DataFrame({"user_id": [2], "event_timestamp": [10_000.0]})
    assert F.point_in_time_join(ent, FEATURES, ttl_h=0)["v"].iloc[0] == 9.0
    assert F.point_in_time_join(ent, FEATURES, ttl_h=None)["v"].iloc[0] == 9.0


def test_the_naive_date_join_reads_the_snapshot_written_after_the_request():
    snap = _rows([(1, 24.0, 24.0, 1.0), (1, 48.0, 48.0, 2.0)])
    ent = pd.DataFrame({"user_id": [1], "event_timestamp": [30.0]})  # day 1, 06:00
    assert F.naive_date_join(ent, snap)["v"].iloc[0] == 2.0             # the midnight at the day's end: leak
    assert F.point_in_time_join(ent, snap, None)["v"].iloc[0] == 1.0    # the last midnight before it


def _log(events, signup=(-np.inf,), days=21):
    user = np.array([u for u, _ in events], dtype=int)
    ts = np.array([t for _, t in events], dtype=float)
    order = np.lexsort((ts, user))
    return F.EventLog(user[order], ts[order], np.array(signup, dtype=float), days)


def test_window_definitions_count_what_they_say():
    # day 0 is a Monday; purchases on Mon 09:00 (day 7), Wed (day 9), and the Friday before (day 4)
    log = _log([(0, 7 * 24 + 9), (0, 9 * 24 + 15), (0, 4 * 24 + 12)])
    defs = (F.FeatureDef("a", "count", "rolling_7d"), F.FeatureDef("b", "count", "calendar_week"),
            F.FeatureDef("c", "days_since_last", default=99.0))
    thu = np.array([10 * 24.0])  # Thursday 00:00 of week 2
    x = F.features_at(log, log.daily_counts(), np.array([0]), thu, defs)[0]
    assert x.tolist() == [3.0, 2.0, pytest.approx((10 * 24 - (9 * 24 + 15)) / 24)]
    mon = np.array([7 * 24.0])  # Monday 00:00: the calendar week has just begun
    assert F.features_at(log, log.daily_counts(), np.array([0]), mon, defs)[0][:2].tolist() == [1.0, 0.0]
    never = F.features_at(log, log.daily_counts(), np.array([0]), np.array([24.0]), defs)[0]
    assert never.tolist() == [0.0, 0.0, 99.0]  # no purchase yet: the definition's default


def test_snapshots_leave_gaps_null_and_start_at_signup():
    log = _log([(0, 30.0), (1, 100.0)], signup=(-np.inf, 50.0), days=5)
    snap = F.daily_snapshots(log, F.training_definitions())
    first = snap.groupby("user_id")["event_timestamp"].min()
    assert first[0] == 24.0 and first[1] == 72.0
    row = snap[(snap.user_id == 0) & (snap.event_timestamp == 24.0)].iloc[0]
    assert math.isnan(row["days_since_last_purchase"]) and row["purchases_7d"] == 0


def test_serving_definitions_none_is_an_exact_copy_and_skewed_ones_differ_in_content():
    defs = F.training_definitions()
    assert F.serving_definitions(defs, "none") == defs
    both = F.serving_definitions(defs, "both")
    assert [d.digest() for d in both] != [d.digest() for d in defs]
    assert [d.name for d in both] == [d.name for d in defs]  # same names, different computations


def test_reuse_counts_definitions_by_content_not_by_name():
    a = F.FeatureDef("spend_7d", "count", "rolling_7d")
    a_copy = F.FeatureDef("user_spend_last_week", "count", "rolling_7d")  # same computation, another name
    a_cal = F.FeatureDef("spend_7d", "count", "calendar_week")           # same name, another computation
    b = F.FeatureDef("x", "days_since_last", default=30.0)
    assert F.reuse_rate({"m1": [a, b], "m2": [a_copy]}) == (1, 2)
    assert F.reuse_rate({"m1": [a, b], "m2": [a_cal]}) == (0, 3)
    assert F.reuse_rate({"m1": [a, b]}) == (0, 2)


def test_a_registry_gives_at_least_the_reuse_of_private_copies():
    # per catalogue a registry never has more distinct definitions to maintain; on average it shares more
    # (one catalogue can go the other way: two teams may drift from a feature in the same way)
    rates = []
    for seed in range(40):
        shared = F.reuse_rate(F.team_catalogue(np.random.default_rng(seed), 5, 6, 16, 1.0, 0.5, True))
        private = F.reuse_rate(F.team_catalogue(np.random.default_rng(seed), 5, 6, 16, 1.0, 0.5, False))
        assert shared[1] <= private[1]
        rates.append((shared[0] / shared[1], private[0] / private[1]))
    assert np.mean([a for a, _ in rates]) > np.mean([b for _, b in rates]) + 0.1
    same = [F.team_catalogue(np.random.default_rng(1), 4, 5, 10, 1.0, 0.0, r) for r in (True, False)]
    assert same[0] == same[1]  # no variation: private copies are the registry's definitions


def test_ttl_cache_expires_at_set_plus_ttl_and_evicts_least_recently_used():
    c = F.TTLCache(ttl_s=10.0, max_entries=2)
    c.put("a", 0.0)
    assert c.get("a", 9.999) and not c.get("a", 10.0)
    c.put("a", 20.0), c.put("b", 21.0)
    assert c.get("a", 22.0)  # touch a: b is now least recently used
    c.put("c", 23.0)
    assert c.get("a", 24.0) and c.get("c", 24.0) and not c.get("b", 24.0)
    off = F.TTLCache(0.0, 10)
    off.put("a", 0.0)
    assert not off.get("a", 0.0)


def test_concurrent_misses_share_one_fetch_singleflight():
    arrivals = np.array([0.0, 0.001, 0.5])
    out = F.serve_fetches(arrivals, np.array([7, 7, 7]), np.array([0.01, 0.01, 0.01]), 1, None, 0.0, np.zeros(3))
    assert out["latency_s"][0] == pytest.approx(0.01)
    assert out["latency_s"][1] == pytest.approx(0.009)  # waits for the in-flight fetch, not a second one
    assert out["latency_s"][2] == pytest.approx(0.01)   # nothing cached (no cache): a fresh fetch


def test_cache_hits_skip_the_store_until_the_ttl_runs_out():
    arrivals = np.array([0.0, 1.0, 2.0, 20.0])
    out = F.serve_fetches(arrivals, np.zeros(4, int), np.full(4, 0.002), 1, F.TTLCache(5.0, 10), 1e-5,
                          np.full(4, 0.001))
    assert out["hit"].tolist() == [False, True, True, False]
    assert out["latency_s"].tolist() == pytest.approx([0.003, 1e-5, 1e-5, 0.003])


def test_queueing_at_the_store_follows_fifo_over_the_connections():
    # three misses for different keys at once on one connection: they wait in turn
    out = F.serve_fetches(np.zeros(3), np.arange(3), np.full(3, 0.01), 1, None, 0.0, np.zeros(3))
    assert out["latency_s"].tolist() == pytest.approx([0.01, 0.02, 0.03])
    two = F.serve_fetches(np.zeros(3), np.arange(3), np.full(3, 0.01), 2, None, 0.0, np.zeros(3))
    assert two["latency_s"].tolist() == pytest.approx([0.01, 0.01, 0.02])


def test_event_log_is_seeded_sorted_and_respects_signup():
    a = F.generate_event_log(np.random.default_rng(3), 300, 28, 0.5)
    b = F.generate_event_log(np.random.default_rng(3), 300, 28, 0.5)
    assert np.array_equal(a.ts_h, b.ts_h) and np.array_equal(a.user, b.user)
    assert (a.ts_h >= a.signup_h[a.user]).all()
    key = a.user * 1e6 + a.ts_h
    assert (np.diff(key) >= 0).all()


def test_the_experiment_with_identical_definitions_has_no_skew_and_the_leaky_join_scores_higher():
    out = F.skew_experiment(np.random.default_rng(0), 600, 91, 70, 35, 0.3, 14.0, "any", "none", 30.0, 48.0,
                            0.0, 24.0)
    r = out["right"]
    assert np.array_equal(r["separate"], r["store"]) and np.array_equal(r["store"], r["offline"])
    assert r["naive_offline"].mean() > r["offline"].mean()


def test_the_point_in_time_join_agrees_with_duckdb_asof_join():
    # an independent implementation of the same rule: DuckDB's ASOF LEFT JOIN (latest row with ts <= request ts)
    duckdb = pytest.importorskip("duckdb")
    log = F.generate_event_log(np.random.default_rng(5), 300, 35, 0.4)
    snap = F.daily_snapshots(log, F.training_definitions())
    rng = np.random.default_rng(6)
    ent = pd.DataFrame({"user_id": rng.integers(0, 300, 2000), "event_timestamp": rng.uniform(0, 35 * 24, 2000)})
    ent["event_timestamp"] = np.where(rng.random(2000) < 0.1, np.floor(ent["event_timestamp"] / 24) * 24,
                                      ent["event_timestamp"])  # some requests exactly at a snapshot's time
    ours = F.point_in_time_join(ent, snap, ttl_h=30.0)
    con = duckdb.connect()
    con.register("ent", ent.assign(row=np.arange(len(ent))))
    con.register("snap", snap)
    theirs = con.execute("""
        SELECT e.row, CASE WHEN e.event_timestamp - s.event_timestamp <= 30 THEN s.purchases_7d END AS p7,
               CASE WHEN e.event_timestamp - s.event_timestamp <= 30 THEN s.days_since_last_purchase END AS ds
        FROM ent e ASOF LEFT JOIN snap s ON e.user_id = s.user_id AND e.event_timestamp >= s.event_timestamp
        ORDER BY e.row""").df()
    np.testing.assert_array_equal(ours["purchases_7d"].to_numpy(), theirs["p7"].to_numpy(dtype=float))
    np.testing.assert_array_equal(ours["days_since_last_purchase"].to_numpy(), theirs["ds"].to_numpy(dtype=float))
    assert ours["purchases_7d"].isna().any() and ours["purchases_7d"].notna().any()
