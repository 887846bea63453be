"""Q19: a per-user windowed event count computed by a checkpointed stream job that crashes (``sim.exactly_once``).

Events are created at Poisson times by ``users`` users; most reach the Kafka topic after a network delay, a
share after an extra exponential delay (out of order). One chained job (source, window, sink) reads the
topic, puts each event in a tumbling window, by event time with a bounded-out-of-orderness watermark and an
allowed lateness, or by processing time, and adds it to a counter in the feature store. The job crashes
``crashes`` times at random, restarts and recovers. Four delivery guarantees see the same events, service
times and crashes (common random numbers): at-most-once, at-least-once (checkpoints, plain sink), exactly-once
with an idempotent sink, and exactly-once with a two-phase-commit sink. A ground-truth count per (user,
window) makes every duplicate, loss and wrong-window event an exact count, not an estimate.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sim.components import poisson_arrivals
from sim.exactly_once import JobConfig, Sink, Stream, account, run_job
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param
from .kit import arrival_rate, window_s
from .measure import Measurements

ARMS = ("at_most_once", "baseline", "idempotent", "pattern")
STREAM_PARAMS = ("rate_rps", "requests", "users", "partitions", "network_ms", "out_of_order_pct", "disorder_mean_s")


class ExactlyOnceFeaturesLab(Lab):
    id = "q19"
    headline = ("baseline", "duplicate_rate_pct")
    refine_param = "requests"
    arms = (Arm("at_most_once", "At-most-once", "offsets committed when records are polled; no checkpoints"),
            Arm("baseline", "At-least-once", "checkpoints restore offsets; the sink adds every write, replays too"),
            Arm("idempotent", "Exactly-once, idempotent sink",
                "at-least-once delivery into a sink that ignores a second write of the same event and window"),
            Arm("pattern", "Exactly-once, two-phase commit",
                "writes go into a transaction committed when the checkpoint completes; readers see committed data"),
            Arm("comparison", "Pattern vs baseline", "how much later the transactional sink makes events visible"))
    assumptions = (
        "Event creation is Poisson; users are equally active; a user's events go to partition user % partitions.",
        "Every event pays the network delay; out_of_order_pct of them also an exponential extra delay.",
        "Per-record processing time is exponential with mean service_ms; a crash stops the record in hand.",
        "Crashes fall uniformly in the window; a restart takes restart_s; only the job fails, never Kafka or the store.",
        "A late event is one appended after an event of a later window: the stream had already moved past its window.",
        "Freshness is from an event's creation until its write is visible to readers; feature latency from a "
        "window's end until it has closed and its on-time writes are visible (the end of input is left out).",
    )
    parts = {"stream": STREAM_PARAMS}
    params = (
        arrival_rate(40.0, 1.0, 2000.0),
        Param("requests", 20_000, 2_000, 200_000, unit="events",
              help="events in the input; the simulated window is requests / rate_rps"),
        Param("users", 200, 1, 100_000, unit="users", help="distinct keys; the feature is events per user per window"),
        Param("partitions", 4, 1, 64, unit="partitions", help="partitions of the input topic"),
        Param("window_size_s", 60.0, 1.0, 3600.0, unit="s", help="tumbling window length"),
        Param("network_ms", 50.0, 0.0, 5000.0, unit="ms", help="delay from creation to the topic for every event"),
        Param("out_of_order_pct", 20.0, 0.0, 100.0, unit="%", help="share of events delayed further (offline clients)"),
        Param("disorder_mean_s", 10.0, 0.01, 3600.0, unit="s", help="mean extra delay of those events (exponential)"),
        Param("time_characteristic", "event_time", choices=("event_time", "processing_time"), key=True,
              help="assign windows by the event's timestamp or by the job's clock when it processes the event"),
        Param("out_of_orderness_s", 5.0, 0.0, 3600.0, unit="s", key=True,
              help="B in forBoundedOutOfOrderness: the watermark trails the newest timestamp by B"),
        Param("allowed_lateness_s", 0.0, 0.0, 3600.0, unit="s",
              help="events behind the watermark still counted this long after their window (Flink default 0)"),
        Param("checkpoint_interval_s", 60.0, 0.1, 3600.0, unit="s", key=True,
              help="execution.checkpointing.interval"),
        Param("snapshot_ms", 50.0, 0.0, 60_000.0, unit="ms", help="synchronous snapshot: the job pauses this long"),
        Param("ack_ms", 1000.0, 0.0, 600_000.0, unit="ms",
              help="asynchronous part: from the snapshot until the checkpoint is complete"),
        Param("precommit_ms", 20.0, 0.0, 60_000.0, unit="ms", help="two-phase commit: flush at each barrier (pause)"),
        Param("crashes", 2, 0, 50, unit="crashes", key=True, help="job crashes during the window (0: control)"),
        Param("restart_s", 10.0, 0.0, 3600.0, unit="s", help="time from a crash until the job runs again"),
        Param("service_ms", 2.0, 0.0, 1000.0, unit="ms", help="mean processing time per event"),
        Param("max_poll_records", 500, 1, 10_000, unit="records", help="records per poll (Kafka max.poll.records)"),
    )
    exercises = (
        Exercise("Checkpoint every 10 s instead of every minute. How many duplicates does at-least-once leave?",
                 {"checkpoint_interval_s": 10.0}, ("baseline", "duplicate_rate_pct"),
                 why="A crash replays everything since the last completed checkpoint; checkpointing six times as "
                 "often leaves about a sixth as many events to be counted twice."),
        Exercise("Switch windows to processing time. What share of events lands in the wrong window for the "
                 "two-phase-commit job?", {"time_characteristic": "processing_time"}, ("pattern", "wrong_window_pct"),
                 why="A processing-time window counts an event in the window of its arrival, so every event that "
                 "arrives after its window has ended (network delay, a consumer catching up after a crash) lands "
                 "in a later one."),
        Exercise("Use processing-time windows and checkpoint every 45 s. Does the idempotent sink still stop "
                 "duplicates after the crashes?", {"time_characteristic": "processing_time",
                                                   "checkpoint_interval_s": 45.0}, ("idempotent", "duplicate_rate_pct"),
                 why="The idempotent sink drops a repeat of the same event in the same window. With processing-time "
                 "windows a replayed event is counted in the window of its second arrival, a different one, so "
                 "the repeat looks new and is counted twice."),
        Exercise("Allow 30 s of lateness. What share of late events is counted in its window now?",
                 {"allowed_lateness_s": 30.0}, ("pattern", "late_events_handled_pct"),
                 why="A late event is still counted while its window's allowed lateness covers how far behind the "
                 "watermark it arrives; here 30 s covers nearly every straggler's delay."),
        Exercise("Checkpoint every second. What does that cost in checkpoint overhead?",
                 {"checkpoint_interval_s": 1.0}, ("pattern", "checkpoint_overhead_pct"),
                 why="Each checkpoint pauses the job for its synchronous snapshot (and, with two-phase commit, the "
                 "pre-commit flush); at one per second that fixed pause becomes a large share of the processing "
                 "time."),
    )

    def part_stream(self, seed: int, p) -> Stream:
        s = Streams(seed)
        n = p.requests
        t = poisson_arrivals(s["arrivals"], p.rate_rps, n)
        keys = s["users"].integers(p.users, size=n)
        late = s["disorder"].random(n) < p.out_of_order_pct / 100
        extra = s["disorder_delay"].exponential(p.disorder_mean_s, n)
        return Stream(keys, t, t + p.network_ms / 1e3 + np.where(late, extra, 0.0), p.partitions)

    def simulate(self, seed: int, p) -> Outcome:
        s, n = Streams(seed), p.requests
        stream = self.part("stream", seed, p)
        service = s["service"].exponential(p.service_ms / 1e3, n) if p.service_ms > 0 else np.zeros(n)
        crash_at = np.sort(s["crashes"].uniform(0, window_s(p), p.crashes))
        tc = p.time_characteristic
        runs, sinks = {}, {}
        for mode, arms in (("at_most_once", ("at_most_once",)), ("at_least_once", ("baseline", "idempotent")),
                           ("two_phase_commit", ("pattern",))):
            made = {arm: Sink(n, idempotent=arm == "idempotent", time=tc) for arm in arms}
            extra = [Sink(n, time="processing_time")] if mode == "two_phase_commit" else []
            cfg = JobConfig(mode, p.window_size_s, p.out_of_orderness_s, p.allowed_lateness_s,
                            p.checkpoint_interval_s, p.snapshot_ms / 1e3, p.ack_ms / 1e3, p.precommit_ms / 1e3,
                            p.restart_s, p.max_poll_records)
            run = run_job(stream, service, crash_at, cfg, list(made.values()) + extra)
            for arm in arms:
                runs[arm], sinks[arm] = run, made[arm]
            if extra:
                sinks["pattern_pt"] = extra[0]

        late = stream.late_mask(p.window_size_s)
        m = Measurements(ARMS + ("comparison",))
        latency, accs = {}, {}
        for arm in ARMS:
            run = runs[arm]
            acc = accs[arm] = account(stream, sinks[arm], p.window_size_s)
            m.share(arm, "duplicate_rate_pct", int(acc.duplicated.sum()), n)
            m.share(arm, "lost_pct", int(acc.lost.sum()), n)
            m.share(arm, "wrong_window_pct", int(np.sum(acc.wrong > 0)), n)
            m.share(arm, "error_rate_pct", int(np.sum(~acc.exact)), n)
            errors = acc.window_errors()
            m.share(arm, "windows_exact_pct", sum(e == 0 for e in errors.values()), len(errors))
            m.share(arm, "late_events_handled_pct", int(np.sum(acc.exact & late)), int(late.sum()),
                    missing="no event arrived after its window had passed: nothing was late")
            m.share(arm, "late_dropped_pct", int(np.sum(run.dropped_late & late)), int(late.sum()),
                    missing="no event arrived after its window had passed: nothing was late")
            if arm == "at_most_once":
                m.missing(arm, "checkpoint_overhead_pct", "at-most-once takes no checkpoints")
            else:
                m.value(arm, "checkpoint_overhead_pct", 100 * run.checkpoint_s / run.busy_s if run.busy_s else np.nan,
                        missing="the job processed nothing")
            m.value(arm, "checkpoints", float(run.checkpoints))
            m.mean(arm, "recovery_s", run.recovery_s, missing="no crash hit the job at these settings")
            m.share(arm, "replayed_pct", min(run.replayed, n), n)
            vis = sinks[arm].visible_at()
            ok = np.isfinite(vis)
            m.percentiles(arm, (vis - stream.event_time)[ok], (50, 99), key="visible_p{q}_ms",
                          missing="no write became visible")
            m.batch_mean(arm, "freshness_s", (vis - stream.event_time)[ok], missing="no write became visible")
            latency[arm] = _feature_latency(stream, sinks[arm], run, p, late)
            m.mean(arm, "feature_latency_s", latency[arm], missing="no window closed before the end of the input")
        pt = account(stream, sinks["pattern_pt"], p.window_size_s)
        m.share("pattern", "pt_wrong_window_pct", int(np.sum(pt.wrong > 0)), n)
        m.share("pattern", "late_events_pct", int(late.sum()), n)
        # paired on common random numbers: the same events, visible in both arms
        vb, vp = sinks["baseline"].visible_at(), sinks["pattern"].visible_at()
        both = np.isfinite(vb) & np.isfinite(vp)
        m.batch_mean("comparison", "added_latency_s", (vp - vb)[both], missing="no event was visible in both arms")
        r = m.ratio("comparison", "added_latency_x", ("comparison", "added_latency_s"), ("baseline", "freshness_s"),
                    missing="the baseline made nothing visible")
        lo, hi = m.intervals["comparison"].get("added_latency_x", (np.nan, np.nan))
        m.value("comparison", "added_latency_pct", 100 * r, (100 * lo, 100 * hi),
                missing="the baseline made nothing visible")

        series = {"windows": _window_table(accs), "crashes": pd.DataFrame({"time_s": runs["pattern"].crashes})}
        notes = [f"{n} events over {window_s(p):g} s from {p.users} users; {p.crashes} crash(es) at "
                 + ", ".join(f"{c:.0f}" for c in crash_at) + " s" if p.crashes else
                 f"{n} events over {window_s(p):g} s from {p.users} users; no crash (control).",
                 f"{100 * late.mean():.2g}% of events arrived after their {p.window_size_s:g} s window had passed; "
                 f"windows by {tc.replace('_', ' ')}."]
        return Outcome(m, series, notes=notes)

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        rows = [{"arm": a, "what": w, "pct": result.metrics[a][k]}
                for a in ARMS for w, k in (("duplicated", "duplicate_rate_pct"), ("lost", "lost_pct"),
                                           ("wrong window", "wrong_window_pct"))]
        win = result.series["windows"]
        return [
            bar_chart(pd.DataFrame(rows), "what", "pct", "Events not counted exactly once, per delivery guarantee",
                      "% of events", color="arm"),
            line_chart(win, "window", "error", "Stored count minus true count, per window (summed over users)",
                       "window index", "events", points=True),
        ]


def _feature_latency(stream: Stream, sink: Sink, run, p, late: np.ndarray) -> list:
    """Per window closed during the run: from its end until it closed and its on-time writes were all visible."""
    W = p.window_size_s
    event_time = p.time_characteristic == "event_time"
    if event_time:
        closed = run.fire_time  # the watermark passed the window's end
    else:  # a processing-time window closes on the job's clock
        last = int(np.floor(run.end / W))
        closed = {w: (w + 1) * W for w in range(last)}
    ready = dict(closed)
    for i, w, t in sink.log:
        if w in ready and not (event_time and late[i]) and t > ready[w]:
            ready[w] = t
    return [ready[w] - (w + 1) * W for w in sorted(ready)]


def _window_table(accs: dict) -> pd.DataFrame:
    rows = []
    for arm in ARMS:
        err = accs[arm].window_errors()
        per = {}
        for (_, w), e in err.items():
            per[w] = per.get(w, 0) + e
        rows += [{"arm": arm, "window": w, "error": e} for w, e in sorted(per.items())]
    return pd.DataFrame(rows, columns=["arm", "window", "error"])


LAB = ExactlyOnceFeaturesLab()
