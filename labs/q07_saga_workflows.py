"""Q7: a saga around a five-step ML workflow (prepare data, train, evaluate, register, deploy).

The steps are real: ``sim.ml_pipeline`` trains a LogisticRegression on a digits subset and
times every step; a SimPy engine (``sim.saga``) draws each attempt's service time from those
measurements, so a retried or re-run training costs what training costs. Attempts fail, hang
until their timeout, and the coordinator crashes (Poisson) and restarts. Three arms share every
random draw: a plain script (no saga), an orchestrator with a durable log replayed on restart
(Temporal's Saga: retries, compensations in reverse order) and choreography (services react to
each other's events). At each workflow's end its resources must be all there or all gone.
Coordination cost = message hops (assumed) + durable writes (assumed round trip + measured fsync).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sim.components import poisson_arrivals
from sim.ml_pipeline import STEPS, measure_steps, quantile_times, reference_steps
from sim.rng import Streams
from sim.saga import COMPLETED, DEAD, FAILED, CrashSchedule, Draws, RetryPolicy, SagaConfig, run_workflows

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .measure import Measurements

MODES = {"baseline": "no_saga", "pattern": "orchestration", "choreography": "choreography"}
SLOTS = 10  # attempt draws per step; attempts beyond this reuse them


def _lognormal(rng, mean: float, cv: float, shape) -> np.ndarray:
    s2 = np.log1p(cv * cv)
    return rng.lognormal(np.log(max(mean, 1e-12)) - s2 / 2, np.sqrt(s2), shape) if mean > 0 else np.zeros(shape)


def _probs_fit(p) -> str | None:
    if p.step_failure_prob + p.step_timeout_prob <= 1.0:
        return None
    return f"a number in [0, {1 - p.step_timeout_prob:g}] so that failure + timeout probabilities are at most 1"


class SagaWorkflowsLab(Lab):
    id = "q07"
    headline = ("baseline", "stuck_workflows_pct")
    refine_param = "workflows"
    arms = (Arm("baseline", "No saga", "a script runs the steps once; a failure or crash leaves what it made"),
            Arm("pattern", "Orchestration", "a coordinator with a durable log: retries, replay, reverse compensations"),
            Arm("choreography", "Choreography", "services react to events; a failure sends compensation events back"),
            Arm("comparison", "Between arms", "coordination milliseconds per workflow over the plain script"))
    assumptions = (
        "Step service times are the committed measurement data/profiles/saga_steps.json (or this machine's), "
        "drawn by quantile so every arm sees the same time for the same attempt.",
        "A step's effect is one resource (data, model file, report, registry entry, deployment); undoing it is "
        "idempotent; a workflow is consistent when all five exist (completed) or none do (failed).",
        "Stuck = a human must act: the workflow died in flight, ended with part of its resources, or gave up "
        "compensating.",
        "The coordinator crashes as a Poisson process (crashes_per_hour) and is down restart_s; the plain script "
        "dies for good, the orchestrator replays its log and re-runs the unacknowledged step, choreography "
        "consumers get the event again.",
        "Per attempt: the script and the orchestrator pay two message hops, choreography one; the orchestrator "
        "writes its log twice, choreography once; each write costs persistence_ms plus a measured local fsync.",
        "compensation_rate_pct is an exact tally over the run's failed workflows (the claim says every one), so "
        "it has no sampling interval; failed_workflows gives its size.",
    )
    rules = (Rule("step_failure_prob", ("step_failure_prob", "step_timeout_prob"), _probs_fit),)
    params = (
        Param("workflows", 2000, 200, 30000, unit="workflows", help="workflows started per arm (Poisson arrivals)"),
        Param("rate_per_s", 5.0, 0.1, 100.0, unit="1/s", help="workflow start rate"),
        Param("step_failure_prob", 0.03, 0.0, 1.0, unit="prob", key=True,
              help="chance that one attempt of a step (or of an undo) returns an error"),
        Param("step_timeout_prob", 0.005, 0.0, 1.0, unit="prob",
              help="chance that an attempt never replies, so the caller waits out its timeout"),
        Param("lost_reply_share", 0.0, 0.0, 1.0, unit="share",
              help="share of hung attempts whose work was done although no reply came back"),
        Param("crashes_per_hour", 60.0, 0.0, 3600.0, unit="1/h", key=True,
              help="coordinator crashes (the script, the orchestrator, or the event consumers)"),
        Param("restart_s", 10.0, 0.0, 600.0, unit="s", help="time for the coordinator to come back after a crash"),
        Param("maximum_attempts", 3, 1, 10, unit="attempts", key=True,
              help="attempts per step and per undo (Temporal RetryPolicy; its default is unlimited)"),
        Param("initial_interval_s", 1.0, 0.0, 60.0, unit="s", help="first retry wait (Temporal default 1 s)"),
        Param("backoff_coefficient", 2.0, 1.0, 10.0, help="retry wait growth per attempt (Temporal default 2)"),
        Param("start_to_close_timeout_s", 2.0, 0.01, 600.0, unit="s", help="per-attempt timeout of every step"),
        Param("add_compensation", "after_step", choices=("after_step", "before_step"), key=True,
              help="register a step's undo after it succeeds (Temporal samples) or before it runs"),
        Param("parallel_compensation", False, help="orchestrator fires all undos at once (Temporal default false)"),
        Param("retry_without_saga", False, help="give the plain script the same retries (still no compensation)"),
        Param("training_slots", 4, 1, 64, unit="slots", help="trainings that may run at once (a bulkhead)"),
        Param("message_hop_ms", 2.0, 0.0, 100.0, unit="ms", help="mean one-way message or event delivery time"),
        Param("persistence_ms", 1.0, 0.0, 100.0, unit="ms", key=True,
              help="round trip of one durable log write to the coordinator's database (fsync added, measured)"),
        Param("compensation_ms", 5.0, 0.0, 10000.0, unit="ms", help="time to undo one step (delete, unregister)"),
        Param("step_times", "reference", choices=("reference", "this_machine"),
              help="step times: the committed measurement or timed now on this machine"),
    )
    exercises = (
        Exercise("Let a hung step often do its work anyway (lost_reply_share = 1, step_timeout_prob = 0.1). "
                 "How many orchestrated workflows are now stuck?",
                 {"lost_reply_share": 1.0, "step_timeout_prob": 0.1}, ("pattern", "stuck_workflows_pct"),
                 why="When a reply is lost after the step did its work, a timed-out step is retried or compensated "
                 "while its effect stays in place; an undo registered only after success never runs for it."),
        Exercise("Same lost replies, but register each undo before its step runs. What happens to stuck workflows?",
                 {"lost_reply_share": 1.0, "step_timeout_prob": 0.1, "add_compensation": "before_step"},
                 ("pattern", "stuck_workflows_pct"),
                 why="Registering the undo before the step runs means a lost reply still has a compensation on "
                 "record, so the saga can always roll the workflow back."),
        Exercise("Give the plain script the same three attempts per step. How many workflows does it leave stuck?",
                 {"retry_without_saga": True}, ("baseline", "stuck_workflows_pct"),
                 why="Most stuck scripts were stopped by a transient failure; three attempts per step clear most of "
                 "those without any saga, so only the persistent failures remain."),
        Exercise("Put the log on a slower database (persistence_ms = 10). What does orchestration now cost?",
                 {"persistence_ms": 10.0}, ("comparison", "coordination_latency_ms"),
                 why="The orchestrator writes its log before and after every step, so its coordination cost is the "
                 "number of steps × 2 writes × the write latency: a tenfold slower write shows up almost one for "
                 "one."),
    )

    def profile(self, p) -> dict:
        return reference_steps() if p.step_times == "reference" else measure_steps()

    def draws(self, seed: int, p) -> Draws:
        s, n, k, shape = Streams(seed), p.workflows, len(STEPS), (p.workflows, len(STEPS), SLOTS)
        prof = self.profile(p)
        u = s["work"].random(shape)
        work = np.stack([quantile_times(prof["steps"][name], u[:, j]) for j, name in enumerate(STEPS)], axis=1)
        o, oc = s["outcome"].random(shape), s["undo_outcome"].random(shape)
        f, t = p.step_failure_prob, p.step_timeout_prob
        fsync = quantile_times(prof["log_append"]["fsync"], s["fsync"].random(shape + (2,)))
        arrivals = poisson_arrivals(s["arrivals"], p.rate_per_s, n)
        horizon = float(arrivals[-1]) + 3600.0
        crashes = np.sort(s["crashes"].uniform(0, horizon, s["crash_count"].poisson(p.crashes_per_hour * horizon / 3600)))
        return Draws(arrivals=arrivals, work=work, fails=o < f, hangs=(o >= f) & (o < f + t),
                     lost_reply=s["lost"].random(shape) < p.lost_reply_share,
                     comp_work=np.full(shape, p.compensation_ms / 1e3), comp_fails=oc < f,
                     comp_hangs=(oc >= f) & (oc < f + t),
                     hop=_lognormal(s["hop"], p.message_hop_ms / 1e3, 0.5, shape + (2,)),
                     append=_lognormal(s["append"], p.persistence_ms / 1e3, 0.5, shape + (2,)) + fsync,
                     crashes=CrashSchedule(crashes, p.restart_s))

    def simulate(self, seed: int, p) -> Outcome:
        d = self.draws(seed, p)
        retry = RetryPolicy(p.initial_interval_s, p.backoff_coefficient, None, p.maximum_attempts)
        runs = {arm: run_workflows(SagaConfig(mode, retry, p.start_to_close_timeout_s, p.add_compensation,
                                              p.parallel_compensation, False, p.retry_without_saga,
                                              p.training_slots), d)
                for arm, mode in MODES.items()}
        m, n = Measurements(tuple(self.arm_names)), p.workflows
        for arm, r in runs.items():
            done, failed = r.status == COMPLETED, r.status != COMPLETED
            ended_clean = (r.status != DEAD) & ~r.partial_at_end & ~r.abandoned
            stuck = (r.status == DEAD) | r.partial_at_end | r.abandoned
            m.share(arm, "stuck_workflows_pct", stuck.sum(), n)
            m.share(arm, "success_rate_pct", done.sum(), n)
            m.share(arm, "consistent_outcomes_pct", ended_clean.sum(), n)
            nf = int(failed.sum())
            m.value(arm, "compensation_rate_pct", 100.0 * (failed & (r.effects == 0) & ~r.abandoned).sum() / nf
                    if nf else np.nan, missing="no workflow failed at these settings: nothing to compensate")
            m.value(arm, "failed_workflows", float(nf))
            m.value(arm, "partial_states", float(r.partial_at_end.sum()))
            m.value(arm, "dead_workflows", float((r.status == DEAD).sum()))
            m.percentiles(arm, (r.end - r.arrival)[done], (50, 99), missing="no workflow completed")
            m.mean(arm, "coordination_ms", 1e3 * r.coordination_s[done], missing="no workflow completed")
            comp = r.compensation_s[failed & np.isfinite(r.compensation_s)]
            m.mean(arm, "compensation_ms", 1e3 * comp, missing="no workflow was compensated")
            m.value(arm, "wasted_work_s", float(r.wasted_work_s.sum()))
            m.value(arm, "resumes", float(r.resumes.sum()))
            m.value(arm, "log_writes_per_workflow", r.log_appends / n)
        both = (runs["baseline"].status == COMPLETED) & (runs["pattern"].status == COMPLETED) & \
               (runs["choreography"].status == COMPLETED)
        base = runs["baseline"].coordination_s[both]
        none = "no workflow completed in every arm"
        m.mean("comparison", "coordination_latency_ms", 1e3 * (runs["pattern"].coordination_s[both] - base), none)
        m.mean("comparison", "choreography_coordination_ms",
               1e3 * (runs["choreography"].coordination_s[both] - base), none)
        m.mean("comparison", "orchestration_over_choreography_ms",
               1e3 * (runs["pattern"].coordination_s[both] - runs["choreography"].coordination_s[both]), none)
        m.saving_pct("comparison", "stuck_reduction_pct", ("pattern", "stuck_workflows_pct"),
                     ("baseline", "stuck_workflows_pct"), missing="the baseline left nothing stuck: nothing to reduce")
        series = {"outcomes": _outcomes(runs), "timeline": _timeline(runs, d)}
        med = {s: 1e3 * float(np.median(self.profile(p)["steps"][s])) for s in STEPS}
        notes = [f"{n} workflows per arm over {d.arrivals[-1]:.0f} s; {d.crashes.times.size} coordinator crashes "
                 f"in the window; step medians (ms): " + ", ".join(f"{s} {v:.1f}" for s, v in med.items()) + ".",
                 "Stuck, success and consistency are shares of all started workflows (Wilson 95% intervals); "
                 "coordination is per completed workflow, over the plain script."]
        return Outcome(m, series, notes=notes)

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        bars = bar_chart(result.series["outcomes"], "outcome", "share_pct", "Workflow outcomes by arm",
                         "% of workflows", color="arm")
        line = line_chart(result.series["timeline"], "time_s", "stuck_cum", "Workflows needing a human, cumulative",
                          "time (s)", "workflows")
        return [bars, line]


OUTCOMES = ("completed", "compensated", "partial state", "died in flight", "gave up undoing")


def _outcomes(runs) -> pd.DataFrame:
    rows = []
    for arm, r in runs.items():
        n = r.status.size
        kinds = {"completed": r.status == COMPLETED,
                 "compensated": (r.status == FAILED) & ~r.partial_at_end & ~r.abandoned,
                 "partial state": (r.status == FAILED) & r.partial_at_end & ~r.abandoned,
                 "died in flight": r.status == DEAD, "gave up undoing": r.abandoned}
        rows += [{"arm": arm, "outcome": k, "share_pct": 100.0 * v.sum() / n} for k, v in kinds.items()]
    return pd.DataFrame(rows)


def _timeline(runs, d: Draws) -> pd.DataFrame:
    frames = []
    for arm, r in runs.items():
        stuck = (r.status == DEAD) | r.partial_at_end | r.abandoned
        frames.append(pd.DataFrame({"arm": arm, "time_s": d.arrivals, "stuck_cum": np.cumsum(stuck)}))
    return pd.concat(frames, ignore_index=True).iloc[::10].reset_index(drop=True)


LAB = SagaWorkflowsLab()
