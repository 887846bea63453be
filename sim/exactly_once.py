"""A checkpointed stream job computing a windowed count feature, with crashes, restarts and replays.

The job reads a Kafka topic (``sim.broker``: partitions, offsets, a consumer group restarting from its
committed offsets), assigns each event to a tumbling window and adds it to a per-(key, window) counter in a
feature store (the sink). It follows REFERENCES.md §18:

- Checkpoints (Flink ``execution.checkpointing.interval``): the coordinator triggers checkpoint n; the
  barrier enters the stream after the record being processed, so checkpoint n holds the source offsets S_n
  of every record before it and the operator's watermark. The task pauses ``snapshot_s`` (the synchronous
  part); the checkpoint completes ``ack_s`` later (the asynchronous part and the acknowledgements), when the
  offsets are committed to Kafka. At most one checkpoint is in flight (``max-concurrent-checkpoints`` 1).
  Recovery restores the latest completed checkpoint and replays from S_k.
- Delivery guarantees: ``at_most_once`` commits offsets when records are polled and keeps no checkpoint
  (a crash loses the polled but unprocessed records); ``at_least_once`` checkpoints but writes to the sink
  at once (replayed records are added again, unless the ``Sink`` is idempotent: it ignores a second write
  of the same event into the same window); ``two_phase_commit`` is Flink's TwoPhaseCommitSinkFunction:
  writes go into an open transaction, the barrier pre-commits it (``precommit_s`` pause) and parks it under
  the checkpoint id, ``notifyCheckpointComplete`` commits every parked transaction up to that id, and a
  restore aborts the open one and those of checkpoints that never completed (readers see committed writes
  only, as with Kafka's ``read_committed``).
- Event time: ``forBoundedOutOfOrderness(B)``: the watermark is max timestamp seen − B − 1 ms, emitted every
  ``watermark_interval`` (Flink's ``pipeline.auto-watermark-interval``, 200 ms). Window [s, s + W) fires when
  the watermark reaches s + W − 1 ms; an element is dropped when its window's maxTimestamp + allowed lateness
  <= watermark (``allowedLateness``, default 0); within the lateness it is added (the window fires again).
  Processing time puts an event in the window of the task's clock when it processes it (replays included).

Where this differs: one chained task (source → window → sink) reads every partition, so barrier alignment is
trivial (a single input); its clock advances record by record in a plain loop (a sequential server: the same
timeline a SimPy process would give, without one event per record), and the consumer group's poll loop is
inlined so that it stops at what was appended by then (the broker has no clock); a crash strikes between records or
mid-record (that record is not written); the sink is an external counter store, not Kafka; a bounded input
ends with a final checkpoint that commits what is left (Flink's checkpoints after tasks finish).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .broker import Broker, ConsumerGroup, TopicConfig

MODES = ("at_most_once", "at_least_once", "two_phase_commit")
FLINK_WATERMARK_INTERVAL = 0.2  # pipeline.auto-watermark-interval, 200 ms
MS = 1e-3  # Flink's watermark and window maxTimestamp are 1 ms below the bound


def after(t: float, period: float) -> float:
    """The first multiple of ``period`` strictly after ``t`` (robust to rounding: never <= t)."""
    k = math.floor(t / period) + 1
    while k * period <= t:
        k += 1
    return k * period


@dataclass(frozen=True)
class JobConfig:
    mode: str = "two_phase_commit"
    window_size: float = 60.0  # tumbling window length (s)
    out_of_orderness: float = 5.0  # B (s)
    allowed_lateness: float = 0.0  # (s), Flink default 0
    checkpoint_interval: float = 60.0  # (s)
    snapshot_s: float = 0.05  # synchronous snapshot: the task pauses
    ack_s: float = 1.0  # asynchronous part until the checkpoint completes
    precommit_s: float = 0.02  # 2PC pre-commit flush at the barrier (task pauses)
    restart_s: float = 10.0
    max_poll_records: int = 500
    watermark_interval: float = FLINK_WATERMARK_INTERVAL

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclass
class Stream:
    """The input: per event its key, event time and append time; the topic built from them (shared by runs)."""

    key: np.ndarray
    event_time: np.ndarray
    append_time: np.ndarray
    partitions: int
    broker: Broker = field(init=False)
    part_append: list = field(init=False)  # per partition: append times in offset order

    def __post_init__(self):
        self.broker = Broker()
        self.broker.create_topic("events", TopicConfig(self.partitions, retention_ms=None))
        order = np.argsort(self.append_time, kind="stable")
        self.part_append = [[] for _ in range(self.partitions)]
        for i in order.tolist():
            k = int(self.key[i])
            p = k % self.partitions
            self.broker.produce("events", k, i, float(self.append_time[i]), partition=p,
                                timestamp=float(self.event_time[i]), size=64)
            self.part_append[p].append(float(self.append_time[i]))
        self.order = order
        self._truth: dict = {}

    def truth(self, size: float) -> dict:
        """Ground truth: (key, window) -> number of events with that key whose event time is in the window."""
        if size not in self._truth:
            w = self.window_of(size)
            lo = int(w.min()) if w.size else 0
            span = int(w.max()) - lo + 1 if w.size else 1
            codes, counts = np.unique(self.key.astype(np.int64) * span + (w - lo), return_counts=True)
            self._truth[size] = {(int(c // span), int(c % span) + lo): int(k)
                                 for c, k in zip(codes.tolist(), counts.tolist())}
        return self._truth[size]

    def window_of(self, size: float) -> np.ndarray:
        return np.floor(self.event_time / size).astype(np.int64)

    def late_mask(self, size: float) -> np.ndarray:
        """Events appended after an event of a later window: the stream had moved past their window."""
        w = self.window_of(size)[self.order]
        ahead = np.maximum.accumulate(w)
        late_sorted = np.zeros(w.size, dtype=bool)
        late_sorted[1:] = w[1:] < ahead[:-1]
        late = np.zeros(w.size, dtype=bool)
        late[self.order] = late_sorted
        return late


class Sink:
    """The feature store's counters per (key, window). ``idempotent``: a second write of the same
    (key, window, event id) is ignored (an upsert keyed by the event id); otherwise every write adds one.
    ``time``: the window an event goes to, by its event time (late ones dropped) or by processing time."""

    def __init__(self, n_events: int, idempotent: bool = False, time: str = "event_time"):
        if time not in ("event_time", "processing_time"):
            raise ValueError(f"time must be event_time or processing_time, got {time!r}")
        self.idempotent, self.time, self.n = idempotent, time, n_events
        self.ev: list = []  # every write that counted, in time order: its event, window and time
        self.win: list = []
        self.at: list = []
        self.store: dict = {}  # (key, window) -> count the feature's readers see
        self.seen: set = set()
        self.writes = 0

    def write(self, i: int, key, w: int, t: float) -> None:
        self.writes += 1
        if self.idempotent:
            if (w, i) in self.seen:
                return
            self.seen.add((w, i))
        kw = (key, w)
        self.store[kw] = self.store.get(kw, 0) + 1
        self.ev.append(i)
        self.win.append(w)
        self.at.append(t)

    @property
    def log(self):
        """(event, window, time) of every counted write, in time order."""
        return zip(self.ev, self.win, self.at)

    @property
    def contributions(self) -> list:
        """Per event: the windows it was counted in."""
        out = [[] for _ in range(self.n)]
        for i, w in zip(self.ev, self.win):
            out[i].append(w)
        return out

    def visible_at(self) -> np.ndarray:
        """Per event: when its first counted write became visible (nan if never)."""
        v = np.full(self.n, np.nan)
        if self.ev:
            i, t = np.asarray(self.ev, dtype=np.int64), np.asarray(self.at, dtype=float)
            _, first = np.unique(i, return_index=True)
            v[i[first]] = t[first]
        return v


@dataclass
class JobRun:
    """The job's timeline: what it processed, paused, replayed and dropped."""

    dropped_late: np.ndarray  # per event: dropped at least once as too late
    busy_s: float = 0.0  # time spent processing records
    checkpoint_s: float = 0.0  # time the task was paused by checkpoints
    checkpoints: int = 0  # completed
    barriers: int = 0  # checkpoints started (a crash can abort one in flight)
    completed_at: list = field(default_factory=list)  # when each completed checkpoint completed
    crashes: list = field(default_factory=list)  # crash times that hit the running job
    recovery_s: list = field(default_factory=list)  # per crash: time from the crash until the job caught up
    replayed: int = 0  # records processed again after a restore
    aborted: int = 0  # 2PC writes discarded with their transaction
    fire_time: dict = field(default_factory=dict)  # event-time window -> when the watermark first passed its end
    end: float = 0.0


def run_job(stream: Stream, service, crash_times, cfg: JobConfig, sinks: list[Sink]) -> JobRun:
    """Run the job over the whole input (crashes at ``crash_times``) until it has drained and finished.

    Every sink receives the same records (one timeline feeds plain and idempotent sinks, and event-time
    and processing-time windows: the window assignment does not change the job's timeline).
    """
    n = stream.key.size
    group = ConsumerGroup(stream.broker, f"job-{cfg.mode}", "events", auto_offset_reset="earliest")
    group.join("task")
    parts = list(range(stream.partitions))
    logs = [lg.records for lg in stream.broker.partitions("events")]
    sizes = [len(r) for r in logs]
    W, mode, B = cfg.window_size, cfg.mode, cfg.out_of_orderness
    event_time = stream.event_time.tolist()
    keys = stream.key.tolist()
    svc = np.asarray(service, dtype=float).tolist()
    order = stream.order.tolist()
    append_sorted = stream.append_time[stream.order].tolist() + [math.inf]
    part_of = [k % stream.partitions for k in keys]
    run = JobRun(np.zeros(n, dtype=bool))
    crashes = sorted(float(c) for c in crash_times)
    pos = group.position  # the group's positions: poll advances them, restart resets them to committed
    et_sinks = [s for s in sinks if s.time == "event_time"]
    pt_sinks = [s for s in sinks if s.time == "processing_time"]
    checkpointing = mode != "at_most_once"
    two_pc = mode == "two_phase_commit"

    def write_all(i, w_e, late, w_p, t):
        k = keys[i]
        if not late:
            for sink in et_sinks:
                sink.write(i, k, w_e, t)
        for sink in pt_sinks:
            sink.write(i, k, w_p, t)

    now = 0.0
    avail = [0] * len(parts)  # records appended by ``now`` per partition (the readable high watermark)
    g = 0  # next record in append order not yet appended
    done = {p: 0 for p in parts}  # offsets after the last processed record (what a barrier snapshots)
    part_ts = [-math.inf] * len(parts)  # max event time seen per partition (Kafka source: per-split watermarks)
    wm, next_tick = -math.inf, 0.0
    next_trigger = cfg.checkpoint_interval if checkpointing else math.inf
    inflight = None  # (id, completes_at, offsets, (part_ts, wm))
    completed = ({p: 0 for p in parts}, (list(part_ts), wm))
    open_txn, parked = [], {}  # 2PC: open writes; checkpoint id -> pre-committed writes
    cp_id = 0
    processed_once = np.zeros(n, dtype=bool)
    behind = []  # crashes since the job last caught up
    fired = math.floor(float(stream.event_time.min()) / W) - 1 if n else -1  # last window that fired

    def complete(cp):
        nonlocal completed
        cid, at, offsets, state = cp
        completed = (offsets, state)
        group.commit("task", dict(offsets))  # offsets go to Kafka when the checkpoint completes
        run.checkpoints += 1
        run.completed_at.append(at)
        for j in sorted(k for k in parked if k <= cid):  # notifyCheckpointComplete: commit parked txns
            for row in parked.pop(j):
                write_all(*row, at)

    def barrier(t):
        nonlocal cp_id, open_txn, inflight
        cp_id += 1
        run.barriers += 1
        pause = cfg.snapshot_s + (cfg.precommit_s if two_pc else 0.0)
        if two_pc:  # preCommit: flush and park the open transaction under this checkpoint; open a new one
            parked[cp_id] = open_txn
            open_txn = []
        t_end = t + pause
        inflight = (cp_id, t_end + cfg.ack_s, dict(done), (list(part_ts), wm))
        run.checkpoint_s += pause
        return t_end

    def crash(c):
        nonlocal now, open_txn, inflight, wm, next_tick, next_trigger, part_ts
        run.crashes.append(c)
        behind.append(c)
        run.aborted += len(open_txn) + sum(len(v) for v in parked.values())
        open_txn = []  # recoverAndAbort: the open transaction and those of checkpoints that never completed
        parked.clear()
        inflight = None
        if checkpointing:  # restore the latest completed checkpoint: offsets S_k and the watermark state
            group.committed.update(completed[0])
            part_ts, wm = list(completed[1][0]), completed[1][1]
        else:  # no checkpoint: the operator restarts empty, from the offsets committed at poll time
            part_ts, wm = [-math.inf] * len(parts), -math.inf
        group.restart("task")
        done.update({p: pos[p] for p in parts})
        now = c + cfg.restart_s
        next_tick = now
        if checkpointing:
            next_trigger = after(now, cfg.checkpoint_interval)

    batch, b = [], 0
    while True:
        if crashes and crashes[0] <= now:
            crash(crashes.pop(0))
            batch, b = [], 0
            continue
        if inflight is not None and inflight[1] <= now:
            complete(inflight)
            inflight = None
        if now >= next_tick:  # periodic watermark emission (a timer): the slowest partition holds it back
            new = min(part_ts) - B - MS
            if new > wm:
                wm = new
                top = math.floor((wm + MS) / W) - 1  # windows whose maxTimestamp the watermark reached
                while fired < top:
                    fired += 1
                    run.fire_time.setdefault(fired, now)
            next_tick = after(now, cfg.watermark_interval)
        if next_trigger <= now and inflight is None:
            now = barrier(now)
            next_trigger = after(now, cfg.checkpoint_interval)
            continue
        if b >= len(batch):
            while append_sorted[g] <= now:  # the producer's appends up to now become readable
                avail[part_of[order[g]]] += 1
                g += 1
            batch, b = [], 0
            if g > sum(pos.values()):  # something readable: ConsumerGroup.poll's loop, inlined, stopping at
                # what has been appended by now (the broker has no clock); positions stay the group's
                room = cfg.max_poll_records
                for p in parts:
                    take = avail[p] - pos[p]
                    if take > 0:
                        take = take if take < room else room
                        batch.extend(logs[p][pos[p]:pos[p] + take])
                        pos[p] += take
                        room -= take
                        if room <= 0:
                            break
            if not batch:
                run.recovery_s.extend(now - c for c in behind)  # caught up: nothing left to read
                behind.clear()
                if g >= n and all(pos[p] >= sizes[p] for p in parts):
                    break
                pending_wm = next_tick if min(part_ts) - B - MS > wm else math.inf
                nxt = min(crashes[0] if crashes else math.inf, inflight[1] if inflight else math.inf,
                          next_trigger if inflight is None else math.inf, append_sorted[g], pending_wm)
                now = max(now, nxt)
                continue
            if mode == "at_most_once":
                group.committed.update(pos)  # commitSync of the polled positions, before processing
        rec = batch[b]
        i = rec.value
        finish = now + svc[i]
        if crashes and crashes[0] < finish:  # dies mid-record: nothing is written for it
            run.busy_s += crashes[0] - now
            now = crashes[0]
            continue
        w_e = math.floor(event_time[i] / W)
        late = wm >= (w_e + 1) * W - MS + cfg.allowed_lateness
        if event_time[i] > part_ts[rec.partition]:
            part_ts[rec.partition] = event_time[i]
        w_p = math.floor(now / W)  # processing time: the task's clock when it takes the record
        run.busy_s += svc[i]
        now = finish
        if processed_once[i]:
            run.replayed += 1
        processed_once[i] = True
        b += 1
        done[rec.partition] = rec.offset + 1
        if late:
            run.dropped_late[i] = True
        if two_pc:
            open_txn.append((i, w_e, late, w_p))
        else:
            write_all(i, w_e, late, w_p, now)
    # end of input: the watermark goes to +inf (all windows fire) and a final checkpoint commits the rest
    if checkpointing:
        if inflight is not None:
            now = max(now, inflight[1])
            complete(inflight)
        now = barrier(now)
        now = inflight[1]
        complete(inflight)
    run.end = now
    return run


@dataclass(frozen=True)
class Accounting:
    """Every event's fate against the ground truth, and every window's count against its true count."""

    times_counted: np.ndarray  # visible writes per event
    right: np.ndarray  # writes into its own event-time window
    wrong: np.ndarray  # writes into another window
    truth: dict  # (key, window) -> true count
    store: dict  # (key, window) -> count in the feature store

    @property
    def duplicated(self) -> np.ndarray:
        return self.times_counted > 1

    @property
    def lost(self) -> np.ndarray:
        return self.times_counted == 0

    @property
    def exact(self) -> np.ndarray:
        return (self.right == 1) & (self.wrong == 0)

    def windows(self) -> list:
        return sorted(set(self.truth) | set(self.store))

    def window_errors(self) -> dict:
        """(key, window) -> stored − true count (0 for an exact window)."""
        return {kw: self.store.get(kw, 0) - self.truth.get(kw, 0) for kw in self.windows()}


def account(stream: Stream, sink: Sink, window_size: float) -> Accounting:
    true_w = stream.window_of(window_size)
    n = true_w.size
    counted, right = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    if sink.ev:
        i, w = np.asarray(sink.ev, dtype=np.int64), np.asarray(sink.win, dtype=np.int64)
        counted = np.bincount(i, minlength=n).astype(np.int64)
        right = np.bincount(i, weights=(w == true_w[i]), minlength=n).astype(np.int64)
    return Accounting(counted, right, counted - right, stream.truth(window_size), dict(sink.store))
