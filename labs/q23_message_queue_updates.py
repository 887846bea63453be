"""Q23: prediction updates pushed through a Kafka-style topic versus handled synchronously per event.

User events arrive as a Poisson stream with one burst. Baseline: a synchronous service with
``sync_workers`` threads handles each event on its own call (per-call overhead and the model on a
core, then the downstream write, waiting), refusing events once its accept queue is full. Pattern:
events go to a partitioned topic (``sim.broker``); a consumer group polls batches, runs the real
model once per batch (Q11's measured profile) and writes downstream once per batch
(``sim.stream.run_batch_consumer``). Both arms share the event times, keys, service draws and
``cores``. Throughput is each arm's drain rate of a backlog; lag and latency come from the run.
A poison event is retried forever, dead-lettered after ``max_attempts`` or skipped; a crashed
consumer's partitions wait for the group's ``session_timeout_s``.
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import simpy

from sim.analytic import departures_fifo_limited
from sim.broker import Broker, ConsumerGroup, TopicConfig, key_partition, linger_send_times
from sim.dist import Zipf
from sim.rng import Streams
from sim.stream import ConsumerStats, DataSignal, run_batch_consumer, session_timeout

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .kit import request_budget
from .measure import Measurements
from .q11_inference_metrics import profile

TOPIC, MODEL, WINDOWS = "user.events", "mlp", 20


class MessageQueueUpdatesLab(Lab):
    id = "q23"
    headline = ("comparison", "throughput_gain_x")
    refine_param = "requests"
    arms = (Arm("baseline", "Synchronous calls", "each event is one call: overhead, model, then the downstream write"),
            Arm("pattern", "Topic + consumer group", "events are logged; consumers run the model and write per batch"))
    assumptions = (
        "Model call times are the committed measurements of the 256-wide MLP at each batch size (data/profiles).",
        "Per-call overhead and the model hold a core; the downstream write only waits (no core).",
        "A consumer writes a batch's updates downstream in one call of downstream_wait_ms.",
        "The synchronous service refuses an event when all workers are busy and its accept queue is full.",
        "Throughput is the drain rate of a backlog of `requests` events (the synchronous arm: at most 4,000).",
    )
    params = (
        Param("rate_eps", 5000.0, 10.0, 200000.0, unit="events/s", key=True, help="mean rate of user events"),
        request_budget(10000, 1000, 200000),
        Param("burst_x", 3.0, 1.0, 50.0, unit="x", key=True, help="event rate during the burst, times rate_eps"),
        Param("burst_s", 0.25, 0.0, 60.0, unit="s", key=True, help="length of the burst (0: none)"),
        Param("downstream_wait_ms", 20.0, 0.0, 1000.0, unit="ms", key=True,
              help="time a call waits on the downstream write (feature store, cache refresh)"),
        Param("call_overhead_ms", 1.0, 0.0, 100.0, unit="ms",
              help="CPU per synchronous call, or per consumer poll (parsing, connection)"),
        Param("cores", 2, 1, 64, unit="cores", help="CPU cores both arms share for overhead and the model"),
        Param("sync_workers", 16, 1, 1024, unit="threads", help="threads of the synchronous service"),
        Param("sync_queue", 100, 0, 100000, unit="events", help="accept queue of the synchronous service"),
        Param("linger_ms", 5.0, 0.0, 1000.0, unit="ms", help="producer batching delay (Kafka default 5)"),
        Param("partitions", 12, 1, 256, unit="partitions", help="partitions of the events topic"),
        Param("consumers", 4, 1, 256, unit="consumers", help="members of the consumer group"),
        Param("max_poll_records", 500, 1, 5000, unit="records", help="largest batch one poll returns (Kafka 500)"),
        Param("users", 5000, 1, 1000000, unit="keys", help="distinct user ids (the record key)"),
        Param("key_skew", 0.0, 0.0, 3.0, help="Zipf exponent of user activity (0: every user alike)"),
        Param("poison_policy", "dead_letter", choices=("dead_letter", "skip", "retry_forever"),
              help="a poison event: 10 attempts then <topic>.DLT (Spring), skip it, or retry it forever"),
        Param("max_attempts", 10, 1, 1000, unit="attempts", help="attempts before dead-lettering (Spring: 10)"),
        Param("crash", False, help="one consumer dies mid-run and its partitions wait for the rebalance"),
        Param("session_timeout_s", 45.0, 1.0, 1800.0, unit="s", help="session.timeout.ms (Kafka default 45 s)"),
    )
    parts = {"capacity": ("requests", "users", "key_skew", "partitions", "downstream_wait_ms", "call_overhead_ms", "cores",
                          "sync_workers", "consumers", "max_poll_records", "linger_ms")}
    rules = (Rule("burst_s", ("burst_s", "requests", "rate_eps"),
                  lambda p: f"at most half the window ({p.requests / p.rate_eps / 2:g} s)"
                  if p.burst_s > p.requests / p.rate_eps / 2 else None),
             Rule("consumers", ("consumers", "crash"),
                  lambda p: "at least 2 with crash = True (a survivor takes the partitions over)"
                  if p.crash and p.consumers < 2 else None),)
    exercises = (
        Exercise("Remove the downstream wait (downstream_wait_ms = 0). What is left of the async gain?",
                 {"downstream_wait_ms": 0.0}, ("comparison", "throughput_gain_x"),
                 why="Without a wait, both arms are bound by the cores: the sync arm pays overhead + model per "
                 "event, the consumers pay it once per batch, so the gain is only the batching of CPU work."),
        Exercise("Make the burst 20 times the normal rate for half a second. How far do the consumers fall behind?",
                 {"burst_x": 20.0, "burst_s": 0.5}, ("pattern", "consumer_lag_events"),
                 why="While the burst offers more than the group drains, the backlog grows by the difference each "
                 "second: peak lag is about (burst rate − capacity) × burst length."),
        Exercise("One consumer crashes (crash = True). How late is the oldest update on its partitions?",
                 {"crash": True},
                 ("pattern", "max_latency_ms"),
                 why="Nobody reads a dead member's partitions until the coordinator misses its heartbeats for "
                 "session_timeout_s and rebalances; events there wait at least that long."),
    )

    def simulate(self, seed: int, p) -> Outcome:
        streams = Streams(seed)
        prof = profile(MODEL)
        t = _arrivals(streams, p)
        n = t.size
        keys = Zipf(p.users, p.key_skew).sample(streams["keys"], n)
        part = _partition_of(p.users, p.partitions)[keys]
        u_batch, u_one = streams["service"].random(n), streams["service"].random(n)

        sync = _sync(t, p, prof, u_one)
        hot = np.bincount(keys).argmax()  # the poison event belongs to the busiest user: order matters most there
        poison = int(np.flatnonzero((keys == hot) & (np.arange(n) >= 0.3 * n))[:1].tolist()[0]
                     if np.any((keys == hot) & (np.arange(n) >= 0.3 * n)) else int(0.3 * n))
        events = _async(t, part, keys, p, prof, u_batch, poison=poison, crash=p.crash)
        cap = self.part("capacity", seed, p)
        window = t[-1]

        m = Measurements(("baseline", "pattern", "comparison"))
        for arm, done in (("baseline", sync["done"]), ("pattern", events["done"])):
            ok = np.isfinite(done)
            lat = done[ok] - t[ok]
            m.percentiles(arm, lat, qs=(50, 95, 99), key="p{q}_latency_ms")
            m.value(arm, "processing_latency_ms", m.metrics[arm].get("p95_latency_ms"),
                    m.intervals[arm].get("p95_latency_ms"), missing="no event was processed in the window")
            m.value(arm, "max_latency_ms", 1e3 * lat.max() if lat.size else np.nan,
                    missing="no event was processed")
            m.share(arm, "processed_pct", ok.sum(), n)
            m.value(arm, "accepted_eps", (n - sync["rejected"] if arm == "baseline" else n) / window)
            (m.batch_mean if arm == "baseline" else m.mean)(arm, "throughput_events_per_s", cap[arm])
        m.ratio("comparison", "throughput_gain_x", ("pattern", "throughput_events_per_s"),
                ("baseline", "throughput_events_per_s"))
        m.share("baseline", "rejected_pct", sync["rejected"], n)
        lag = events["lag"]
        m.value("pattern", "consumer_lag_events", lag["lag"].max())
        burst_rate = p.rate_eps * p.burst_x
        capacity = m.metrics["pattern"]["throughput_events_per_s"]
        m.value("comparison", "lag_peak_predicted_events", max(0.0, burst_rate - capacity) * p.burst_s)
        m.value("pattern", "dead_lettered", events["dlt"])
        m.value("pattern", "poison_stall_ms", 1e3 * events["stall"])
        m.value("pattern", "out_of_order_updates", events["out_of_order"])
        m.value("pattern", "duplicates", events["duplicates"])
        m.value("pattern", "busy_consumers", events["busy"])
        series = {"lag": lag, "latency": _windowed(t, sync["done"], events["done"], window)}
        notes = [f"{n:,} events over {window:.2f} s; burst of {p.burst_s:g} s at {burst_rate:,.0f} events/s from "
                 f"{0.4 * p.requests / p.rate_eps:.2f} s; model times from {prof.provenance.get('cpu', '?')}.",
                 f"Poison event number {poison:,} (the busiest user's; {p.poison_policy}); consumers "
                 f"{'crash' if p.crash else 'all stay up'}."]
        return Outcome(m, series, notes=notes)

    def part_capacity(self, seed: int, p) -> dict:
        """Draining a backlog (no arrivals, poison or crash): the synchronous arm's completions per window, and
        the consumer group's rate while every consumer is busy (busy consumers × batch size ÷ batch time)."""
        streams = Streams(seed)
        prof = profile(MODEL)
        n = p.requests
        keys = Zipf(p.users, p.key_skew).sample(streams["keys"], n)
        part = _partition_of(p.users, p.partitions)[keys]
        u = streams["service"].random(n)
        sync = _sync(np.zeros(min(n, 4000)), p, prof, u[:4000], queue=n)["done"]
        edges = np.linspace(0.0, np.nanmax(sync), WINDOWS + 1)
        events = _async(np.zeros(min(n, 10000)), part[:10000], keys[:10000], p, prof, u[:10000])
        size, busy = events["batches"].T  # every consumer busy: its rate is batch size / batch time
        return {"baseline": np.histogram(sync, edges)[0] / np.diff(edges),
                "pattern": events["busy"] * size / busy}
        return out

    def plots(self, result):
        from .plotting import line_chart

        return [line_chart(result.series["lag"], "time_s", "lag", "Consumer lag (events behind the log end)",
                           "time (s)", "events"),
                line_chart(result.series["latency"], "time_s", "p95_ms", "P95 time from event to update, per window",
                           "time (s)", "P95 (ms, log)", log_y=True)]


def _arrivals(streams: Streams, p) -> np.ndarray:
    """Poisson events at rate_eps over requests / rate_eps, plus a burst: (burst_x − 1) × rate_eps more
    for burst_s from 40% of the window (the burst's events come on top of the request budget)."""
    window = p.requests / p.rate_eps
    base = np.cumsum(streams["arrivals"].exponential(1.0 / p.rate_eps, p.requests))
    extra_rate = (p.burst_x - 1) * p.rate_eps
    n_extra = streams["burst"].poisson(extra_rate * p.burst_s) if extra_rate * p.burst_s > 0 else 0
    burst = 0.4 * window + np.sort(streams["burst"].uniform(0.0, p.burst_s, n_extra))
    return np.sort(np.concatenate([base, burst]), kind="stable")


@functools.lru_cache(maxsize=16)
def _partition_of(users: int, partitions: int) -> np.ndarray:
    """Kafka's murmur2 partition of every user id (computed once per key space)."""
    return np.array([key_partition(str(u), partitions) for u in range(users)])


def _sync(t: np.ndarray, p, prof, u: np.ndarray, queue: int | None = None) -> dict:
    """The synchronous service: a FIFO queue of ``queue`` places in front of its servers, each call taking
    overhead + model (CPU) + the downstream wait. Threads share the cores, so it has
    min(sync_workers, cores × call time ÷ CPU time) servers (exact when threads or cores alone bind)."""
    cpu = p.call_overhead_ms / 1e3 + np.quantile(prof.service_time(1).samples, u)
    call = cpu + p.downstream_wait_ms / 1e3
    servers = int(max(1, min(p.sync_workers, np.floor(p.cores * call.mean() / cpu.mean()))))
    done, rejected = departures_fifo_limited(t, call, servers, p.sync_queue if queue is None else queue)
    return {"done": done, "rejected": rejected, "servers": servers}


def _async(t, part, keys, p, prof, u, poison: int | None = None, crash: bool = False) -> dict:
    """The topic and its consumer group; returns when each event's update was written, lag and poison effects."""
    env = simpy.Environment()
    broker = Broker()
    broker.create_topic(TOPIC, TopicConfig(num_partitions=p.partitions))
    signal = DataSignal(env, broker)
    group = ConsumerGroup(broker, "updater", TOPIC, auto_offset_reset="earliest")
    members = [f"c{k:03d}" for k in range(p.consumers)]
    group.join(*members)
    cores = simpy.Resource(env, p.cores)
    samples = {}
    done = np.full(t.size, np.nan)
    seen = np.zeros(t.size, dtype=np.int32)
    info = {"dlt": 0, "stall": 0.0, "poison_at": None, "applied_after": 0, "busy": set(), "batches": []}
    lag_rows = []
    finished, left = env.event(), [t.size - (poison is not None)]
    one = float(np.median(prof.service_time(1).samples))
    crash_at = 0.5 * t[-1] if crash else float("inf")

    def model_s(b: int, q: float) -> float:  # the q-quantile of the measured call time at batch size b
        if b not in samples:
            samples[b] = np.sort(prof.service_time(b).samples)
        return float(samples[b][min(int(q * samples[b].size), samples[b].size - 1)])

    def handle(member):
        def process_batch(records):
            info["busy"].add(member)
            began = env.now
            idx = [r.value for r in records]
            with cores.request() as c:
                yield c
                yield env.timeout(p.call_overhead_ms / 1e3 + model_s(len(idx), u[idx[0]]))
            if poison is not None and poison in idx:  # the poison event fails every attempt
                start = env.now
                attempts = float("inf") if p.poison_policy == "retry_forever" else \
                    (p.max_attempts - 1 if p.poison_policy == "dead_letter" else 0)  # a skip tries once
                if attempts == float("inf"):
                    info["stall"] = t[-1] * 10  # never ends: the partition (and this consumer) stop here
                    yield env.timeout(info["stall"])
                    return
                yield env.timeout(attempts * one)
                info["stall"] = env.now - start
                if p.poison_policy == "dead_letter":
                    broker.dead_letter(records[idx.index(poison)], env.now, "model rejected the event")
                    info["dlt"] += 1
                info["poison_at"] = env.now
            yield env.timeout(p.downstream_wait_ms / 1e3)
            for i in idx:
                seen[i] += 1
                if np.isnan(done[i]) and i != poison:  # a dead-lettered or skipped event updates nothing
                    done[i] = env.now
                    left[0] -= 1
            info["batches"].append((len(idx), env.now - began))
            if left[0] == 0 and not finished.triggered:
                finished.succeed()
            if info["poison_at"] is not None and poison is not None:
                info["applied_after"] += sum(1 for i in idx if keys[i] == keys[poison] and i > poison)
        return process_batch

    for k, member in enumerate(members):
        at = crash_at if k == 0 else float("inf")
        env.process(run_batch_consumer(env, group, member, signal, handle(member), p.max_poll_records, at,
                                       ConsumerStats()))
    if crash:
        env.process(session_timeout(env, group, members[0], signal, crash_at, p.session_timeout_s))

    def producer():  # records leave in per-partition batches, linger.ms after a batch's first record
        send = linger_send_times(t, part, p.linger_ms / 1e3)
        order = np.lexsort((part, send))
        cuts = np.flatnonzero(np.diff(send[order]) + np.diff(part[order]) != 0) + 1
        for batch in np.split(order, cuts):
            if send[batch[0]] > env.now:
                yield env.timeout(send[batch[0]] - env.now)
            broker.produce_batch(TOPIC, int(part[batch[0]]), batch.tolist(), env.now, t[batch].tolist())

    def probe(every):
        while not finished.triggered and env.now <= stop:
            lag_rows.append({"time_s": env.now, "lag": group.total_lag(), "arm": "pattern"})
            yield env.timeout(every)

    env.process(producer())
    stop = 1.25 * t[-1] + (p.session_timeout_s if crash else 0.0)
    if t[-1] > 0:  # a run with arrivals (the backlog drain needs no lag series)
        env.process(probe(stop / 400))
    horizon = t[-1] + (p.session_timeout_s + 1.0 if crash else 0.0) + 60.0
    env.run(until=env.any_of([finished, env.timeout(horizon)]))
    ooo = info["applied_after"] if poison is not None and p.poison_policy == "dead_letter" else 0
    return {"done": done, "lag": pd.DataFrame(lag_rows), "dlt": info["dlt"], "stall": info["stall"],
            "out_of_order": ooo, "duplicates": int(np.maximum(seen - 1, 0).sum()), "busy": len(info["busy"]),
            "batches": np.array(info["batches"], dtype=float).reshape(-1, 2)}


def _windowed(t, sync_done, async_done, window) -> pd.DataFrame:
    edges = np.linspace(0.0, window, WINDOWS + 1)
    rows = []
    for arm, done in (("baseline", sync_done), ("pattern", async_done)):
        k = np.digitize(t, edges) - 1
        for w in range(WINDOWS):
            lat = (done[k == w] - t[k == w])
            lat = lat[np.isfinite(lat)]
            if lat.size:
                rows.append({"time_s": edges[w], "p95_ms": 1e3 * float(np.percentile(lat, 95)), "arm": arm})
    return pd.DataFrame(rows)


LAB = MessageQueueUpdatesLab()
