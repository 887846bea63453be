"""sim.exactly_once against Flink's checkpoint, two-phase-commit and watermark semantics (REFERENCES.md §18),
with an exact ground truth: every event's fate and every window's count are checked, not estimated."""
import numpy as np
import pandas as pd
import pytest

from sim.exactly_once import JobConfig, Sink, Stream, account, run_job

FAR = 1e6  # a watermark bound no event is later than: nothing is ever dropped as late


def steady(n=600, rate=10.0, users=7, partitions=3, delay=0.0):
    t = np.arange(n) / rate + 0.05
    return Stream(np.arange(n) % users, t, t + delay, partitions)


def job(stream, mode, crashes=(), sinks=None, **cfg):
    n = stream.key.size
    sinks = sinks if sinks is not None else [Sink(n)]
    settings = dict(window_size=10.0, out_of_orderness=FAR, checkpoint_interval=10.0, snapshot_s=0.0, ack_s=1.0,
                    precommit_s=0.0, restart_s=2.0)
    settings.update(cfg)
    run = run_job(stream, np.full(n, 0.001), crashes, JobConfig(mode, **settings), sinks)
    return run, sinks


def test_ground_truth_matches_an_independent_count():
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 300, 2000))
    s = Stream(rng.integers(30, size=2000), t, t + rng.exponential(3.0, 2000), 4)
    df = pd.DataFrame({"k": s.key, "w": np.floor(s.event_time / 60).astype(int)})
    expected = {(int(k), int(w)): int(c) for (k, w), c in df.groupby(["k", "w"]).size().items()}
    assert s.truth(60.0) == expected


@pytest.mark.parametrize("mode", ["at_most_once", "at_least_once", "two_phase_commit"])
def test_without_crashes_every_mode_counts_every_window_exactly(mode):
    s = steady()
    run, (sink,) = job(s, mode)
    acc = account(s, sink, 10.0)
    assert acc.exact.all() and acc.store == acc.truth
    assert run.replayed == 0 and run.aborted == 0


def test_at_least_once_replays_exactly_the_records_after_the_last_completed_checkpoint():
    # barrier at 20 s completes at 21 s; the crash at 25 s restores it: records appended in [20, 25) come again
    s = steady()
    run, (sink,) = job(s, "at_least_once", crashes=[25.0])
    acc = account(s, sink, 10.0)
    replayed = set(np.flatnonzero((s.append_time >= 20.0) & (s.append_time < 25.0)).tolist())
    assert set(np.flatnonzero(acc.duplicated).tolist()) == replayed
    assert int((acc.times_counted - 1).sum()) == run.replayed == len(replayed)
    assert not acc.lost.any()


def test_a_checkpoint_still_in_flight_at_the_crash_is_not_restored():
    # barrier at 20 s would complete at 21 s; the crash at 20.5 s falls back to the checkpoint taken at 10 s
    s = steady()
    _, (sink,) = job(s, "at_least_once", crashes=[20.5])
    acc = account(s, sink, 10.0)
    assert set(np.flatnonzero(acc.duplicated).tolist()) == set(
        np.flatnonzero((s.append_time >= 10.0) & (s.append_time < 20.5)).tolist())


def test_two_phase_commit_aborts_what_it_replays_and_shows_only_committed_writes():
    s = steady()
    run, (sink,) = job(s, "two_phase_commit", crashes=[25.0, 41.0])
    acc = account(s, sink, 10.0)
    assert acc.exact.all() and acc.store == acc.truth
    assert run.aborted == run.replayed > 0
    vis = sink.visible_at()
    # read_committed: a write becomes visible only when its checkpoint completes (or the final one)
    assert set(vis.tolist()) <= set(run.completed_at)
    assert np.all(vis >= s.append_time)


def test_idempotent_sink_removes_replays_under_event_time_but_not_under_processing_time():
    s = steady(n=800)
    n = s.key.size
    sinks = [Sink(n, True, "event_time"), Sink(n, True, "processing_time"), Sink(n, False, "processing_time")]
    job(s, "at_least_once", crashes=[29.0], sinks=sinks)
    et, pt_idem, pt_plain = (account(s, x, 10.0) for x in sinks)
    assert not et.duplicated.any() and et.exact.all()
    # replayed after the restart (31 s on), records from [20, 29) fall in a later processing-time window
    assert pt_idem.duplicated.sum() > 0
    assert pt_idem.duplicated.sum() == pt_plain.duplicated.sum()
    for c in (np.array(x) for x, d in zip(sinks[1].contributions, pt_idem.duplicated) if d):
        assert len(set(c.tolist())) == len(c)  # never twice in one window: the duplicates cross windows


def test_at_most_once_loses_the_polled_batch_and_never_duplicates():
    # the first crash leaves a backlog; the restarted job polls 500 records, commits, and dies mid-batch
    s = steady(n=3000, rate=50.0)
    run, (sink,) = job(s, "at_most_once", crashes=[10.0, 12.02], max_poll_records=500, restart_s=2.0)
    acc = account(s, sink, 10.0)
    assert not acc.duplicated.any()
    assert 0 < acc.lost.sum() <= 500
    assert run.checkpoints == 0 and run.replayed == 0


def window_reconciliation(acc, stream, sink, size):
    """stored − true per (key, window), rebuilt from every event's writes."""
    true_w = stream.window_of(size)
    diff = {}
    for i, ws in enumerate(sink.contributions):
        k = int(stream.key[i])
        diff[(k, int(true_w[i]))] = diff.get((k, int(true_w[i])), 0) - 1
        for w in ws:
            diff[(k, w)] = diff.get((k, w), 0) + 1
    return {kw: d for kw, d in diff.items() if d or kw in acc.truth}


@pytest.mark.parametrize("mode,time", [("at_least_once", "event_time"), ("at_most_once", "event_time"),
                                       ("two_phase_commit", "processing_time"), ("at_least_once", "processing_time")])
def test_every_window_error_is_accounted_for_by_event_fates(mode, time):
    rng = np.random.default_rng(4)
    n = 4000
    t = np.sort(rng.uniform(0, 400, n))
    late = rng.random(n) < 0.3
    s = Stream(rng.integers(20, size=n), t, t + 0.05 + late * rng.exponential(8.0, n), 3)
    sink = Sink(n, time=time)
    run_job(s, np.full(n, 0.002), [55.0, 170.0, 300.0],
            JobConfig(mode, 30.0, out_of_orderness=2.0, checkpoint_interval=20.0, ack_s=0.5), [sink])
    acc = account(s, sink, 30.0)
    errors = acc.window_errors()
    rebuilt = window_reconciliation(acc, s, sink, 30.0)
    assert {kw: e for kw, e in errors.items() if e} == {kw: e for kw, e in rebuilt.items() if e}
    assert sum(errors.values()) == int((acc.times_counted - 1).sum())  # duplicates minus losses, exactly


def test_watermark_drops_a_late_event_unless_bound_or_lateness_cover_it():
    # one partition: an event at 0.5 s, one at 70 s, then one stamped 30 s arriving at 71 s (window [0, 60))
    key, et, at = np.zeros(3, int), np.array([0.5, 70.0, 30.0]), np.array([0.5, 70.0, 71.0])
    s = Stream(key, et, at, 1)

    def counted(**cfg):
        run, (sink,) = job(s, "at_least_once", window_size=60.0, **cfg)
        return len(sink.contributions[2]), run

    n, run = counted(out_of_orderness=0.0)  # watermark 69.999 >= 59.999: dropped
    assert n == 0 and run.dropped_late[2]
    assert run.fire_time[0] == pytest.approx(70.2, abs=0.21)  # fired at the first emission after 70 s
    assert counted(out_of_orderness=0.0, allowed_lateness=15.0)[0] == 1  # 59.999 + 15 > 69.999: still counted
    assert counted(out_of_orderness=20.0)[0] == 1  # watermark 49.999: the window has not fired yet


def test_checkpoint_time_and_recovery_are_accounted():
    s = steady()
    run, _ = job(s, "two_phase_commit", crashes=[20.5], snapshot_s=0.05, precommit_s=0.02)  # aborts one in flight
    assert run.checkpoint_s == pytest.approx(0.07 * run.barriers, rel=1e-9) and run.barriers > run.checkpoints
    assert len(run.recovery_s) == 1 and run.recovery_s[0] >= 2.0


def test_tiny_intervals_without_pauses_still_advance():
    # regression: a trigger time rounded to <= now re-fired the barrier forever
    s = steady(n=300)
    run, (sink,) = job(s, "two_phase_commit", checkpoint_interval=0.1, ack_s=0.0)
    assert run.barriers <= run.end / 0.1 + 2
    assert account(s, sink, 10.0).exact.all()
