"""sim.broker / sim.stream / sim.chain against Kafka's semantics (REFERENCES.md §10, §18, §28)."""
import numpy as np
import pytest
import simpy

from sim.broker import (Broker, CommitFailed, ConsumerGroup, OutOfOrderSequence, StickyPartitioner, TopicConfig,
                        key_partition, linger_send_times, murmur2, range_assign)
from sim.chain import sync_chain
from sim.stream import ConsumerConfig, DataSignal, run_batch_consumer, run_consumer, session_timeout

# Kafka's own UtilsTest.testMurmur2 vectors: a key must hash exactly as in the Java producer
MURMUR2 = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
           b"a-little-bit-longer-string": -1486304829,
           b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}


@pytest.mark.parametrize("data,expected", MURMUR2.items())
def test_murmur2_matches_kafka(data, expected):
    assert murmur2(data) == expected


def test_keyed_records_keep_their_order_within_a_partition():
    b = Broker()
    b.create_topic("t", num_partitions=6)
    for i in range(200):
        b.produce("t", f"model-{i % 7}", i, now=float(i))
    for log in b.partitions("t"):
        by_key = {}
        for r in log.records:
            assert r.partition == key_partition(r.key, 6)
            by_key.setdefault(r.key, []).append(r.value)
        assert all(v == sorted(v) for v in by_key.values())
    assert b.produced["t"] == 200 and sum(b.end_offsets("t")) == 200


def test_sticky_partitioner_switches_after_batch_size():
    sp = StickyPartitioner(4, np.random.default_rng(0), batch_size=4096)
    parts = [sp.partition(1024) for _ in range(12)]
    assert parts[:4] == [parts[0]] * 4 and parts[4] != parts[3] and len(set(parts[4:8])) == 1


def test_range_assignor_gives_at_most_one_member_per_partition():
    plan = range_assign(["c", "a", "b"], 7)
    assert plan == {"a": [0, 1, 2], "b": [3, 4], "c": [5, 6]}
    idle = range_assign([f"m{i}" for i in range(5)], 3)
    assert sum(1 for v in idle.values() if not v) == 2


def test_commit_restart_redelivers_uncommitted_records_and_lag_counts_them():
    b = Broker()
    b.create_topic("t", num_partitions=1)
    for i in range(10):
        b.produce("t", None, i, now=i, partition=0)
    g = ConsumerGroup(b, "g", "t", auto_offset_reset="earliest")
    g.join("m")
    assert [r.value for r in g.poll("m", 4)] == [0, 1, 2, 3]
    g.commit("m")
    assert g.lag(0) == 6
    assert [r.value for r in g.poll("m", 3)] == [4, 5, 6]
    g.restart("m")  # crashed before committing 4..6: they come again
    assert [r.value for r in g.poll("m", 3)] == [4, 5, 6]
    with pytest.raises(CommitFailed):
        g.commit("other", {0: 7})


def test_latest_reset_skips_history_and_earliest_reads_it():
    b = Broker()
    b.create_topic("t", num_partitions=1)
    for i in range(5):
        b.produce("t", None, i, now=i, partition=0)
    late = ConsumerGroup(b, "late", "t")  # Kafka's default auto.offset.reset=latest
    late.join("m")
    assert late.poll("m") == []
    early = ConsumerGroup(b, "early", "t", auto_offset_reset="earliest")
    early.join("m")
    assert len(early.poll("m")) == 5


def test_time_retention_deletes_closed_segments_only_and_loss_is_counted():
    b = Broker()
    b.create_topic("t", TopicConfig(1, retention_ms=10_000, segment_bytes=4 * 1024))
    g = ConsumerGroup(b, "g", "t", auto_offset_reset="earliest")
    g.join("m")
    for i in range(12):
        b.produce("t", None, i, now=float(i), partition=0, size=1024)
    log = b.partitions("t")[0]
    assert log.log_start_offset == 0  # nothing older than 10 s yet
    b.produce("t", None, 12, now=30.0, partition=0)
    # segments [0-3], [4-7], [8-11] are closed and older than 10 s; the active one [12] stays
    assert log.log_start_offset == 12 and log.deleted == 12
    assert g.lost(0) == 12 and g.lag(0) == 1
    assert [r.value for r in g.poll("m")] == [12]
    g.commit("m")
    assert g.lost(0) == 12 and g.consumed(0) == 1 and g.skipped[0] == 12


def test_size_retention_keeps_at_most_retention_bytes_of_closed_segments():
    b = Broker()
    b.create_topic("t", TopicConfig(1, retention_ms=None, retention_bytes=8 * 1024, segment_bytes=4 * 1024))
    for i in range(40):
        b.produce("t", None, i, now=float(i), partition=0)
    assert b.partitions("t")[0].size_bytes <= 8 * 1024 + 4 * 1024


def test_idempotent_producer_drops_retries_and_refuses_gaps():
    b = Broker()
    b.create_topic("t", num_partitions=1)
    assert b.produce("t", None, "a", 0, partition=0, producer_id=7, sequence=0) is not None
    assert b.produce("t", None, "a", 0, partition=0, producer_id=7, sequence=0) is None  # a retry
    assert b.duplicates_dropped == 1 and b.end_offsets("t") == [1]
    with pytest.raises(OutOfOrderSequence):
        b.produce("t", None, "c", 0, partition=0, producer_id=7, sequence=2)


def test_dead_letters_go_to_dlt_topic_same_partition():
    b = Broker()
    b.create_topic("orders", num_partitions=3)
    rec = b.produce("orders", None, "x", 0.0, partition=2)
    dl = b.dead_letter(rec, 1.0, "boom")
    assert dl.topic == "orders.DLT" and dl.partition == 2 and dl.value["offset"] == rec.offset


def test_linger_holds_a_batch_until_linger_or_full():
    t = np.array([0.0, 0.001, 0.010, 0.011, 0.012])
    send = linger_send_times(t, np.zeros(5, dtype=int), 0.005, batch_records=2)
    assert list(send) == [0.001, 0.001, 0.011, 0.011, 0.017]


def _consume(commit_interval_s, crashes, idempotent=False, down=()):
    env, b = simpy.Environment(), Broker()
    b.create_topic("t", num_partitions=1)
    g = ConsumerGroup(b, "g", "t", auto_offset_reset="earliest")
    g.join("m")
    effects, seen = {}, []

    def handle(rec, t, deadline):
        seen.append(rec.value)
        if idempotent and rec.value in effects:
            return t
        if t + 0.01 > deadline:
            return None
        effects[rec.value] = effects.get(rec.value, 0) + 1
        return t + 0.01

    def produce():
        for i in range(100):
            yield env.timeout(0.1)
            b.produce("t", None, i, env.now, partition=0)

    env.process(produce())
    env.process(run_consumer(env, g, "m", DataSignal(env, b), handle,
                             ConsumerConfig(commit_interval_s=commit_interval_s, restart_s=0.5), down, crashes))
    env.run()
    return g, effects, seen


def test_crash_before_commit_gives_at_least_once_delivery():
    g, effects, seen = _consume(0.0, crashes=[3.0, 6.0])
    assert set(effects) == set(range(100)) and g.lag(0) == 0
    assert sum(v - 1 for v in effects.values()) == 2  # commit per record: one repeat per crash
    g5, effects5, _ = _consume(5.0, crashes=[3.0, 6.0])
    assert sum(v - 1 for v in effects5.values()) > 10  # auto-commit: everything since the last commit
    gi, effects_i, seen_i = _consume(5.0, crashes=[3.0, 6.0], idempotent=True)
    assert all(v == 1 for v in effects_i.values()) and len(seen_i) > 100  # redelivered, applied once


def test_a_down_consumer_leaves_events_in_the_log_and_drains_them_after():
    g, effects, _ = _consume(0.0, crashes=[], down=[(2.0, 6.0)])
    assert set(effects) == set(range(100)) and g.lag(0) == 0 and g.lost(0) == 0


def test_sync_chain_waits_for_every_call_and_skips_or_retries_a_down_service():
    arr = np.array([0.0, 0.0, 10.0])
    svc = np.full((2, 3), 1.0)
    r = sync_chain(arr, svc, workers=1, rtt_s=0.2, down=[None, None])
    assert np.allclose(r["end"], [2.4, 4.8, 12.4])  # 2 × (0.1 + 1 + 0.1) each, one caller
    skip = sync_chain(arr, svc, 1, 0.2, [None, (0.0, 5.0)], on_failure="skip")
    assert np.isnan(skip["started"][1, :2]).all() and np.isfinite(skip["started"][1, 2])
    retry = sync_chain(arr, svc, 1, 0.2, [None, (0.0, 5.0)], on_failure="retry", retry_s=0.5)
    assert np.isfinite(retry["started"]).all() and retry["started"][1, 0] >= 5.0


def test_a_producer_batch_appends_exactly_what_single_appends_would():
    one, many = Broker(), Broker()
    for b in (one, many):
        b.create_topic("t", TopicConfig(num_partitions=2, segment_bytes=4096))
    values, stamps = list(range(10)), [0.1 * k for k in range(10)]
    for v, ts in zip(values, stamps):
        one.produce("t", None, v, 2.0, partition=1, timestamp=ts)
    many.produce_batch("t", 1, values[:3], 2.0, stamps[:3])
    many.produce_batch("t", 1, values[3:], 2.0, stamps[3:])  # crosses a segment boundary: record by record
    a, b = one.partitions("t")[1], many.partitions("t")[1]
    assert [(r.offset, r.value, r.timestamp) for r in a.records] == [(r.offset, r.value, r.timestamp) for r in b.records]
    assert [(s.base_offset, s.count, s.size) for s in a.segments] == [(s.base_offset, s.count, s.size) for s in b.segments]
    assert many.produced["t"] == 10


def test_a_silent_member_keeps_its_partitions_until_the_session_timeout_then_survivors_resume():
    env = simpy.Environment()
    broker = Broker()
    broker.create_topic("t", TopicConfig(num_partitions=2))
    signal = DataSignal(env, broker)
    group = ConsumerGroup(broker, "g", "t", auto_offset_reset="earliest")
    group.join("a", "b")
    seen: dict[int, list] = {0: [], 1: []}

    def handler(member):
        def process(records):
            yield env.timeout(0.01)
            for r in records:
                seen[r.partition].append((member, r.offset, env.now))
        return process

    env.process(run_batch_consumer(env, group, "a", signal, handler("a"), 1, crash_at=0.5))
    env.process(run_batch_consumer(env, group, "b", signal, handler("b"), 1))
    env.process(session_timeout(env, group, "a", signal, crash_at=0.5, session_timeout_s=10.0))

    def produce():
        for k in range(20):
            yield env.timeout(0.1)
            broker.produce_batch("t", k % 2, [k], env.now, [env.now])

    env.process(produce())
    env.run(until=20)
    a_part = group.assignment("b")  # after the rebalance b owns both
    assert sorted(a_part) == [0, 1]
    late = [s for s in seen[0] if s[0] == "b"]
    assert late and min(t for _, _, t in late) >= 10.5  # nobody read a's partition until the timeout
    crashed = max(o for m, o, _ in seen[0] if m == "a")
    assert any(o == crashed for m, o, _ in late)  # its last batch was never committed: delivered again
