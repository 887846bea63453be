"""Q6: "model trained" events through a Kafka-style broker (``sim.broker``) versus a synchronous chain.

Training jobs finish at Poisson times and emit one event each, keyed by model id.
Baseline: the trainer calls evaluation, registry, deployment and analytics in turn
and waits for each (``sim.chain``). Pattern: the trainer publishes to a partitioned
topic and each downstream is a consumer group, one consumer per partition, that
polls, processes and commits (``sim.stream``). Both arms share event times, keys and
service draws. Mid-run one downstream is down (its events wait in the log) and
crashes a few times between processing and committing (at-least-once redelivery).
Throughput is the drain rate of a backlog (a separate capacity run, replicated);
latency and lag come from the steady run; coupling from the dependency graph each
arm exercised (networkx).
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import simpy

from sim.broker import Broker, ConsumerGroup, TopicConfig, key_partition, linger_send_times
from sim.chain import sync_chain
from sim.components import poisson_arrivals
from sim.dist import Lognormal
from sim.rng import Streams
from sim.stream import ConsumerConfig, ConsumerStats, DataSignal, LagProbe, run_consumer

from .contract import Arm, Exercise, Lab, Outcome, Param
from .kit import OUTAGE_RULES, arrival_rate, outage_params, request_budget, window_s
from .measure import Measurements

ROLES = ("evaluation", "registry", "deployment", "analytics")
TOPIC, RECORD_BYTES, CAPACITY_REPS, SERVICE_CV = "model.trained", 1024, 5, 0.5


class EventDrivenPipelineLab(Lab):
    id = "q06"
    headline = ("comparison", "throughput_gain_x")
    refine_param = "requests"
    arms = (Arm("baseline", "Synchronous chain", "the trainer calls each downstream in turn and waits for it"),
            Arm("pattern", "Broker + consumer groups", "the trainer publishes; each downstream consumes at its pace"))
    assumptions = (
        "Service times are lognormal (cv 0.5); a consumer's poll returns as soon as a record is committed to the log.",
        "acks=all: a record is readable one network round trip after it reaches the leader (replication).",
        "Downstream services have a free instance for every synchronous caller; the chain is limited by waiting.",
        "A crashed consumer restarts after restart_s with the same partitions and resumes from its committed offset.",
        "Coupling counts the components each arm exercised; count_broker decides whether the broker is one of them.",
    )
    rules = OUTAGE_RULES
    params = (
        arrival_rate(40.0, 1.0, 2000.0),
        request_budget(1600, 500, 60000),
        Param("backlog", 500, 100, 20000, unit="events", help="events waiting at once in each capacity run"),
        Param("partitions", 10, 1, 200, unit="partitions", help="partitions of the model.trained topic"),
        Param("consumers", 10, 1, 200, unit="consumers", key=True,
              help="members of each consumer group; at most one per partition does work"),
        Param("sync_workers", 1, 1, 64, unit="callers", key=True, help="callers running the synchronous chain at once"),
        Param("downstreams", 4, 1, 4, unit="services", help="how many of evaluation, registry, deployment, analytics"),
        Param("models", 500, 1, 100000, unit="keys", help="distinct model ids (the record key)"),
        *(Param(f"{r}_ms", v, 0.1, 5000.0, unit="ms", help=f"mean time {r} spends on one event")
          for r, v in zip(ROLES, (8.0, 2.0, 5.0, 1.0))),
        Param("network_ms", 1.0, 0.0, 200.0, unit="ms", help="network round trip between any two components"),
        Param("linger_ms", 5.0, 0.0, 1000.0, unit="ms", key=True, help="producer batching delay (Kafka default 5)"),
        Param("outage_mode", "down", choices=("down", "none"), key=True,
              help="down: one consumer group is dead for the window; none: the same window, nothing fails (control)"),
        *outage_params(10.0, 12.0, modes=("down", "none"), default_mode="down")[1:],
        Param("outage_role", "deployment", choices=ROLES, help="the downstream that goes down (if it is deployed)"),
        Param("crashes", 3, 0, 50, unit="crashes", help="crashes of that consumer between processing and committing"),
        Param("restart_s", 1.0, 0.0, 600.0, unit="s", help="time a crashed consumer takes to come back"),
        Param("commit_interval_ms", 5000.0, 0.0, 60000.0, unit="ms",
              help="0: commit after every batch; else auto-commit interval (Kafka default 5000)"),
        Param("idempotent_consumer", False, help="consumers skip events they already processed"),
        Param("retention_s", 604800.0, 1.0, 1e7, unit="s", help="retention.ms of the topic (Kafka default 7 days)"),
        Param("segment_bytes", 16384, 1024, 1073741824, unit="bytes", help="log segment size; retention drops whole segments"),
        Param("poison_pct", 0.0, 0.0, 50.0, unit="%", help="events that fail every attempt (sent to the .DLT topic)"),
        Param("max_attempts", 10, 1, 100, unit="attempts", help="attempts before dead-lettering (Spring default 10)"),
        Param("sync_on_failure", "skip", choices=("skip", "retry"), help="baseline caller skips a down service or retries it"),
        Param("count_broker", True, help="count the broker as a component of the pattern's dependency graph"),
    )
    exercises = (
        Exercise("Make the consumers idempotent. What happens to duplicate side effects after the crashes?",
                 {"idempotent_consumer": True}, ("pattern", "duplicates"),
                 why="A crash makes the broker redeliver everything after the last committed offset; an idempotent "
                 "consumer remembers the event ids it has applied, so the replayed events change nothing the "
                 "second time."),
        Exercise("Keep records for only 5 s, shorter than the 12 s outage. How many events never reach deployment?",
                 {"retention_s": 5.0}, ("pattern", "lost_events"),
                 why="Retention deletes records by age whether or not anyone has read them: a consumer that is down "
                 "for longer than the retention period finds its unread records gone."),
        Exercise("Give the synchronous chain 4 callers. What is left of the throughput gain?",
                 {"sync_workers": 4}, ("comparison", "throughput_gain_x"),
                 why="The synchronous chain's throughput is callers ÷ chain latency, so more callers buy it back "
                 "almost linearly; the queue's gain was mostly the chain's single caller waiting on every step."),
        Exercise("Key every event by one of only 3 model ids. How fast does the pattern drain a backlog?",
                 {"models": 3}, ("pattern", "throughput_events_per_s"),
                 why="A key always lands on the same partition, and a partition is read by one consumer at a time: "
                 "with 3 keys, at most 3 consumers do any work, whatever the group size."),
    )

    def simulate(self, seed: int, p) -> Outcome:
        s, n, horizon = Streams(seed), p.requests, window_s(p)
        roles = ROLES[: p.downstreams]
        down = (p.outage_start_s, p.outage_start_s + p.outage_duration_s)
        hit = p.outage_mode == "down" and p.outage_role in roles
        ev = _events(s, p, roles, "", n, poisson_arrivals(s["arrivals"], p.rate_rps, n))
        target = p.outage_role in roles
        crash_at = np.sort(s["crashes"].uniform(0, horizon, p.crashes)) if target else np.empty(0)
        base = sync_chain(ev["t"], ev["svc"], p.sync_workers, p.network_ms / 1e3,
                          [down if hit and r == p.outage_role else None for r in roles], p.sync_on_failure)
        pat = _pattern(p, roles, ev, down if hit else None, crash_at, s["crash_members"], horizon)

        m = Measurements(("baseline", "pattern", "comparison"))
        t = ev["t"]
        m.percentiles("baseline", base["end"] - t, (50, 99), key="e2e_p{q}_ms")
        done = np.all(np.isfinite(pat["end"]), axis=0)
        m.percentiles("pattern", (np.max(pat["end"], axis=0) - t)[done], (50, 99), key="e2e_p{q}_ms",
                      missing="no event reached every downstream")
        for arm, start, handed in (("baseline", base["started"], base["issued"]), ("pattern", pat["start"], t)):
            ok = np.isfinite(start.T)
            m.percentiles(arm, (start - handed).T[ok], (50,), key="delivery_p{q}_ms")
            m.percentiles(arm, (start - t).T[ok], (99,), key="event_lag_ms")
        a, b = m.interval("pattern", "delivery_p50_ms"), m.interval("baseline", "delivery_p50_ms")
        m.value("comparison", "added_latency_ms", a.estimate - b.estimate, (a.low - b.high, a.high - b.low))
        m.value("baseline", "lost_events", float(np.isnan(base["started"]).sum()))
        m.value("pattern", "lost_events", float(pat["lost"]))
        m.value("pattern", "duplicates", float(np.maximum(pat["effects"] - 1, 0).sum()))
        m.value("pattern", "redelivered", float(pat["redelivered"]))
        m.value("pattern", "dead_lettered", float(pat["dlt"].sum()))
        lag = pd.DataFrame(pat["lag_rows"])
        m.value("pattern", "peak_lag_records", float(lag["lag_records"].max()))
        m.value("pattern", "peak_lag_ms", float(lag["lag_ms"].max()))
        m.value("pattern", "drain_s", _drain_time(pat["end"][roles.index(p.outage_role)], t, down[1]) if hit
                else np.nan, missing="no consumer was down at these settings: nothing to drain" if not hit
                else "no event from before the outage's end was processed")

        cap = {"baseline": [], "pattern": [], "busy_b": [], "busy_p": []}
        for r in range(CAPACITY_REPS):
            cev = _events(s, p, roles, f"capacity-{r}-", p.backlog, np.zeros(p.backlog))
            cb = sync_chain(cev["t"], cev["svc"], p.sync_workers, p.network_ms / 1e3, [None] * len(roles))
            cp = _pattern(p.replace(crashes=0, commit_interval_ms=0.0, retention_s=1e7), roles, cev, None,
                          np.empty(0), s[f"capacity-{r}-members"], 0.0)
            cap["baseline"].append(p.backlog / cb["end"].max())
            cap["pattern"].append(p.backlog / np.nanmax(cp["end"]))
            cap["busy_b"].append(_peak_overlap(cb["started"], cb["started"] + cev["svc"]))
            cap["busy_p"].append(_peak_overlap(cp["start"], cp["end"]))
        for arm, busy in (("baseline", "busy_b"), ("pattern", "busy_p")):
            m.mean(arm, "throughput_events_per_s", cap[arm])
            m.mean(arm, "concurrent_consumers", cap[busy])
        m.ratio("comparison", "throughput_gain_x", ("pattern", "throughput_events_per_s"),
                ("baseline", "throughput_events_per_s"))

        graphs = {"baseline": _graph(roles, [("trainer", r) for r in roles], False),
                  "pattern": _graph(roles, [("trainer", "broker")] + [(r, "broker") for r in pat["fetched"]],
                                    p.count_broker)}
        for arm, g in graphs.items():
            m.value(arm, "coupling_pct", 100.0 * nx.density(g))
            m.value(arm, "coupling_seed_pct", 100.0 * g.number_of_edges() / g.number_of_nodes())
        m.saving_pct("comparison", "coupling_reduction_pct", ("pattern", "coupling_pct"), ("baseline", "coupling_pct"),
                     missing="the baseline graph has no dependency to remove")

        notes = [f"Steady run: {n} events over {horizon:g} s at {p.rate_rps:g}/s; "
                 + (f"{p.outage_role} down {down[0]:g}-{down[1]:g} s; " if hit else "no consumer outage; ")
                 + (f"{p.crashes} crash(es) of {p.outage_role} before a commit." if target else
                    f"{p.outage_role} is not deployed, so nothing fails."),
                 f"Throughput: {CAPACITY_REPS} runs each draining a backlog of {p.backlog} events; "
                 "event lag and delivery are per (event, downstream), from event time to the start of work."]
        series = {"lag": lag.rename(columns={"group": "arm"}),
                  "edges": pd.DataFrame([(a, u, v) for a, g in graphs.items() for u, v in g.edges],
                                        columns=["arm", "source", "target"]),
                  "outage": pd.DataFrame({"start_s": [down[0]], "end_s": [down[1]], "active": [hit]})}
        return Outcome(m, series, notes=notes, extras={"accounting": pat["accounting"], "graphs": graphs})

    def plots(self, result):
        from .plotting import figure, grouped_bars, lines_by_arm

        o = result.series["outage"].iloc[0]
        spans = [(o.start_s, o.end_s)] if o.active else []
        lag = lines_by_arm(result.series["lag"], "time_s", "lag_records", "Consumer lag per group: records past the committed offset (auto-commit gives the saw-tooth)",
                           "records behind", spans, span_label="consumer down")
        tp = pd.DataFrame({"throughput (events/s)": [result.metrics[a]["throughput_events_per_s"]
                                                     for a in ("baseline", "pattern")]},
                          index=["synchronous chain", "broker + consumers"])
        bars, _ = grouped_bars(tp, "Backlog drain rate", "events/s")
        fig, axes = figure("Dependency graphs the two arms exercised", size=(8, 3.4))
        axes.remove()
        for k, arm in enumerate(("baseline", "pattern")):
            ax = fig.add_subplot(1, 2, k + 1)
            g = result.extras["graphs"][arm]
            nx.draw_networkx(g, nx.circular_layout(g), ax=ax, node_size=900, font_size=7, node_color="#d6eaf8")
            ax.set_title(f"{arm}: coupling {result.metrics[arm]['coupling_pct']:.3g}%", fontsize=9)
            ax.axis("off")
        return [lag, bars, fig]


def _events(s: Streams, p, roles, prefix: str, n: int, times: np.ndarray) -> dict:
    keys = s[prefix + "keys"].integers(p.models, size=n)
    part_of = {k: key_partition(f"model-{k}", p.partitions) for k in np.unique(keys)}
    svc = np.stack([Lognormal(p[f"{r}_ms"] / 1e3, SERVICE_CV).sample(s[f"{prefix}service-{r}"], n) for r in roles])
    return {"t": times, "keys": keys, "part": np.array([part_of[k] for k in keys], dtype=int), "svc": svc,
            "poison": s[prefix + "poison"].random(n) < p.poison_pct / 100}


def _pattern(p, roles, ev, down, crash_at, member_rng, horizon: float) -> dict:
    """The broker arm in SimPy: the producer appends as batches land, one consumer group per downstream."""
    env, broker = simpy.Environment(), Broker()
    broker.create_topic(TOPIC, TopicConfig(p.partitions, retention_ms=p.retention_s * 1e3,
                                           segment_bytes=p.segment_bytes))
    signal, rtt = DataSignal(env, broker), p.network_ms / 1e3
    n, k = len(ev["t"]), len(roles)
    visible = linger_send_times(ev["t"], ev["part"], p.linger_ms / 1e3) + 1.5 * rtt  # to the leader + replication
    nan = float("nan")
    start, end = [[nan] * n for _ in roles], [[nan] * n for _ in roles]
    effects, dlt, seen = [[0] * n for _ in roles], [[False] * n for _ in roles], [[0] * n for _ in roles]
    svc, poison, idem, attempts = ev["svc"].tolist(), ev["poison"].tolist(), p.idempotent_consumer, p.max_attempts

    def produce():
        for i in np.argsort(visible, kind="stable"):
            if visible[i] > env.now:
                yield env.timeout(visible[i] - env.now)
            broker.produce(TOPIC, f"model-{ev['keys'][i]}", int(i), env.now, partition=int(ev["part"][i]),
                           timestamp=float(ev["t"][i]), size=RECORD_BYTES)

    def handler_for(j):
        st, en, eff, dl, sn, sv = start[j], end[j], effects[j], dlt[j], seen[j], svc[j]

        def handle(rec, t, deadline):
            i = rec.value
            sn[i] += 1
            if idem and (eff[i] or dl[i]):
                return t
            cost = sv[i] * (attempts if poison[i] else 1)
            if t + cost > deadline:
                return None
            if st[i] != st[i]:  # first delivery that got processed
                st[i] = t
            if poison[i]:
                broker.dead_letter(rec, t + cost, "failed every attempt")
                dl[i] = True
            else:
                eff[i] += 1
                if en[i] != en[i]:
                    en[i] = t + cost
            return t + cost
        return handle

    cfg = ConsumerConfig(commit_interval_s=p.commit_interval_ms / 1e3, fetch_delay_s=rtt / 2, restart_s=p.restart_s)
    groups, fetched = {}, []
    for j, role in enumerate(roles):
        g = groups[role] = ConsumerGroup(broker, role, TOPIC, auto_offset_reset="earliest")
        members = [f"{role}-{c:03d}" for c in range(p.consumers)]
        g.join(*members)
        active = [mem for mem in members if g.assignment(mem)]
        target = role == p.outage_role
        who = member_rng.integers(len(active), size=len(crash_at)) if target else np.empty(0)
        for c, mem in enumerate(active):
            env.process(run_consumer(env, g, mem, signal, handler_for(j), cfg,
                                     [down] if target and down is not None else (),
                                     crash_at[who == c] if target else (), ConsumerStats()))
    probe = LagProbe(groups, max(horizon, 1e-3) / 100)
    env.process(produce())
    env.process(probe.run(env, horizon))
    env.run()
    start, end, effects, dlt, seen = (np.array(x) for x in (start, end, effects, dlt, seen))
    fetched = [r for j, r in enumerate(roles) if seen[j].any()]
    never = (effects == 0) & ~dlt
    lost_broker = sum(g.lost(q) for g in groups.values() for q in range(p.partitions))
    accounting = {"produced": broker.produced[TOPIC], "per_group": {
        r: {"consumed": sum(g.consumed(q) for q in range(p.partitions)), "in_log": g.total_lag(),
            "lost": sum(g.lost(q) for q in range(p.partitions)), "processed": int((effects[j] > 0).sum()),
            "dead_lettered": int(dlt[j].sum())} for j, (r, g) in enumerate(groups.items())},
        "lost_broker": lost_broker}
    return {"start": start, "end": end, "effects": effects, "dlt": dlt, "lost": int(never.sum()),
            "redelivered": int(np.maximum(seen - 1, 0).sum()), "fetched": fetched, "lag_rows": probe.rows,
            "accounting": accounting}


def _peak_overlap(starts: np.ndarray, ends: np.ndarray) -> float:
    """Most work items in progress at once (over every consumer or caller)."""
    s, e = starts.ravel(), ends.ravel()
    ok = np.isfinite(s) & np.isfinite(e)
    times = np.concatenate([s[ok], e[ok]])
    steps = np.concatenate([np.ones(ok.sum()), -np.ones(ok.sum())])
    order = np.lexsort((steps, times))  # an end before a start at the same instant
    return float(np.cumsum(steps[order]).max()) if times.size else 0.0


def _drain_time(end: np.ndarray, t: np.ndarray, outage_end: float) -> float:
    """Seconds from the outage's end until the role has processed every event created before it."""
    before = end[t < outage_end]
    return float(np.nanmax(before) - outage_end) if np.isfinite(before).any() else np.nan


def _graph(roles, edges, keep_broker: bool) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(("trainer", *roles) + (("broker",) if keep_broker else ()))
    g.add_edges_from((u, v) for u, v in edges if keep_broker or "broker" not in (u, v))
    return g


LAB = EventDrivenPipelineLab()
