"""A log broker with Kafka's semantics: partitioned topics, consumer groups, offsets, retention.

Follows Apache Kafka (REFERENCES.md §10, §18, §28) with its parameter names in
snake_case: a topic has ``num_partitions`` append-only logs; a keyed record goes
to ``toPositive(murmur2(key)) % num_partitions`` (Kafka's ``Utils.murmur2``, so a
key lands where a Java producer would put it) and an unkeyed one to a sticky
partition that switches after ``batch_size`` bytes. Order holds within a
partition only. A consumer group assigns each partition to at most one member
(Kafka's range assignor), so a group's parallelism is at most the partition
count. Each member reads from its *position*; the group keeps *committed*
offsets; lag = log end offset − committed offset, never negative. A restarted
member resumes from the committed offset (static membership), so records it
processed but did not commit are delivered again: at-least-once. An idempotent
producer (``enable_idempotence``) has its retried appends dropped by sequence
number; ``dead_letter`` writes to ``<topic>.DLT`` on the same partition (Spring
for Apache Kafka's ``DeadLetterPublishingRecoverer``).

Where this differs from Kafka: time is a number passed in by the caller (so the
broker works inside SimPy or without it); a record is visible as soon as it is
appended (the high watermark equals the log end offset: replication delay is
the caller's to model); retention runs on every append (Kafka checks every
``log.retention.check.interval.ms``) and deletes whole closed segments, as Kafka
does; an idempotent producer's duplicate window is unbounded (Kafka keeps the
last 5 batches per producer and partition); there is no rebalance protocol or
session timeout: ``join``/``leave`` reassign at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

KAFKA_RETENTION_MS = 604_800_000  # retention.ms: 7 days
KAFKA_SEGMENT_BYTES = 1_073_741_824  # segment.bytes: 1 GiB
KAFKA_BATCH_SIZE = 16_384  # batch.size
KAFKA_MAX_POLL_RECORDS = 500  # max.poll.records


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` as a signed 32-bit int (the Java producer's key hash)."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(length // 4):
        k = int.from_bytes(data[4 * i: 4 * i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail, rest = length & ~3, length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def key_partition(key: str | bytes, num_partitions: int) -> int:
    """Kafka's default partitioner for a keyed record: toPositive(murmur2(key)) % num_partitions."""
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    return (murmur2(raw) & 0x7FFFFFFF) % num_partitions


class StickyPartitioner:
    """Unkeyed records stay on one partition until ``batch_size`` bytes went there, then move on."""

    def __init__(self, num_partitions: int, rng: np.random.Generator, batch_size: int = KAFKA_BATCH_SIZE):
        self.num_partitions, self.rng, self.batch_size = num_partitions, rng, batch_size
        self.current, self.filled = int(rng.integers(num_partitions)), 0

    def partition(self, size: int) -> int:
        if self.filled >= self.batch_size:
            step = int(self.rng.integers(1, self.num_partitions)) if self.num_partitions > 1 else 0
            self.current, self.filled = (self.current + step) % self.num_partitions, 0
        self.filled += size
        return self.current


class OutOfOrderSequence(Exception):
    """An idempotent producer skipped a sequence number (Kafka's OutOfOrderSequenceException)."""


class CommitFailed(Exception):
    """A member committed offsets of a partition it does not own (Kafka's CommitFailedException)."""


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    timestamp: float  # CreateTime: when the producer made the record, in the caller's time unit (s)
    size: int = 1024


@dataclass(frozen=True)
class TopicConfig:
    """Per-topic settings, Kafka names; -1 disables a size limit, None a time limit."""

    num_partitions: int = 1
    retention_ms: float | None = KAFKA_RETENTION_MS
    retention_bytes: int = -1  # per partition, as in Kafka
    segment_bytes: int = KAFKA_SEGMENT_BYTES
    segment_ms: float = KAFKA_RETENTION_MS


@dataclass
class _Segment:
    base_offset: int
    created: float
    max_timestamp: float = float("-inf")
    size: int = 0
    count: int = 0


class PartitionLog:
    """One partition: an append-only list of records in segments, trimmed from the front by retention."""

    def __init__(self, topic: str, index: int, config: TopicConfig):
        self.topic, self.index, self.config = topic, index, config
        self.records: list[Record] = []  # records[i] has offset log_start_offset + i
        self.log_start_offset = 0
        self.segments: list[_Segment] = []
        self.deleted = 0
        self._seq: dict[Any, int] = {}  # producer id -> last sequence appended

    @property
    def log_end_offset(self) -> int:
        return self.log_start_offset + len(self.records)

    high_watermark = log_end_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def append(self, key, value, now: float, timestamp: float | None = None, size: int = 1024,
               producer_id=None, sequence: int | None = None) -> tuple[int, bool]:
        """Append one record; (offset, duplicate). A retried idempotent send returns (-1, True)."""
        if producer_id is not None and sequence is not None:
            last = self._seq.get(producer_id, -1)
            if sequence <= last:
                return -1, True
            if sequence != last + 1:
                raise OutOfOrderSequence(f"{self.topic}-{self.index}: expected sequence {last + 1}, got {sequence}")
            self._seq[producer_id] = sequence
        cfg = self.config
        seg = self.segments[-1] if self.segments else None
        if seg is None or seg.size + size > cfg.segment_bytes and seg.count or now - seg.created >= cfg.segment_ms:
            seg = _Segment(self.log_end_offset, now)
            self.segments.append(seg)
        ts = now if timestamp is None else timestamp
        rec = Record(self.topic, self.index, self.log_end_offset, key, value, ts, size)
        self.records.append(rec)
        seg.size += size
        seg.count += 1
        seg.max_timestamp = max(seg.max_timestamp, ts)
        self.enforce_retention(now)
        return rec.offset, False

    def append_batch(self, values, now: float, timestamps, size: int = 1024, key=None) -> int:
        """Append a producer batch (one RecordBatch, as a produce request carries it); its first offset.

        The same as appending record by record when the batch fits the active segment (else it does that).
        """
        cfg = self.config
        seg = self.segments[-1] if self.segments else None
        n = len(values)
        if seg is None or seg.size + n * size > cfg.segment_bytes or now - seg.created >= cfg.segment_ms:
            first = self.log_end_offset
            for v, ts in zip(values, timestamps):
                self.append(key, v, now, ts, size)
            return first
        first, topic, index = self.log_end_offset, self.topic, self.index
        self.records.extend([Record(topic, index, first + k, key, v, ts, size)
                             for k, (v, ts) in enumerate(zip(values, timestamps))])
        seg.size += n * size
        seg.count += n
        seg.max_timestamp = max(seg.max_timestamp, max(timestamps))
        self.enforce_retention(now)
        return first

    def enforce_retention(self, now: float) -> int:
        """Delete closed segments past retention.ms (newest timestamp) or beyond retention.bytes; count deleted."""
        cfg, gone = self.config, 0
        while len(self.segments) > 1:  # the active (last) segment is never deleted
            seg = self.segments[0]
            too_old = cfg.retention_ms is not None and (now - seg.max_timestamp) * 1e3 > cfg.retention_ms
            too_big = cfg.retention_bytes >= 0 and self.size_bytes - seg.size >= cfg.retention_bytes
            if not (too_old or too_big):
                break
            self.segments.pop(0)
            del self.records[: seg.count]
            self.log_start_offset += seg.count
            gone += seg.count
        self.deleted += gone
        return gone

    def read(self, offset: int, max_records: int) -> list[Record]:
        start = max(0, offset - self.log_start_offset)
        return self.records[start: start + max_records]

    def timestamp_at(self, offset: int) -> float | None:
        if self.log_start_offset <= offset < self.log_end_offset:
            return self.records[offset - self.log_start_offset].timestamp
        return None


class Broker:
    """Topics of partition logs; producers append, consumer groups read and commit."""

    def __init__(self):
        self.topics: dict[str, list[PartitionLog]] = {}
        self.configs: dict[str, TopicConfig] = {}
        self.listeners: list[Callable[[Record], None]] = []  # called after every append (a batch: its first record)
        self.produced: dict[str, int] = {}
        self.duplicates_dropped = 0

    def create_topic(self, name: str, config: TopicConfig | None = None, **settings) -> list[PartitionLog]:
        cfg = config or TopicConfig(**settings)
        if cfg.num_partitions < 1:
            raise ValueError(f"num_partitions must be >= 1, got {cfg.num_partitions}")
        if name not in self.topics:
            self.topics[name] = [PartitionLog(name, i, cfg) for i in range(cfg.num_partitions)]
            self.configs[name] = cfg
            self.produced[name] = 0
        return self.topics[name]

    def partitions(self, topic: str) -> list[PartitionLog]:
        try:
            return self.topics[topic]
        except KeyError:
            raise KeyError(f"unknown topic {topic!r}") from None

    def produce(self, topic: str, key, value, now: float, partition: int | None = None,
                timestamp: float | None = None, size: int = 1024, producer_id=None,
                sequence: int | None = None) -> Record | None:
        """Append to ``partition`` or the key's partition; None when an idempotent retry was dropped."""
        logs = self.partitions(topic)
        if partition is None:
            if key is None:
                raise ValueError("an unkeyed record needs a partition (use StickyPartitioner)")
            partition = key_partition(key, len(logs))
        log = logs[partition]
        offset, dup = log.append(key, value, now, timestamp, size, producer_id, sequence)
        if dup:
            self.duplicates_dropped += 1
            return None
        self.produced[topic] += 1
        rec = log.records[offset - log.log_start_offset]
        for listener in self.listeners:
            listener(rec)
        return rec

    def produce_batch(self, topic: str, partition: int, values, now: float, timestamps, size: int = 1024,
                      key=None) -> list[Record]:
        """Append one producer batch to ``partition`` (unkeyed values, their CreateTimes); listeners see its first record."""
        log = self.partitions(topic)[partition]
        if not len(values):
            return []
        first = log.append_batch(values, now, timestamps, size, key)
        self.produced[topic] += len(values)
        recs = log.records[first - log.log_start_offset:]
        for listener in self.listeners:  # one wake-up per batch: a waiting consumer reads the whole batch
            listener(recs[0])
        return recs

    def dead_letter(self, record: Record, now: float, reason: str = "") -> Record:
        """Publish a failed record to ``<topic>.DLT``, same partition (created with as many partitions)."""
        dlt = record.topic + ".DLT"
        if dlt not in self.topics:
            self.create_topic(dlt, TopicConfig(num_partitions=len(self.partitions(record.topic))))
        return self.produce(dlt, record.key, {"value": record.value, "offset": record.offset, "reason": reason},
                            now, partition=record.partition, timestamp=record.timestamp, size=record.size)

    def end_offsets(self, topic: str) -> list[int]:
        return [p.log_end_offset for p in self.partitions(topic)]


def range_assign(members: list[str], num_partitions: int) -> dict[str, list[int]]:
    """Kafka's RangeAssignor for one topic: members sorted; each gets n // m, the first n % m one more."""
    members = sorted(members)
    out: dict[str, list[int]] = {m: [] for m in members}
    if not members:
        return out
    per, extra = divmod(num_partitions, len(members))
    start = 0
    for i, m in enumerate(members):
        take = per + (1 if i < extra else 0)
        out[m] = list(range(start, start + take))
        start += take
    return out


@dataclass
class ConsumerGroup:
    """One group reading one topic: assignment, positions, committed offsets, lag.

    ``auto_offset_reset`` ("earliest" or "latest", Kafka's default) applies when a
    partition has no committed offset or its position fell below the log start
    (retention deleted records first); records jumped over that way are counted in
    ``skipped`` per partition: they were never delivered to this group.
    """

    broker: Broker
    group_id: str
    topic: str
    auto_offset_reset: str = "latest"
    committed: dict[int, int] = field(default_factory=dict)
    position: dict[int, int] = field(default_factory=dict)
    owner: dict[int, str] = field(default_factory=dict)
    skipped: dict[int, int] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ValueError(f"auto_offset_reset must be earliest or latest, got {self.auto_offset_reset!r}")
        self.logs = self.broker.partitions(self.topic)
        self._plan: dict[str, list[int]] = {}

    # ---------------------------------------------------------------- membership
    def join(self, *members: str) -> list[int]:
        """Add members (one rebalance for all of them); the first one's partitions."""
        for member in members:
            if member not in self.members:
                self.members.append(member)
        self._rebalance()
        return self.assignment(members[0])

    def leave(self, member: str) -> None:
        self.members.remove(member)
        self._rebalance()

    def _rebalance(self) -> None:
        plan = range_assign(self.members, len(self.logs))
        self._plan = plan
        self.owner = {p: m for m, parts in plan.items() for p in parts}
        self.position = {}
        for p in self.owner:
            self.position[p] = self._start(p)

    def assignment(self, member: str) -> list[int]:
        return self._plan.get(member, [])

    def restart(self, member: str) -> None:
        """The member's process restarted (same assignment, static membership): resume from committed."""
        for p in self.assignment(member):
            self.position[p] = self._start(p)

    def _start(self, p: int) -> int:
        log = self.logs[p]
        if p in self.committed:
            return self.committed[p]
        return log.log_start_offset if self.auto_offset_reset == "earliest" else log.log_end_offset

    # ---------------------------------------------------------------- reading and committing
    def poll(self, member: str, max_records: int = KAFKA_MAX_POLL_RECORDS) -> list[Record]:
        """Records from the member's partitions from its positions (in partition order), positions advanced."""
        out: list[Record] = []
        for p in self.assignment(member):
            if len(out) >= max_records:
                break
            log = self.logs[p]
            pos = self.position[p]
            if pos < log.log_start_offset:  # out of range: the records were deleted before we read them
                new = log.log_start_offset if self.auto_offset_reset == "earliest" else log.log_end_offset
                self.skipped[p] = self.skipped.get(p, 0) + new - pos
                pos = new
            got = log.read(pos, max_records - len(out))
            self.position[p] = pos + len(got)
            out.extend(got)
        return out

    def has_data(self, member: str) -> bool:
        return any(self.position[p] < self.logs[p].log_end_offset for p in self.assignment(member))

    def commit(self, member: str, offsets: dict[int, int] | None = None) -> None:
        """commitSync: the given offsets (next offset to read) or the member's current positions."""
        offsets = offsets if offsets is not None else {p: self.position[p] for p in self.assignment(member)}
        for p, off in offsets.items():
            if self.owner.get(p) != member:
                raise CommitFailed(f"{member} does not own {self.topic}-{p} in group {self.group_id}")
            self.committed[p] = off

    # ---------------------------------------------------------------- lag
    def lag(self, p: int) -> int:
        """End offset − committed offset (the log start when nothing is committed), never negative."""
        log = self.logs[p]
        done = self.committed.get(p, log.log_start_offset)
        return max(0, log.log_end_offset - max(done, log.log_start_offset))

    def total_lag(self) -> int:
        return sum(self.lag(p) for p in range(len(self.logs)))

    def lag_seconds(self, now: float) -> float:
        """Age of the oldest record not yet committed, over partitions (0 when caught up)."""
        ages = []
        for p, log in enumerate(self.logs):
            off = max(self.committed.get(p, log.log_start_offset), log.log_start_offset)
            ts = log.timestamp_at(off)
            if ts is not None:
                ages.append(now - ts)
        return max(ages, default=0.0)

    def lost(self, p: int) -> int:
        """Offsets this group will never commit: skipped by an offset reset, or deleted below where it stands.

        The broker cannot tell whether a member processed a record before crashing without committing
        it, so this is an upper bound on the records no member processed (equal when nothing crashes).
        """
        log = self.logs[p]
        at = self.position.get(p, self.committed.get(p)) if p in self.owner else self.committed.get(p)
        pending = max(0, log.log_start_offset - at) if at is not None else 0
        return self.skipped.get(p, 0) + pending

    def consumed(self, p: int) -> int:
        """Records committed by this group (the committed offset less what was skipped, never negative)."""
        return max(0, self.committed.get(p, 0) - self.skipped.get(p, 0))


def linger_send_times(times: np.ndarray, partitions: np.ndarray, linger_s: float,
                      batch_records: int = KAFKA_BATCH_SIZE // 1024) -> np.ndarray:
    """When the producer sends each record: its partition's batch leaves ``linger.ms`` after the batch's
    first record, or as soon as it holds ``batch_records`` records (``batch.size`` / record size).

    ``times`` must be sorted. Batches of one partition leave in order, so partition order is kept.
    """
    send = np.empty(len(times))
    open_at: dict[int, float] = {}
    members: dict[int, list[int]] = {}
    for i, (t, p) in enumerate(zip(times, partitions)):
        p = int(p)
        if p in open_at and t > open_at[p] + linger_s:  # the open batch left before this record came
            send[members[p]] = open_at[p] + linger_s
            del open_at[p]
        if p not in open_at:
            open_at[p], members[p] = t, []
        members[p].append(i)
        if len(members[p]) >= batch_records:  # full: it leaves now
            send[members[p]] = t
            del open_at[p]
    for p, start in open_at.items():
        send[members[p]] = start + linger_s
    return send
