"""Q28: releasing a model version with Recreate, a Kubernetes rolling update, or Argo-style blue-green.

Eight replicas serve Poisson requests from one queue (``sim.rollout``). A minute in, a new
version is released: Recreate deletes every old pod first; the rolling update follows
max_surge / max_unavailable and readiness; blue-green brings a full green set up, switches
the active service, and keeps blue for scale_down_delay_seconds. An error-rate analysis over
tumbling windows of the new version's answers aborts a bad release: rolling back is another
rolling update, a recreate, or (while blue still runs) one switch back. All three arms share
arrivals, service times, error draws and model load times, replication by replication. Shadow
traffic compares two real trained models on the held-out digits (``sim.shadow``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sim.rollout import ERROR, NO_REPLICA, TIMEOUT, Config, run_strategy, summarize
from sim.rng import Streams
from sim.shadow import PAIRS, shadow_pair

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .kit import arrival_rate, request_budget, window_s
from .measure import Measurements

FAILED = (ERROR, NO_REPLICA, TIMEOUT)
ARMS = {"recreate": "recreate", "baseline": "rolling", "pattern": "blue_green"}
CFG_FIELDS = ("replicas", "max_surge", "max_unavailable", "min_ready_seconds", "period_seconds",
              "scale_down_delay_seconds", "abort_scale_down_delay_seconds", "switch_delay_s", "queue_timeout_s",
              "analysis_interval_s", "analysis_count", "error_threshold_pct")


def _not_both_zero(p) -> str | None:
    if p.max_surge == 0 and p.max_unavailable == 0:
        return "> 0 when max_surge is 0 (Kubernetes refuses both at zero)"
    return None


def _rollout_inside(p) -> str | None:
    w = window_s(p)
    return None if p.rollout_start_s < w else f"< {w:g} s, inside the window requests / rate_rps"


class BlueGreenLab(Lab):
    id = "q28"
    headline = ("pattern", "rollback_time_s")
    refine_param = "replications"
    arms = (Arm("recreate", "Recreate", "every old pod is deleted, then the new ones start: downtime while models load"),
            Arm("baseline", "Rolling update", "Kubernetes RollingUpdate: pods replaced a few at a time, gated on readiness"),
            Arm("pattern", "Blue-green", "Argo Rollouts: full green set, one selector switch, blue kept for a while"))
    assumptions = (
        "A new pod's start, image pull and model load take one lognormal time (mean model_load_s, cv load_cv).",
        "A pod serves one request at a time (exponential, mean 1 / replica_rps); requests share one queue.",
        "A request fails when no routed pod is ready, after waiting queue_timeout_s, or when a bad version "
        "answers it (bad_error_pct of its answers); the old version never errs.",
        "Blue-green brings green up at full size (preview_replica_count = 100%, Argo's previewReplicaCount default) and a bad version shows its "
        "errors only on live traffic, so it is caught after the switch.",
        "The analysis reads tumbling windows of the new version's answers (failureLimit 0, min 10 answers).",
        "Metrics are means over replications (t intervals); each replication runs until every arm is done + 60 s.",
    )
    rules = (Rule("max_unavailable", ("max_unavailable", "max_surge"), _not_both_zero),
             Rule("rollout_start_s", ("rollout_start_s", "requests", "rate_rps"), _rollout_inside))
    params = (
        arrival_rate(3.0, 0.2, 40.0, key=False),
        request_budget(12000, 2000, 200000),
        Param("replications", 4, 2, 30, help="independent replications (arrivals, loads, errors) per arm"),
        Param("replicas", 8, 2, 40, unit="pods", help="replicas the deployment keeps at steady state"),
        Param("replica_rps", 0.45, 0.01, 50.0, unit="req/s", help="requests per second one replica answers"),
        Param("model_load_s", 120.0, 0.0, 900.0, unit="s", key=True,
              help="mean time from pod creation to a loaded model (start + pull + load)"),
        Param("load_cv", 0.25, 0.0, 1.0, help="coefficient of variation of the load time"),
        Param("max_surge", 25.0, 0.0, 100.0, unit="% of replicas", key=True,
              help="extra pods a rolling update may add, rounded up (Kubernetes default 25%)"),
        Param("max_unavailable", 25.0, 0.0, 100.0, unit="% of replicas",
              help="pods a rolling update may take away, rounded down (Kubernetes default 25%)"),
        Param("min_ready_seconds", 0.0, 0.0, 600.0, unit="s", help="ready this long before a pod counts (default 0)"),
        Param("period_seconds", 10.0, 1.0, 120.0, unit="s", help="readiness probe period (Kubernetes default 10 s)"),
        Param("scale_down_delay_seconds", 30.0, 0.0, 3600.0, unit="s", key=True,
              help="blue is kept this long after the switch (Argo default 30 s)"),
        Param("abort_scale_down_delay_seconds", 30.0, 0.0, 3600.0, unit="s",
              help="an aborted green is kept this long (Argo default 30 s)"),
        Param("switch_delay_s", 2.0, 0.0, 60.0, unit="s", help="time for a selector change to reach every router"),
        Param("new_version", "bad", choices=("bad", "good"), key=True,
              help="bad: the release errs and must be rolled back; good: nothing to roll back (control)"),
        Param("bad_error_pct", 20.0, 1.0, 100.0, unit="%", help="share of a bad version's answers that are errors"),
        Param("analysis_interval_s", 60.0, 5.0, 1800.0, unit="s", key=True,
              help="analysis window: the new version's error rate is judged at the end of each"),
        Param("analysis_count", 5, 1, 30, help="windows the analysis watches before it passes the release"),
        Param("error_threshold_pct", 5.0, 0.1, 100.0, unit="%", help="a window at or above this error rate aborts"),
        Param("queue_timeout_s", 10.0, 0.1, 300.0, unit="s", help="a request waiting longer for a replica fails"),
        Param("rollout_start_s", 60.0, 0.0, 3600.0, unit="s", help="when the release starts"),
        Param("shadow_pair", "mlp_vs_logreg", choices=tuple(PAIRS),
              help="live vs candidate real models compared on mirrored (held-out) digits"),
    )
    parts = {"shadow": ("shadow_pair",)}
    exercises = (
        Exercise("Keep blue for ten minutes after the switch (scale_down_delay_seconds = 600). How long does the "
                 "blue-green rollback take now?", {"scale_down_delay_seconds": 600.0}, ("pattern", "rollback_time_s"),
                 why="Rolling back to blue is a traffic switch only while blue's pods still run; a ten-minute "
                 "scale-down delay keeps them warm, so rollback no longer has to wait for pods to start and load "
                 "the model."),
        Exercise("Let the rolling update only add pods (max_unavailable = 0). Predict its degraded minutes.",
                 {"max_unavailable": 0.0}, ("baseline", "degraded_min"),
                 why="With max_unavailable = 0 the rolling update only adds a new pod before removing an old one, so "
                 "serving capacity never drops below the full count."),
        Exercise("Make models load in 10 s instead of 120 s. How much downtime does Recreate still cause?",
                 {"model_load_s": 10.0}, ("recreate", "downtime_s"),
                 why="Recreate stops every old pod before starting the new ones, so its downtime is pod start plus "
                 "model load: a faster model load shortens it almost one for one."),
    )

    def prepare(self, seed: int = 0) -> None:
        self.part("shadow", seed, self.settings())

    def part_shadow(self, seed: int, p) -> dict:
        return shadow_pair(p.shadow_pair)

    def simulate(self, seed: int, p) -> Outcome:
        cfg = Config(**{k: p[k] for k in CFG_FIELDS})
        streams, horizon = Streams(seed), window_s(p)
        per_arm = {arm: [] for arm in ARMS}
        logs = {}
        for k in range(p.replications):
            arrivals = np.cumsum(streams[f"arrivals/{k}"].exponential(1 / p.rate_rps, p.requests))
            shared = dict(arrivals=arrivals, service=streams[f"service/{k}"].exponential(1 / p.replica_rps, p.requests),
                          bad=streams[f"errors/{k}"].random(p.requests) < p.bad_error_pct / 100,
                          route=streams[f"route/{k}"].random(p.requests), load_times=_loads(streams, k, p),
                          rollout_at=p.rollout_start_s, new_is_bad=p.new_version == "bad", horizon=horizon)
            for arm, strategy in ARMS.items():
                r = run_strategy(strategy, cfg, **shared)
                per_arm[arm].append(_replication(r, p))
                if k == 0:
                    logs[arm] = r
        m = Measurements((*ARMS, "comparison"))
        for arm, reps in per_arm.items():
            _record(m, arm, reps, p, horizon)
        sh = self.part("shadow", seed, p)
        m.share("pattern", "shadow_disagreement_pct", sh["disagree"], sh["n"])
        m.share("pattern", "validation_coverage_pct", sh["passed"], sh["tests"])
        m.value("pattern", "candidate_accuracy_pct", 100 * sh["candidate_accuracy"])
        peak = m.interval("pattern", "peak_pods")
        m.value("comparison", "peak_capacity_x", peak.estimate / p.replicas,
                (peak.low / p.replicas, peak.high / p.replicas) if np.isfinite(peak.low) else None)
        m.ratio("comparison", "replica_hours_x", ("pattern", "replica_hours"), ("baseline", "replica_hours"))
        series = {"serving": pd.concat([_timeline(arm, r, p) for arm, r in logs.items()], ignore_index=True),
                  "failures": pd.concat([_failures(arm, r) for arm, r in logs.items()], ignore_index=True)}
        ends = max(r["end"] for r in logs.values())
        notes = [f"{p.replications} replications; each runs until every arm has finished its release and any "
                 f"rollback, + 60 s (replication 1: {ends:g} s, at most {horizon:g} s = requests / rate_rps).",
                 f"Shadow: {sh['live']} live vs {sh['candidate']} mirrored on {sh['n']} held-out digits."]
        return Outcome(m, series, notes=notes, extras={"need": p.rate_rps / p.replica_rps})

    def plots(self, result):
        from .plotting import line_chart

        need = [("y", result.extras["need"], "replicas the load needs")] if "need" in result.extras else []
        return [line_chart(result.series["serving"], "time_s", "serving", "Ready replicas taking traffic "
                           "(replication 1)", "time (s)", "replicas", rules=need),
                line_chart(result.series["failures"], "time_s", "failed", "Failed requests per 10 s (replication 1)",
                           "time (s)", "failed requests")]


def _loads(streams: Streams, k: int, p) -> np.ndarray:
    """Per-pod load times, the i-th pod created in any arm getting the i-th draw."""
    n = 8 * p.replicas + 8
    if p.load_cv == 0:
        return np.full(n, p.model_load_s)
    s2 = np.log1p(p.load_cv ** 2)
    return p.model_load_s * streams[f"load/{k}"].lognormal(-s2 / 2, np.sqrt(s2), n)


def _replication(r: dict, p) -> dict:
    dep, log, end = r["deployment"], r["requests"], r["end"]
    seen = log.arrival < end
    out = {"finished": r["finished"], "n": int(seen.sum()),
           "failed": int(np.sum(seen & np.isin(log.outcome, FAILED))),
           "detected": dep.detected_at - dep.first_new_at,
           "rollback": dep.rollback_done_at - dep.detected_at}
    out.update(summarize(dep, end, p.rate_rps, p.replica_rps, p.rollout_start_s))
    release = summarize(dep, dep.done_at if r["finished"] else end, p.rate_rps, p.replica_rps, p.rollout_start_s)
    out["replica_hours"] = release["replica_hours"]
    return out


def _record(m: Measurements, arm: str, reps: list[dict], p, horizon: float) -> None:
    if not all(r["finished"] for r in reps):
        why = (f"the release did not finish inside the window requests / rate_rps = {horizon:g} s; raise requests")
        for key in ("downtime_s", "degraded_min", "failed_requests", "failed_pct", "rollback_time_s",
                    "detection_s", "replica_hours", "peak_pods", "peak_capacity_x"):
            m.missing(arm, key, why)
        return
    col = lambda k: [r[k] for r in reps]  # noqa: E731
    m.mean(arm, "downtime_s", col("downtime_s"))
    m.mean(arm, "degraded_min", [x / 60 for x in col("degraded_s")])
    m.mean(arm, "failed_requests", col("failed"))
    m.share(arm, "failed_pct", sum(col("failed")), sum(col("n")))
    m.mean(arm, "replica_hours", col("replica_hours"))
    m.mean(arm, "peak_pods", col("peak_pods"))
    m.value(arm, "peak_capacity_x", max(col("peak_pods")) / p.replicas)
    if p.new_version == "good":
        why = "the new version passed its analysis: nothing was rolled back (good version)"
        m.missing(arm, "rollback_time_s", why), m.missing(arm, "detection_s", why)
        return
    det = [x for x in col("detected") if np.isfinite(x)]
    m.mean(arm, "detection_s", det, missing="the analysis never caught the bad version (too few answers per window)")
    rb = col("rollback")
    if len(det) < len(reps) or not all(np.isfinite(rb)):
        m.missing(arm, "rollback_time_s", "in some replication the bad version was not caught, or its rollback "
                  "did not finish")
    else:
        m.mean(arm, "rollback_time_s", rb)


def _timeline(arm: str, r: dict, p) -> pd.DataFrame:
    df = r["deployment"].timeline.frame()
    df = pd.concat([df, df.iloc[[-1]].assign(time_s=r["end"])], ignore_index=True)
    t = np.repeat(df["time_s"].to_numpy(), 2)[1:]
    v = np.repeat((df["serving_old"] + df["serving_new"]).to_numpy(), 2)[:-1]
    return pd.DataFrame({"time_s": t, "serving": v, "arm": arm})


def _failures(arm: str, r: dict, width: float = 10.0) -> pd.DataFrame:
    log, end = r["requests"], r["end"]
    bins = np.arange(0.0, end + width, width)
    failed = (log.arrival < end) & np.isin(log.outcome, FAILED)
    counts, _ = np.histogram(log.arrival[failed], bins=bins)
    return pd.DataFrame({"time_s": bins[:-1], "failed": counts, "arm": arm})


LAB = BlueGreenLab()
