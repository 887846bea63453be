"""Sagas for a multi-step workflow: Temporal's ``Saga`` semantics, a durable log replayed on
resume, and a SimPy engine that runs a workflow with no saga, orchestrated or choreographed.

Reference: Temporal's Java SDK ``io.temporal.workflow.Saga`` (REFERENCES.md §11):
``add_compensation`` registers an undo action; ``compensate`` runs them in **reverse order of
registration**, one after another (``parallel_compensation`` false by default); with
``continue_with_error`` false (the default) the first compensation that fails stops the rest
and its error propagates, with it true the rest still run and the errors are collected; in
parallel mode all run and the errors are aggregated (``CompensationError`` here,
``CompensationException`` there). Temporal's samples register a compensation *after* the step
succeeds (REFERENCES.md); ``add_compensation="before_step"`` registers it before, which covers a
step whose work was done but whose reply was lost (compensations must then be idempotent).
Retries follow Temporal's ``RetryPolicy`` (``initial_interval``, ``backoff_coefficient``,
``maximum_interval`` = 100 x initial by default, ``maximum_attempts``, 0 = unlimited;
REFERENCES.md §2) and every attempt has a ``start_to_close_timeout``.

Where this differs from Temporal: the orchestrator keeps its own append-only log
(``DurableLog``, one durable write per event, a transaction grouping "compensation added" with
its step's event) instead of Temporal's history service; a crash loses the in-flight reply, and
on restart the orchestrator rebuilds each workflow from its log (``replay``) and re-runs the step
that was scheduled but not completed (at-least-once; steps and compensations are idempotent,
modelled as setting or clearing one bit of a workflow's resources).

Modes of ``run_workflows``:

* ``no_saga``: a plain script calls each step (request + reply) with the same per-attempt
  timeout; no durable log, no compensation; retries only if ``retry_without_saga``. A failure
  leaves whatever earlier steps created; a crash of the script leaves the workflow dead.
* ``orchestration``: a central orchestrator logs "scheduled" before and the outcome after each
  attempt (two durable writes, two message hops per step), retries, then compensates.
* ``choreography``: each service reacts to the previous service's event and publishes its own
  (one hop and one durable write per step); a failure emits a compensation event that travels
  back through the services that completed, in reverse order. Crashed consumers restart and the
  broker redelivers the unacknowledged event (no history to replay).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import simpy

MODES = ("no_saga", "orchestration", "choreography")
COMPLETED, FAILED, DEAD = 0, 1, 2  # workflow status at its end
STATUS_NAMES = ("completed", "failed", "dead")


# ---------------------------------------------------------------------------- retries
@dataclass(frozen=True)
class RetryPolicy:
    """Temporal's activity retry policy (defaults as Temporal's: 1 s, x2, cap 100 x initial, unlimited)."""

    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float | None = None
    maximum_attempts: int = 0  # 0: unlimited

    def interval(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based): initial x coefficient^(attempt-1), capped."""
        cap = self.maximum_interval if self.maximum_interval is not None else 100.0 * self.initial_interval
        return min(cap, self.initial_interval * self.backoff_coefficient ** (attempt - 1))

    def gives_up(self, attempt: int) -> bool:
        return self.maximum_attempts > 0 and attempt >= self.maximum_attempts


# ---------------------------------------------------------------------------- Temporal's Saga
class CompensationError(Exception):
    """Errors of the compensations that failed (Temporal: ``Saga.CompensationException``)."""

    def __init__(self, errors: list[BaseException]):
        super().__init__(f"{len(errors)} compensation(s) failed: " + "; ".join(map(repr, errors)))
        self.errors = errors


class Saga:
    """Temporal's ``Saga`` on plain callables: register undo actions, then ``compensate``."""

    def __init__(self, parallel_compensation: bool = False, continue_with_error: bool = False):
        self.parallel_compensation = parallel_compensation
        self.continue_with_error = continue_with_error
        self._compensations: list[tuple[Callable, tuple]] = []

    def add_compensation(self, fn: Callable, *args) -> None:
        self._compensations.append((fn, args))

    def compensate(self) -> None:
        errors: list[BaseException] = []
        order = self._compensations if self.parallel_compensation else list(reversed(self._compensations))
        for fn, args in order:  # "parallel": all fired, none waits for another's outcome
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - any failure of an undo action
                if not (self.parallel_compensation or self.continue_with_error):
                    raise
                errors.append(e)
        if errors:
            raise CompensationError(errors)


# ---------------------------------------------------------------------------- durable log and replay
@dataclass
class WorkflowState:
    """What an orchestrator knows about one workflow; rebuilt from its log by ``replay``."""

    next_step: int = 0
    attempts: dict = field(default_factory=dict)  # step -> attempts scheduled
    compensations: list = field(default_factory=list)  # steps, in registration order
    compensated: list = field(default_factory=list)
    comp_attempts: dict = field(default_factory=dict)
    gave_up: list = field(default_factory=list)  # compensations that exhausted their retries
    compensating: bool = False
    finished: str | None = None  # "completed", "compensated" or "abandoned"

    def apply(self, kind: str, step: int = -1) -> None:
        if kind == "compensation_added":
            if step not in self.compensations:
                self.compensations.append(step)
        elif kind == "step_scheduled":
            self.attempts[step] = self.attempts.get(step, 0) + 1
        elif kind == "step_completed":
            self.next_step = step + 1
        elif kind == "step_failed":
            self.compensating = True
        elif kind == "compensation_scheduled":
            self.comp_attempts[step] = self.comp_attempts.get(step, 0) + 1
        elif kind == "compensation_completed":
            if step not in self.compensated:
                self.compensated.append(step)
        elif kind == "compensation_gave_up":
            self.gave_up.append(step)
        elif kind in ("completed", "compensated", "abandoned"):
            self.finished = kind
        elif kind != "workflow_started":
            raise ValueError(f"unknown log event {kind!r}")

    def pending_compensations(self) -> list[int]:
        """Registered, not yet done or given up, in reverse order of registration."""
        return [s for s in reversed(self.compensations) if s not in self.compensated and s not in self.gave_up]


def replay(history) -> WorkflowState:
    """Rebuild a workflow's state from its log events, in order."""
    st = WorkflowState()
    for kind, step in history:
        st.apply(kind, step)
    return st


class DurableLog:
    """Append-only event log per workflow; it survives an orchestrator crash (its memory does not)."""

    def __init__(self):
        self._events: dict[int, list[tuple[str, int]]] = {}
        self.appends = 0

    def append(self, workflow: int, kind: str, step: int = -1) -> None:
        self._events.setdefault(workflow, []).append((kind, step))
        self.appends += 1

    def history(self, workflow: int) -> list[tuple[str, int]]:
        return list(self._events.get(workflow, ()))


# ---------------------------------------------------------------------------- crashes
class CrashSchedule:
    """Crash instants of the coordinator; each takes it down for ``restart_s``."""

    def __init__(self, times, restart_s: float):
        self.times = np.sort(np.asarray(times, dtype=float))
        self._t = self.times.tolist()
        self.restart_s = float(restart_s)

    def crashed_in(self, t0: float, t1: float) -> bool:
        """Any crash in (t0, t1]."""
        j = bisect.bisect_right(self._t, t0)
        return j < len(self._t) and self._t[j] <= t1

    def up_at(self, t: float) -> float:
        """The first time >= t at which the coordinator is up (a crash while restarting extends it)."""
        while True:
            j = bisect.bisect_right(self._t, t) - 1
            if j >= 0 and self._t[j] + self.restart_s > t:
                t = self._t[j] + self.restart_s
            else:
                return t


# ---------------------------------------------------------------------------- the SimPy engine
@dataclass(frozen=True)
class SagaConfig:
    mode: str
    retry: RetryPolicy
    start_to_close_timeout: float
    add_compensation: str = "after_step"  # or "before_step"
    parallel_compensation: bool = False
    continue_with_error: bool = False
    retry_without_saga: bool = False
    training_slots: int = 4
    training_step: int = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.add_compensation not in ("after_step", "before_step"):
            raise ValueError(f"add_compensation must be after_step or before_step, got {self.add_compensation!r}")


@dataclass
class Draws:
    """Everything random, indexed by (workflow, step, attempt slot): the arms share them.

    ``work``: seconds of one attempt; ``fails``: the attempt returns an error; ``hangs``: no reply
    (the caller waits out its timeout); ``lost_reply``: a hung attempt did its work anyway;
    ``comp_fails``/``comp_hangs``: the same for compensations; ``hop``/``append``: seconds of a
    message hop and of a durable write, two of each per attempt; ``crashes``: the coordinator's.
    """

    arrivals: np.ndarray
    work: np.ndarray
    fails: np.ndarray
    hangs: np.ndarray
    lost_reply: np.ndarray
    comp_work: np.ndarray
    comp_fails: np.ndarray
    comp_hangs: np.ndarray
    hop: np.ndarray
    append: np.ndarray
    crashes: CrashSchedule

    @property
    def steps(self) -> int:
        return self.work.shape[1]

    def flat(self) -> dict[str, list]:
        """The per-attempt draws as flat Python lists (fast to index), made once and shared by the arms."""
        if not hasattr(self, "_flat"):
            self._flat = {name: getattr(self, name).ravel().tolist() for name in
                          ("work", "fails", "hangs", "lost_reply", "comp_work", "comp_fails", "comp_hangs")}
        return self._flat


@dataclass
class SagaRun:
    status: np.ndarray  # COMPLETED / FAILED / DEAD
    effects: np.ndarray  # bitmask of resources left at the end
    arrival: np.ndarray
    end: np.ndarray
    coordination_s: np.ndarray  # message hops and durable writes waited on
    compensation_s: np.ndarray  # from the decision to compensate to the end (NaN if none)
    wasted_work_s: np.ndarray  # step work whose result was not used (failed, hung, re-run)
    attempts: np.ndarray
    resumes: np.ndarray  # restarts from the log after a crash
    partial_at_end: np.ndarray  # invariant violated when the workflow ended
    abandoned: np.ndarray  # a compensation exhausted its retries: a human must finish it
    log_appends: int
    all_effects: int


class _Engine:
    def __init__(self, cfg: SagaConfig, d: Draws):
        self.cfg, self.d = cfg, d
        self.env = simpy.Environment()
        n, k, a = d.work.shape
        self.n, self.k, self.slots = n, k, a
        self.all = (1 << k) - 1
        self.log = DurableLog()
        self.slots_res = simpy.Resource(self.env, capacity=cfg.training_slots)
        self.eff = [0] * n  # resources per workflow (bit k: step k's), as Python ints
        self.status = np.full(n, DEAD, dtype=np.int8)
        self.end = np.full(n, np.nan)
        self.coord = np.zeros(n)
        self.comp_s = np.full(n, np.nan)
        self.wasted = np.zeros(n)
        self.attempts = np.zeros(n, dtype=np.int64)
        self.resumes = np.zeros(n, dtype=np.int64)
        self.partial = np.zeros(n, dtype=bool)
        m = cfg.mode
        # hops and durable writes per attempt, and at the start of a workflow (see module docstring)
        self.hops = {"no_saga": 2, "orchestration": 2, "choreography": 1}[m]
        self.writes = {"no_saga": 0, "orchestration": 2, "choreography": 1}[m]
        self.start_writes = {"no_saga": 0, "orchestration": 1, "choreography": 1}[m]
        self.end_writes = 1 if m == "orchestration" else 0
        self.attempt_cost = (d.hop[..., :self.hops].sum(-1) + d.append[..., :self.writes].sum(-1)).ravel().tolist()
        self.draw = d.flat()
        self.abandoned = np.zeros(n, dtype=bool)

    # -------------------------------------------------------------- pieces
    def _cost(self, i: int, k: int, a: int) -> float:
        c = self.attempt_cost[(i * self.k + k) * self.slots + a % self.slots]
        self.coord[i] += c
        return c

    def _attempt(self, i: int, k: int, a: int, compensation: bool = False, extra: float = 0.0):
        """One attempt of step (or compensation) k; returns True on a reply of success.

        ``extra`` is coordination time paid with it (the workflow's first or last durable write)."""
        d, env = self.draw, self.env
        j = (i * self.k + k) * self.slots + a % self.slots
        timeout = self.cfg.start_to_close_timeout
        if compensation:
            work, fails, hangs, lost = d["comp_work"][j], d["comp_fails"][j], d["comp_hangs"][j], False
        else:
            work, fails, hangs, lost = d["work"][j], d["fails"][j], d["hangs"][j], d["lost_reply"][j]
        too_slow = work > timeout
        busy = timeout if (hangs or too_slow) else work
        cost = self._cost(i, k, a) + extra
        if k == self.cfg.training_step and not compensation:  # a bulkhead: training_slots at a time
            with self.slots_res.request() as slot:  # (the slot is held for the messages too)
                yield slot
                yield env.timeout(cost + busy)
        else:
            yield env.timeout(cost + busy)
        done = (hangs and lost and not too_slow) if (hangs or too_slow) else not fails
        if done:  # the work happened (for a lost reply, nobody was told)
            self.eff[i] = self.eff[i] & ~(1 << k) if compensation else self.eff[i] | (1 << k)
        ok = done and not hangs
        if not ok and not compensation:
            self.wasted[i] += busy
        return ok

    def _resume(self, i: int):
        """Wait for the coordinator to restart, then read the workflow back from its log."""
        env = self.env
        up = self.d.crashes.up_at(env.now)
        if up > env.now:
            yield env.timeout(up - env.now)
        self.resumes[i] += 1
        if self.cfg.mode == "orchestration":  # one durable read of the history
            yield env.timeout(float(self.d.append[i, 0, self.resumes[i] % self.slots, 0]))
        return replay(self.log.history(i))

    def _record(self, i: int, st: WorkflowState | None, kind: str, step: int = -1) -> None:
        self.log.append(i, kind, step)
        if st is not None:
            st.apply(kind, step)

    def _finish(self, i: int, status: int) -> None:
        self.status[i], self.end[i] = status, self.env.now
        e = self.eff[i]
        self.partial[i] = (e != 0 and e != self.all) or ((status == COMPLETED) != (e == self.all))

    # -------------------------------------------------------------- no saga
    def no_saga(self, i: int):
        env, crashes = self.env, self.d.crashes
        up = crashes.up_at(env.now)
        if up > env.now:
            yield env.timeout(up - env.now)
        for k in range(self.k):
            a = 0
            while True:
                a += 1
                self.attempts[i] += 1
                t0 = env.now
                ok = yield from self._attempt(i, k, a - 1)
                if crashes.crashed_in(t0, env.now):
                    return self._finish(i, DEAD)  # the script died; nobody resumes it
                if ok:
                    break
                if not self.cfg.retry_without_saga or self.cfg.retry.gives_up(a):
                    return self._finish(i, FAILED)
                t0 = env.now
                yield env.timeout(self.cfg.retry.interval(a))
                if crashes.crashed_in(t0, env.now):
                    return self._finish(i, DEAD)
        self._finish(i, COMPLETED)

    # -------------------------------------------------------------- sagas
    def saga(self, i: int):
        env, crashes, cfg = self.env, self.d.crashes, self.cfg
        up = crashes.up_at(env.now)
        if up > env.now:
            yield env.timeout(up - env.now)
        st = WorkflowState()
        extra = float(self.d.append[i, 0, self.slots - 1, :self.start_writes].sum())  # paid with the first attempt
        self.coord[i] += extra
        self._record(i, st, "workflow_started")
        comp_start = None
        while st.finished is None:
            if not st.compensating:
                k = st.next_step
                if k == self.k:
                    end_cost = float(self.d.append[i, self.k - 1, self.slots - 1, :self.end_writes].sum())
                    self.coord[i] += end_cost
                    if end_cost > 0:
                        yield env.timeout(end_cost)
                    self._record(i, st, "completed")
                    break
                if cfg.add_compensation == "before_step" and k not in st.compensations:
                    self._record(i, st, "compensation_added", k)  # same durable write as the schedule
                self._record(i, st, "step_scheduled", k)
                a = st.attempts[k]
                self.attempts[i] += 1
                t0 = env.now
                ok = yield from self._attempt(i, k, a - 1, extra=extra)
                extra = 0.0
                if crashes.crashed_in(t0, env.now):
                    if ok:
                        self.wasted[i] += self.draw["work"][(i * self.k + k) * self.slots + (a - 1) % self.slots]
                    st = yield from self._resume(i)  # the reply died with the coordinator: run it again
                    continue
                if ok:
                    if cfg.add_compensation == "after_step":
                        self._record(i, st, "compensation_added", k)
                    self._record(i, st, "step_completed", k)
                elif cfg.retry.gives_up(a):
                    self._record(i, st, "step_failed", k)
                else:
                    t0 = env.now
                    yield env.timeout(cfg.retry.interval(a))  # a durable timer: it survives a crash
                    if crashes.crashed_in(t0, env.now):
                        st = yield from self._resume(i)
                continue
            comp_start = env.now if comp_start is None else comp_start
            pending = st.pending_compensations()
            if not pending:
                self._record(i, st, "abandoned" if st.gave_up else "compensated")
                break
            if cfg.parallel_compensation and cfg.mode == "orchestration":
                procs = [env.process(self._compensate(i, k, st, wait_out_crash=True)) for k in pending]
                yield env.all_of(procs)
                continue  # every pending one is now done or given up
            outcome = yield from self._compensate(i, pending[0], st, wait_out_crash=False)
            if outcome is None:
                st = yield from self._resume(i)
            elif outcome is False and not cfg.continue_with_error:
                self._record(i, st, "abandoned")  # Temporal: the first failing compensation stops the rest
        if comp_start is not None:
            self.comp_s[i] = env.now - comp_start
        self.abandoned[i] = st.finished == "abandoned"
        self._finish(i, COMPLETED if st.finished == "completed" else FAILED)

    def _compensate(self, i: int, k: int, st: WorkflowState, wait_out_crash: bool):
        """Retry one compensation: True when done, False when it exhausted its attempts (logged),
        None when the coordinator crashed meanwhile (unless ``wait_out_crash``: then wait and re-run it)."""
        env, crashes, cfg = self.env, self.d.crashes, self.cfg
        while True:
            self._record(i, st, "compensation_scheduled", k)
            a = st.comp_attempts[k]
            t0 = env.now
            ok = yield from self._attempt(i, k, a - 1, compensation=True)
            if crashes.crashed_in(t0, env.now):
                if not wait_out_crash:
                    return None
                up = crashes.up_at(env.now)
                if up > env.now:
                    yield env.timeout(up - env.now)
                self.resumes[i] += 1
                continue  # run it again: undoing is idempotent
            if ok:
                self._record(i, st, "compensation_completed", k)
                return True
            if cfg.retry.gives_up(a):
                self._record(i, st, "compensation_gave_up", k)
                return False
            t0 = env.now
            yield env.timeout(cfg.retry.interval(a))
            if crashes.crashed_in(t0, env.now):
                if not wait_out_crash:
                    return None
                up = crashes.up_at(env.now)
                if up > env.now:
                    yield env.timeout(up - env.now)

    def run(self) -> SagaRun:
        handler = self.no_saga if self.cfg.mode == "no_saga" else self.saga
        env, arrivals = self.env, self.d.arrivals

        def source():
            for i, t in enumerate(arrivals):
                if t > env.now:
                    yield env.timeout(t - env.now)
                env.process(handler(i))

        env.process(source())
        env.run()
        return SagaRun(self.status, np.array(self.eff, dtype=np.int64), arrivals, self.end, self.coord, self.comp_s, self.wasted,
                       self.attempts, self.resumes, self.partial, self.abandoned, self.log.appends, self.all)


def run_workflows(cfg: SagaConfig, draws: Draws) -> SagaRun:
    """Run every workflow of ``draws`` in ``cfg.mode`` until all have ended (or died)."""
    return _Engine(cfg, draws).run()
