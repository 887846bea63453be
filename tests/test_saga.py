"""sim.saga against Temporal's Saga semantics, the durable log, and the SimPy engine's invariants."""
import numpy as np
import pytest

from sim.ml_pipeline import quantile_times
from sim.saga import (COMPLETED, DEAD, FAILED, CompensationError, CrashSchedule, Draws, DurableLog, RetryPolicy,
                      Saga, SagaConfig, WorkflowState, replay, run_workflows)


# ------------------------------------------------------------------ Temporal's Saga
def test_compensations_run_in_reverse_order_of_registration():
    done, saga = [], Saga()
    for name in ("data", "model", "registry"):
        saga.add_compensation(done.append, name)
    saga.compensate()
    assert done == ["registry", "model", "data"]


def test_first_failing_compensation_stops_the_rest_by_default():
    done, saga = [], Saga()
    saga.add_compensation(done.append, "data")
    saga.add_compensation(lambda: (_ for _ in ()).throw(RuntimeError("registry down")))
    saga.add_compensation(done.append, "deploy")
    with pytest.raises(RuntimeError, match="registry down"):
        saga.compensate()
    assert done == ["deploy"]  # "data" never ran


def test_continue_with_error_runs_the_rest_and_collects():
    done, saga = [], Saga(continue_with_error=True)
    saga.add_compensation(done.append, "data")
    saga.add_compensation(lambda: 1 / 0)
    with pytest.raises(CompensationError) as e:
        saga.compensate()
    assert done == ["data"] and len(e.value.errors) == 1


def test_parallel_compensation_fires_all_and_aggregates():
    done, saga = [], Saga(parallel_compensation=True)
    saga.add_compensation(lambda: 1 / 0)
    saga.add_compensation(done.append, "a")
    saga.add_compensation(lambda: [][1])
    with pytest.raises(CompensationError) as e:
        saga.compensate()
    assert done == ["a"] and len(e.value.errors) == 2


def test_retry_policy_follows_temporal_intervals():
    r = RetryPolicy(initial_interval=1.0, backoff_coefficient=2.0, maximum_attempts=3)
    assert [r.interval(a) for a in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert RetryPolicy().interval(20) == 100.0  # default cap: 100 x initial
    assert not r.gives_up(2) and r.gives_up(3)
    assert not RetryPolicy().gives_up(10_000)  # 0 = unlimited


# ------------------------------------------------------------------ durable log
def test_replay_rebuilds_the_live_state_at_every_cut():
    events = [("workflow_started", -1), ("step_scheduled", 0), ("compensation_added", 0), ("step_completed", 0),
              ("step_scheduled", 1), ("step_scheduled", 1), ("compensation_added", 1), ("step_completed", 1),
              ("step_scheduled", 2), ("step_failed", 2), ("compensation_scheduled", 1),
              ("compensation_completed", 1), ("compensation_scheduled", 0)]
    live, log = WorkflowState(), DurableLog()
    for kind, step in events:
        live.apply(kind, step)
        log.append(7, kind, step)
        assert replay(log.history(7)) == live
    assert live.attempts == {0: 1, 1: 2, 2: 1} and live.compensating
    assert live.pending_compensations() == [0]  # 1 is done; 0 was scheduled, not completed: run it again


def test_replay_is_idempotent_for_duplicate_events():
    st = replay([("compensation_added", 3), ("compensation_added", 3), ("compensation_completed", 3),
                 ("compensation_completed", 3)])
    assert st.compensations == [3] and st.compensated == [3] and st.pending_compensations() == []


def test_crash_schedule_windows_and_restarts():
    c = CrashSchedule([10.0, 12.0, 50.0], restart_s=5.0)
    assert c.crashed_in(9.0, 10.0) and not c.crashed_in(10.0, 11.9)
    assert c.up_at(11.0) == 17.0  # the second crash, while restarting, extends the outage
    assert c.up_at(30.0) == 30.0


# ------------------------------------------------------------------ the engine
def draws(n=400, f=0.05, t=0.02, lost=0.0, crashes=(), restart=5.0, seed=1, k=5, slots=10, undo_ok=False):
    rng = np.random.default_rng(seed)
    shape = (n, k, slots)
    o, oc = rng.random(shape), rng.random(shape)
    return Draws(arrivals=np.cumsum(rng.exponential(0.5, n)),
                 work=quantile_times([0.01, 0.02, 0.05, 0.1], rng.random(shape)),
                 fails=o < f, hangs=(o >= f) & (o < f + t), lost_reply=rng.random(shape) < lost,
                 comp_work=np.full(shape, 0.005), comp_fails=(oc < f) & (not undo_ok), comp_hangs=(oc >= f) & (oc < f + t) & (not undo_ok),
                 hop=np.full(shape + (2,), 0.002), append=np.full(shape + (2,), 0.003),
                 crashes=CrashSchedule(crashes, restart))


def cfg(mode, attempts=3, **kw):
    return SagaConfig(mode, RetryPolicy(0.5, 2.0, None, attempts), 1.0, **kw)


@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
@pytest.mark.parametrize("seed", range(6))
def test_sagas_never_leave_partial_state(mode, seed):
    d = draws(f=0.15, t=0.05, lost=0.5, crashes=np.linspace(3, 180, 25), seed=seed)
    r = run_workflows(cfg(mode, add_compensation="before_step", continue_with_error=True, attempts=5), d)
    assert not r.partial_at_end.any() and (r.status != DEAD).all()
    assert set(r.effects[r.status == COMPLETED]) <= {r.all_effects}
    assert set(r.effects[r.status == FAILED]) <= {0}
    assert r.resumes.sum() > 0  # crashes hit workflows, and they came back


def test_no_saga_leaves_partial_state_and_dead_workflows():
    r = run_workflows(cfg("no_saga"), draws(f=0.1, crashes=np.linspace(3, 180, 25)))
    assert r.partial_at_end.sum() > 10 and (r.status == DEAD).sum() > 0
    assert r.log_appends == 0


def test_lost_replies_leak_when_the_undo_is_added_after_the_step():
    # Temporal's samples add the compensation after success; a hung step that did its work is never undone
    d = draws(f=0.0, t=0.3, lost=1.0, seed=3, undo_ok=True)
    after = run_workflows(cfg("orchestration", attempts=1), d)
    before = run_workflows(cfg("orchestration", attempts=1, add_compensation="before_step"), d)
    assert after.partial_at_end.sum() > 20
    assert before.partial_at_end.sum() == 0
    assert (after.status == before.status).all()  # same draws, same fates; only the undo list differs


def test_compensations_run_in_reverse_and_parallel_is_faster():
    d = draws(f=0.25, t=0.0, seed=4)
    seq = run_workflows(cfg("orchestration", attempts=1), d)
    par = run_workflows(cfg("orchestration", attempts=1, parallel_compensation=True), d)
    both = np.isfinite(seq.compensation_s) & np.isfinite(par.compensation_s) & (seq.status == FAILED)
    assert both.sum() > 20
    assert np.mean(par.compensation_s[both]) < np.mean(seq.compensation_s[both])


def test_orchestration_pays_more_coordination_than_choreography():
    d = draws(f=0.0, t=0.0)
    o, c, b = (run_workflows(cfg(m), d) for m in ("orchestration", "choreography", "no_saga"))
    # per workflow: orchestration 5 x (2 hops + 2 writes) + 2 writes; choreography 5 x (hop + write) + 1 write
    assert o.coordination_s == pytest.approx(np.full(400, 5 * (0.004 + 0.006) + 0.006))
    assert c.coordination_s == pytest.approx(np.full(400, 5 * 0.005 + 0.003))
    assert b.coordination_s == pytest.approx(np.full(400, 5 * 0.004))
    assert (o.status == COMPLETED).all() and (c.status == COMPLETED).all()


def test_without_failures_or_crashes_nothing_is_compensated_or_stuck():
    d = draws(f=0.0, t=0.0)
    for mode in ("no_saga", "orchestration", "choreography"):
        r = run_workflows(cfg(mode), d)
        assert (r.status == COMPLETED).all() and not r.partial_at_end.any()
        assert np.isnan(r.compensation_s).all() and r.resumes.sum() == 0
