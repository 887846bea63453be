"""Driving ``sim.broker`` from SimPy: a consumer's poll-process-commit loop, outages and crashes.

A consumer follows the Kafka client loop (REFERENCES.md §10, §18): ``poll`` up to
``max_poll_records`` from its assigned partitions, process them in order, then
commit. With ``commit_interval_s`` = 0 it commits synchronously after each batch
(``enable.auto.commit=false`` + ``commitSync``); with a positive interval it
auto-commits the positions of records already returned, at the first poll after
the interval (``enable.auto.commit=true``, ``auto.commit.interval.ms``, Kafka's
default 5000 ms). An idle consumer waits for a record to arrive (a long poll that
returns as soon as data comes, ``fetch.min.bytes`` = 1) and then pays
``fetch_delay_s`` for the response to reach it.

Failures: during a ``down`` window the process is dead; a record it had started
is not finished, and at the window's end it restarts from the committed offset
(static membership: same partitions). A ``crash`` at time c hits the first batch
that ends at or after c: the batch was processed but the commit never happened,
so after ``restart_s`` the records are delivered again (at-least-once). Whether
that repeats a side effect is the handler's business (an idempotent consumer).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable, Sequence

import simpy

from .broker import KAFKA_MAX_POLL_RECORDS, Broker, ConsumerGroup, Record


class DataSignal:
    """One SimPy event per waiting consumer, fired by the next append to any partition it reads."""

    def __init__(self, env: simpy.Environment, broker: Broker):
        self.env = env
        self.waiting: dict[tuple[str, int], list[simpy.Event]] = {}
        broker.listeners.append(self._on_append)

    def wait(self, topic: str, partitions: Sequence[int]) -> simpy.Event:
        ev = self.env.event()
        for p in partitions:
            self.waiting.setdefault((topic, p), []).append(ev)
        return ev

    def wake_all(self) -> None:
        """Wake every waiting consumer (after a rebalance moved partitions, so each polls its new ones)."""
        waiting, self.waiting = self.waiting, {}
        for evs in waiting.values():
            for ev in evs:
                if not ev.triggered:
                    ev.succeed()

    def _on_append(self, rec: Record) -> None:
        evs = self.waiting.pop((rec.topic, rec.partition), None)
        for ev in evs or ():
            if not ev.triggered:
                ev.succeed()


@dataclass
class ConsumerConfig:
    max_poll_records: int = KAFKA_MAX_POLL_RECORDS
    commit_interval_s: float = 0.0  # 0: commitSync after every batch; > 0: auto-commit interval
    fetch_delay_s: float = 0.0  # broker -> consumer, paid after waiting for data
    restart_s: float = 1.0  # time to come back after a crash


@dataclass
class ConsumerStats:
    batches: int = 0
    commits: int = 0
    crashes: int = 0
    restarts: int = 0


# handler(record, start, deadline) -> the time processing ended, or None if it could not finish by deadline
Handler = Callable[[Record, float, float], "float | None"]


def run_consumer(env: simpy.Environment, group: ConsumerGroup, member: str, signal: DataSignal,
                 handler: Handler, cfg: ConsumerConfig, down: Sequence[tuple[float, float]] = (),
                 crashes: Sequence[float] = (), stats: ConsumerStats | None = None):
    """SimPy process: the consumer loop of ``member`` (already joined to ``group``)."""
    stats = stats if stats is not None else ConsumerStats()
    down = sorted(down)
    starts = [a for a, _ in down]
    pending = sorted(crashes)
    auto = cfg.commit_interval_s > 0
    # auto-commit: commit the positions after the last finished batch, once the interval has passed;
    # ``life`` counts restarts so a commit timer set before a crash does nothing afterwards
    state = {"done": None, "last": env.now, "timer": False, "life": 0}

    def auto_commit(_ev=None, life=None):
        if life is not None:
            state["timer"] = False
            if life != state["life"]:
                return
        if state["done"] is not None:
            group.commit(member, state["done"])
            stats.commits += 1
            state["done"] = None
        state["last"] = env.now

    def arm_timer():
        if not state["timer"] and state["done"] is not None:
            state["timer"] = True
            life = state["life"]
            ev = env.timeout(max(0.0, state["last"] + cfg.commit_interval_s - env.now))
            ev.callbacks.append(lambda e: auto_commit(e, life))

    def died():
        state["life"] += 1
        state["done"], state["timer"], state["last"] = None, False, env.now

    woke = False
    while True:
        k = bisect.bisect_right(starts, env.now) - 1
        if k >= 0 and env.now < down[k][1]:  # dead: wait out the window, then restart from committed
            died()
            yield env.timeout(down[k][1] - env.now)
            group.restart(member)
            stats.restarts += 1
            woke = False
            continue
        if auto and state["done"] is not None and env.now >= state["last"] + cfg.commit_interval_s:
            auto_commit()
        records = group.poll(member, cfg.max_poll_records)
        if not records:
            if auto:
                arm_timer()  # an idle consumer keeps polling, so its auto-commit still happens on time
            yield signal.wait(group.topic, group.assignment(member))  # data during a down window wakes it too
            woke = True
            continue
        deadline = starts[k + 1] if k + 1 < len(starts) else float("inf")
        t = env.now + (cfg.fetch_delay_s if woke else 0.0)
        woke = False
        stats.batches += 1
        for rec in records:
            end = handler(rec, t, deadline)
            if end is None:  # it could not finish before the outage: the process dies at the deadline
                t = deadline
                break
            t = end
        yield env.timeout(max(0.0, min(t, deadline) - env.now))
        if env.now >= deadline:
            continue  # the outage struck mid-batch: the loop top restarts from the committed offset
        if pending and pending[0] <= env.now:  # processed, then died before committing
            pending.pop(0)
            stats.crashes += 1
            died()
            yield env.timeout(cfg.restart_s)
            group.restart(member)
            stats.restarts += 1
            continue
        if auto:
            state["done"] = {p: group.position[p] for p in group.assignment(member)}
        else:
            group.commit(member)
            stats.commits += 1


@dataclass
class LagProbe:
    """Samples each group's lag (records and seconds) every ``every_s``; rows for a DataFrame."""

    groups: dict[str, ConsumerGroup]
    every_s: float
    rows: list = field(default_factory=list)

    def run(self, env: simpy.Environment, until: float):
        while env.now <= until:
            for name, g in self.groups.items():
                parts = range(len(g.logs))
                self.rows.append({"time_s": env.now, "group": name, "lag_records": g.total_lag(),
                                  "lag_ms": 1e3 * g.lag_seconds(env.now),
                                  "produced": sum(lg.log_end_offset for lg in g.logs),
                                  "consumed": sum(g.consumed(p) for p in parts),
                                  "lost": sum(g.lost(p) for p in parts)})
            yield env.timeout(self.every_s)


# process_batch(records) -> a SimPy generator that handles a polled batch as one unit (one model call,
# one bulk write downstream); the loop commits synchronously after it returns.
BatchHandler = Callable[[list], "simpy.events.ProcessGenerator"]


def run_batch_consumer(env: simpy.Environment, group: ConsumerGroup, member: str, signal: DataSignal,
                       process_batch: BatchHandler, max_poll_records: int = KAFKA_MAX_POLL_RECORDS,
                       crash_at: float = float("inf"), stats: ConsumerStats | None = None):
    """SimPy process: poll up to ``max_poll_records``, process the batch as one unit, ``commitSync``.

    At the first batch that ends at or after ``crash_at`` the member dies for good, after processing
    and before committing (so that batch is delivered again to whoever takes the partitions over); it
    stays in the group until :func:`session_timeout` removes it, as a Kafka member that stops
    heartbeating does.
    """
    stats = stats if stats is not None else ConsumerStats()
    while True:
        records = group.poll(member, max_poll_records)
        if not records:
            yield signal.wait(group.topic, group.assignment(member))
            continue
        stats.batches += 1
        yield from process_batch(records)
        if env.now >= crash_at:
            stats.crashes += 1
            return
        if member in group.members and all(group.owner.get(r.partition) == member for r in records):
            done = {r.partition: r.offset + 1 for r in records}
            group.commit(member, done)
            for part, off in done.items():  # a rebalance mid-batch rewound the position: the batch is done
                group.position[part] = max(group.position.get(part, off), off)
            stats.commits += 1


def session_timeout(env: simpy.Environment, group: ConsumerGroup, member: str, signal: DataSignal,
                    crash_at: float, session_timeout_s: float):
    """SimPy process: the coordinator notices a silent member ``session.timeout.ms`` after its last heartbeat
    (taken as the crash time) and rebalances; the survivors resume its partitions from the committed offsets."""
    yield env.timeout(max(0.0, crash_at + session_timeout_s - env.now))
    if member in group.members and len(group.members) > 1:
        group.leave(member)
        signal.wake_all()
