"""Q8: a circuit breaker (resilience4j semantics, ``sim.breaker``) in front of a model server.

Poisson callers reach a pool of replicas that, mid-run, either hang (no answer
until the caller's deadline) or fail fast. A refused or failed call answers from
a prediction cache when it can. Both arms share arrivals, service times and cache
draws; the breaker is the only difference. ``outage_mode = none`` is the control.
Outage-window metrics cover requests arriving during the outage window.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sim.breaker import CircuitBreaker, CircuitBreakerConfig, State
from sim.components import Outage, poisson_arrivals
from sim.dist import Lognormal
from sim.guarded_calls import simulate_guarded_calls
from sim.metrics import ERROR, FALLBACK, OK, windowed
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param
from .kit import OUTAGE_RULES, arrival_rate, outage_params, request_budget, window_s
from .measure import Measurements

R4J = CircuitBreakerConfig.resilience4j_defaults()
BREAKER = ("failure_rate_threshold", "slow_call_rate_threshold", "slow_call_duration_threshold",
           "sliding_window_type", "sliding_window_size", "minimum_number_of_calls",
           "wait_duration_in_open_state", "permitted_number_of_calls_in_half_open_state")
# what a call reads apart from the breaker: the load, the servers, the outage and the caller's side
CALL = ("rate_rps", "requests", "replicas", "caller_threads", "service_ms", "network_ms", "outage_mode",
        "outage_start_s", "outage_duration_s", "error_ms", "client_timeout_s", "fallback_ms", "cache_coverage")


def _r4j(name: str) -> str:
    v = getattr(R4J, name)
    return f"resilience4j default {v:g}" if isinstance(v, float) else f"resilience4j default {v}"


class CircuitBreakerLab(Lab):
    id = "q08"
    headline = ("pattern", "p99_ms")
    refine_param = "requests"
    arms = (Arm("baseline", "Timeouts only", "every call waits for an answer or for the caller's timeout"),
            Arm("pattern", "Circuit breaker", "resilience4j breaker: opens on failures, refuses calls, probes"))
    assumptions = (
        "Inference time is lognormal with a coefficient of variation of 1.",
        "A call gives up at its start + client_timeout_s; a replica already working on the call finishes it.",
        "Each request holds one of caller_threads worker threads from arrival to answer; hung calls hold theirs.",
        "A refused or failed call answers from the prediction cache when the request has an entry there.",
    )
    rules = OUTAGE_RULES
    params = (
        arrival_rate(20.0, 1.0, 400.0),
        request_budget(5000, 1000, 200000),
        Param("replicas", 4, 1, 64, unit="replicas", help="model-server replicas behind one queue"),
        Param("caller_threads", 200, 1, 10000, unit="threads", key=True,
              help="worker threads of the calling service; a request waits for a free one (Tomcat's default 200)"),
        Param("service_ms", 20.0, 1.0, 2000.0, unit="ms", help="mean inference time (lognormal, cv 1)"),
        Param("network_ms", 2.0, 0.0, 500.0, unit="ms", help="round trip between caller and server"),
        *outage_params(60.0, 120.0),
        Param("error_ms", 5.0, 0.0, 10000.0, unit="ms", help="time for a failing call in error mode"),
        Param("client_timeout_s", 30.0, 0.01, 600.0, unit="s", key=True, help="caller gives up after this long"),
        Param("fallback_ms", 2.0, 0.0, 1000.0, unit="ms", help="time to answer from the prediction cache"),
        Param("cache_coverage", 0.9, 0.0, 1.0, unit="fraction",
              help="share of requests that have a cached prediction to fall back on"),
        Param("failure_rate_threshold", 50.0, 1.0, 100.0, unit="%", key=True,
              help=f"open when failure rate >= this ({_r4j('failure_rate_threshold')})"),
        Param("sliding_window_type", "TIME_BASED", choices=("TIME_BASED", "COUNT_BASED"),
              help=f"window over seconds or calls ({_r4j('sliding_window_type')})"),
        Param("sliding_window_size", 10, 1, 1000, unit="s or calls", help=f"window length ({_r4j('sliding_window_size')})"),
        Param("minimum_number_of_calls", 10, 1, 1000, unit="calls",
              help=f"no decision below this many calls ({_r4j('minimum_number_of_calls')})"),
        Param("wait_duration_in_open_state", 30.0, 0.1, 600.0, unit="s", key=True,
              help=f"cool-down before probing ({_r4j('wait_duration_in_open_state')} s)"),
        Param("permitted_number_of_calls_in_half_open_state", 2, 1, 100, unit="calls",
              help=f"probe calls in half-open ({_r4j('permitted_number_of_calls_in_half_open_state')})"),
        Param("slow_call_duration_threshold", 60.0, 0.01, 600.0, unit="s",
              help=f"a call slower than this is slow ({_r4j('slow_call_duration_threshold')} s)"),
        Param("slow_call_rate_threshold", 100.0, 1.0, 100.0, unit="%",
              help=f"open when slow-call rate >= this ({_r4j('slow_call_rate_threshold')})"),
    )
    exercises = (
        Exercise("Cut the client timeout from 30 s to 1 s. What happens to the breaker arm's P99 during the outage?",
                 {"client_timeout_s": 1.0}, ("pattern", "p99_ms"),
                 why="During a hang a call ends only when its caller gives up at the timeout. Calls admitted before the "
                 "breaker opens, and its half-open probes, each wait the full timeout, so the arm's P99 follows "
                 "the timeout: about 30 s before, about 1 s now."),
        Exercise("Make the outage fail fast (error mode) instead of hanging. How much caller time does the breaker "
                 "still save?", {"outage_mode": "error"}, ("comparison", "resource_savings_pct"),
                 why="A failing call that errors at once wastes almost no caller time, yet the breaker still skips "
                 "most of them; the saving is the share of calls it rejects, now measured against a cheap "
                 "failure."),
        Exercise("Use resilience4j's own defaults: a 100-call count window with minimum 100 calls, 60 s wait, "
                 "10 probes. How long after the outage starts does the breaker open?",
                 {"sliding_window_type": "COUNT_BASED", "sliding_window_size": 100, "minimum_number_of_calls": 100,
                  "wait_duration_in_open_state": 60.0, "permitted_number_of_calls_in_half_open_state": 10},
                 ("pattern", "time_to_open_s"),
                 why="A count window must fill with its minimum number of calls before any rate is computed, so the "
                 "breaker cannot open until that many calls have failed at the offered rate."),
    )

    # the timeouts-only arm reads no breaker setting: sweeps over the breaker's settings share it
    parts = {"baseline": CALL}
    part_cache_size = 24  # a 200k-request arm holds ~7 MB

    def part_baseline(self, seed: int, p) -> dict:
        return _simulate_arm("baseline", p, _draws(seed, p), _outage(p), None)

    def simulate(self, seed: int, p) -> Outcome:
        horizon, n = window_s(p), p.requests
        draws, outage = _draws(seed, p), _outage(p)
        breaker = CircuitBreaker(CircuitBreakerConfig(**{k: p[k] for k in BREAKER}), name="model-server")
        runs = {"baseline": self.part("baseline", seed, p),
                "pattern": _simulate_arm("pattern", p, draws, outage, breaker)}

        m = Measurements(("baseline", "pattern", "comparison"))
        in_outage = (draws["arrivals"] >= outage.start) & (draws["arrivals"] < outage.end)
        for arm, r in runs.items():
            log = r["log"]
            m.percentiles(arm, log.latency[in_outage], (50, 99))
            k = int(in_outage.sum())
            m.share(arm, "error_rate_pct", np.sum(log.outcome[in_outage] == ERROR), k)
            m.share(arm, "fallback_pct", np.sum(log.outcome[in_outage] == FALLBACK), k)
            m.percentiles(arm, log.latency, (99,), key="p{q}_all_ms")
            m.share(arm, "availability_pct", np.sum(np.isin(log.outcome, (OK, FALLBACK))), n)
            m.value(arm, "throughput_rps", np.sum(np.isin(log.outcome, (OK, FALLBACK))) / horizon)
            m.value(arm, "wasted_caller_s", r["wasted"].sum())
            m.value(arm, "server_utilization_pct", 100.0 * r["utilization"])
        _breaker_metrics(m, breaker, outage, runs["pattern"])
        m.saving_pct("comparison", "resource_savings_pct", ("pattern", "wasted_caller_s"),
                     ("baseline", "wasted_caller_s"),
                     missing="the baseline wasted no caller time (no failed calls): nothing to save")
        m.ratio("comparison", "p99_reduction_x", ("baseline", "p99_ms"), ("pattern", "p99_ms"))

        width = max(1.0, round(horizon / 200))
        series = {
            "latency": lambda: pd.concat([windowed(r["log"], width, horizon) for r in runs.values()],
                                         ignore_index=True),  # for plots: built when first read
            "breaker_state": pd.DataFrame(breaker.timeline(horizon), columns=["time_s", "state"]),
            "outage": pd.DataFrame({"start_s": [outage.start], "end_s": [outage.end], "mode": [outage.mode]}),
        }
        notes = [f"Simulated window: {horizon:g} s ({n} requests per arm at {p.rate_rps:g} req/s); "
                 f"outage {outage.start:g}-{outage.end:g} s ({outage.mode}).",
                 "p99_ms covers requests arriving during the outage; p99_open_ms only those arriving while "
                 "the breaker was open."]
        return Outcome(m, series, notes=notes)

    def plots(self, result):
        from .plotting import line_chart, state_chart

        o = result.series["outage"].iloc[0]
        spans = [(o.start_s, o.end_s)]
        return [
            line_chart(result.series["latency"], "time_s", "p99_ms", f"P99 latency per window, outage ({o['mode']})",
                       "time (s)", "P99 (ms, log)", log_y=True, spans=spans),
            state_chart(result.series["breaker_state"], "Breaker state (pattern arm)", spans),
        ]


def _draws(seed: int, p) -> dict:
    """Arrivals, service times and cache hits, shared by both arms (common random numbers)."""
    streams, n = Streams(seed), p.requests
    return {
        "arrivals": poisson_arrivals(streams["arrivals"], p.rate_rps, n),
        "service": Lognormal(p.service_ms / 1e3, 1.0).sample(streams["service"], n),
        "cached": streams["cache"].random(n) < p.cache_coverage,
    }


def _outage(p) -> Outage:
    return Outage(p.outage_start_s, p.outage_start_s + p.outage_duration_s, p.outage_mode)


def _simulate_arm(arm: str, p, draws: dict, outage: Outage, breaker: CircuitBreaker | None) -> dict:
    return simulate_guarded_calls(draws["arrivals"], draws["service"], draws["cached"], outage, breaker,
                                  replicas=p.replicas, caller_threads=p.caller_threads, network_s=p.network_ms / 1e3,
                                  timeout_s=p.client_timeout_s, error_s=p.error_ms / 1e3,
                                  fallback_s=p.fallback_ms / 1e3, arm=arm)


def _breaker_metrics(m: Measurements, breaker: CircuitBreaker, outage: Outage, arm: dict) -> None:
    """What the breaker did, read off its transitions and the calls it let through (never off its settings)."""
    log, tr = arm["log"], breaker.transitions
    never = "the breaker never opened during the outage window at these settings"
    opens = [t for t, _, new in tr if new == State.OPEN and t >= outage.start]
    dwell = [t2 - t1 for (t1, _, a), (t2, _, b) in zip(tr, tr[1:]) if a == State.OPEN and b == State.HALF_OPEN]
    half_open = [(t1, t2) for (t1, _, a), (t2, _, _b) in zip(tr, tr[1:]) if a == State.HALF_OPEN]
    probes = [int(np.sum(arm["probe"] & (log.arrival >= t1) & (log.arrival < t2))) for t1, t2 in half_open]
    closes = [t for t, _, new in tr if new == State.CLOSED and t >= outage.end]
    lat_open = log.latency[breaker.in_state(log.arrival, State.OPEN)]
    rates = arm["opened_at_rates"]
    m.value("pattern", "error_rate_threshold_pct", rates[0] if rates else np.nan, missing=never)
    m.value("pattern", "time_to_open_s", opens[0] - outage.start if opens else np.nan, missing=never)
    m.value("pattern", "wait_duration_in_open_state_s", np.median(dwell) if dwell else np.nan,
            missing="the breaker never went from open to half-open")
    m.value("pattern", "permitted_number_of_calls_in_half_open_state", np.median(probes) if probes else np.nan,
            missing="the breaker never completed a half-open episode")
    m.value("pattern", "recovery_time_s", closes[0] - outage.end if closes else np.nan,
            missing="the breaker did not close after the outage ended (or never opened)")
    m.percentiles("pattern", lat_open, (99,), key="p{q}_open_ms", missing=never)
    probe_waste = arm["wasted"][arm["probe"]].sum()
    m.share("pattern", "probe_waste_pct", probe_waste, arm["wasted"].sum(),
            missing="no call failed in the breaker arm: no probe could waste caller time")
    m.value("pattern", "probe_failures", float(np.sum(arm["probe"] & (arm["wasted"] > 0))))
    m.value("pattern", "not_permitted", float(breaker.not_permitted))
    m.value("pattern", "open_episodes", float(len(dwell) + (1 if tr and tr[-1][2] == State.OPEN else 0)))


LAB = CircuitBreakerLab()
