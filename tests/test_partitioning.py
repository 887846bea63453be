"""sim.partitioning against Spark's partitioners, real pyarrow scans, and the barrier/all-reduce epoch."""
import os

import numpy as np
import pytest

import sim.partitioning as P


def test_murmur3_matches_sparks_hash_function():
    # Spark SQL: SELECT hash(1) = -559580957 (an int), SELECT hash(1L) = -1712319331 (a bigint), seed 42
    assert P.murmur3_int([1])[0] == -559580957
    assert P.murmur3_long([1])[0] == -1712319331
    h = P.murmur3_long(np.arange(-5, 5))
    assert h.min() >= -2**31 and h.max() < 2**31


def test_hash_partition_is_pmod_so_never_negative_and_balanced_for_distinct_keys():
    keys = np.arange(200_000, dtype=np.int64) * 7919
    parts = P.hash_partition(keys, 64)
    assert parts.min() >= 0 and parts.max() < 64
    assert np.array_equal(parts, np.mod(P.murmur3_long(keys), 64))
    assert P.partition_skew(parts, 64) < 1.1  # 3,125 distinct keys per partition: only Poisson noise


def test_a_hot_key_lands_in_one_partition_whatever_the_partitioner():
    keys = np.concatenate([np.full(5_000, 42), np.arange(1000, 6000)])  # one key holds half the rows
    h = P.hash_partition(keys, 10)
    assert len(set(h[:5_000])) == 1
    assert P.partition_skew(h, 10) >= 5.0  # half of everything in one of ten partitions
    bounds = P.range_bounds(keys, 10)
    r = P.range_partition(keys, bounds)
    assert len(set(r[:5_000])) == 1 and P.partition_skew(r, 10) >= 5.0


def test_range_bounds_follow_spark_determine_bounds():
    sample = np.arange(1, 101)          # 100 distinct keys, 4 partitions: bounds at the 25th, 50th, 75th key
    b = P.range_bounds(sample, 4)
    assert b.tolist() == [25, 50, 75]
    assert P.range_partition([1, 25, 26, 50, 51, 100, 1000], b).tolist() == [0, 0, 1, 1, 2, 3, 3]
    dup = np.array([1] * 60 + list(range(2, 42)))  # a heavy key: bounds are distinct and skip its repeats
    bd = P.range_bounds(dup, 4)
    assert len(set(bd.tolist())) == len(bd) and bd[0] == 1
    assert P.range_bounds(sample, 1).size == 0


def test_partition_skew_counts_empty_partitions():
    assert P.partition_skew(np.array([0, 0, 1, 1]), 2) == 1.0
    assert P.partition_skew(np.array([0, 0, 1, 1]), 4) == 2.0


def test_event_keys_zipf_zero_is_uniform_and_days_follow_their_weights():
    rng = np.random.default_rng(0)
    user, day = P.event_keys(rng, 200_000, 1_000, 0.0, 14, 1.0, 0.0)
    counts = np.bincount(np.unique(user, return_inverse=True)[1])
    assert counts.size == 1_000
    assert counts.std() / counts.mean() == pytest.approx(1 / np.sqrt(counts.mean()), rel=0.15)  # Poisson only
    per_day = np.bincount(day, minlength=14)
    weekend, weekday = per_day[[5, 6, 12, 13]].mean(), per_day[[0, 1, 2, 3, 4, 7, 8, 9, 10, 11]].mean()
    assert weekend / weekday == pytest.approx(2.0, rel=0.05)  # a 100% weekend boost
    top = P.zipf_probabilities(1_000, 1.0)
    assert top[0] / top[1] == pytest.approx(2.0)


def test_ring_allreduce_cost():
    assert P.ring_allreduce_s(1, 100, 10, 0.1) == 0
    # 2 workers: one model's bytes over the link (2 × 1/2), plus 2 hops
    assert P.ring_allreduce_s(2, 100, 10, 0.1) == pytest.approx(100 * 8e6 / 10e9 + 2e-4)
    assert P.ring_allreduce_s(64, 100, 10, 0) < 2 * 100 * 8e6 / 10e9


def test_step_work_is_full_batches_then_the_remainder():
    w = P.step_work([1000, 300, 0], 256, 1.0)
    assert w[:, 0].tolist() == [256, 256, 256, 232] and w[:, 1].tolist() == [256, 44, 0, 0]
    assert w[:, 2].sum() == 0


def test_barrier_releases_when_everyone_still_working_has_arrived():
    import simpy

    env = simpy.Environment()
    b = P.Barrier(env, 3)
    seen = {}

    def party(name, delay, leave=False):
        yield env.timeout(delay)
        if leave:
            b.leave()
            return
        yield from b.wait()
        seen[name] = env.now

    for name, d, lv in (("a", 1, False), ("b", 2, False), ("c", 5, True)):
        env.process(party(name, d, lv))
    env.run()
    assert seen == {"a": 5, "b": 5}  # held until c deregistered at t=5


def test_simulated_epoch_equals_the_closed_form():
    rng = np.random.default_rng(1)
    shards = rng.integers(0, 5_000, 12)
    slow = rng.random((40, 12)) < 0.1
    sim = P.train_epoch(shards, 256, 1e-3, 0.05, slow, 3.0)
    assert sim["time_s"] == pytest.approx(P.epoch_time_closed_form(shards, 256, 1e-3, 0.05, slow, 3.0), rel=1e-12)
    assert sim["busy_s"].sum() >= shards.sum() * 1e-3 - 1e-9


def test_balanced_work_without_stragglers_or_sync_scales_perfectly():
    none = np.zeros((100, 8), dtype=bool)
    one = P.train_epoch([8 * 4096], 512, 1e-3, 0.0, none[:, :1], 2.0)["time_s"]
    eight = P.train_epoch([4096] * 8, 512, 1e-3, 0.0, none, 2.0)["time_s"]
    assert one / eight / 8 == pytest.approx(1.0)


def test_real_scans_read_fewer_bytes_and_faster_from_parquet(tmp_path):
    # the live probe, small: finite, Parquet reads fewer bytes for a column subset and is not slower
    prof = P.measure_scans(0, 20_000, 6, (2, 12), repeats=3, folder=str(tmp_path))
    g2, gall = prof["grid"]["2"], prof["grid"]["12"]
    assert prof["total_columns"] == 12
    assert g2["parquet_bytes"] < gall["parquet_bytes"] <= gall["parquet_file_bytes"] < gall["csv_bytes"]
    assert all(np.isfinite(g2["csv_s"])) and all(t > 0 for t in g2["parquet_s"])
    assert np.median(g2["parquet_s"]) < np.median(g2["csv_s"])
    assert os.listdir(tmp_path) == []  # the files were written to a temporary folder and removed
