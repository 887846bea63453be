"""Q8 lab: a circuit breaker in front of a model server that goes down.

Callers send Poisson traffic to a pool of model-server replicas. In the middle
of the run the server has an outage: it either fails fast (``error``) or stops
answering so each call waits for the client timeout (``hang``). A caller whose
call fails, or that the breaker refuses, answers from a cache of earlier
predictions when it has one. Both arms see the same arrivals, service times
and network delays (common random numbers); the only difference is the
breaker, which follows resilience4j (see ``sim.breaker``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import simpy

from sim.breaker import CircuitBreaker, CircuitBreakerConfig, State
from sim.components import FaultSchedule, Outage, ReplicaPool, drive, poisson_arrivals
from sim.dist import Lognormal
from sim.metrics import ERROR, FALLBACK, OK, TIMEOUT, RequestLog, percentile_intervals, summarize, windowed
from sim.rng import Streams

from .contract import Exercise, Lab, Outcome, Param, ParamError, Sweep

R4J = CircuitBreakerConfig.resilience4j_defaults()


class CircuitBreakerLab(Lab):
    id = "q08"
    headline = ("pattern", "p99_ms")
    refine_param = "requests"
    params = (
        Param("rate_rps", 20.0, 1.0, 400.0, unit="req/s", help="Poisson arrival rate of callers"),
        Param("requests", 5000, 1000, 200000, unit="requests", help="request budget per arm; the simulated window is requests / rate_rps"),
        Param("replicas", 4, 1, 64, unit="replicas", help="model-server replicas behind one queue"),
        Param("service_ms", 20.0, 1.0, 2000.0, unit="ms", help="mean inference time (lognormal, cv 1)"),
        Param("network_ms", 2.0, 0.0, 500.0, unit="ms", help="round trip between caller and server"),
        Param("outage_mode", "hang", choices=("hang", "error"), help="hang: no answer until the client timeout; error: fails fast"),
        Param("outage_start_s", 60.0, 0.0, 1e6, unit="s", help="when the outage begins"),
        Param("outage_duration_s", 120.0, 1.0, 1e6, unit="s", help="how long the server stays down"),
        Param("error_ms", 5.0, 0.0, 10000.0, unit="ms", help="time for a failing call in error mode"),
        Param("client_timeout_s", 30.0, 0.01, 600.0, unit="s", help="caller gives up after this long"),
        Param("fallback_ms", 2.0, 0.0, 1000.0, unit="ms", help="time to answer from the prediction cache"),
        Param("cache_coverage", 0.9, 0.0, 1.0, unit="fraction", help="share of requests that have a cached prediction to fall back on"),
        # breaker settings: resilience4j names, snake_case; defaults are the seed's recipe
        Param("failure_rate_threshold", 50.0, 1.0, 100.0, unit="%", help=f"open when failure rate >= this (resilience4j default {R4J.failure_rate_threshold:g})"),
        Param("sliding_window_type", "TIME_BASED", choices=("TIME_BASED", "COUNT_BASED"), help=f"window over seconds or calls (resilience4j default {R4J.sliding_window_type})"),
        Param("sliding_window_size", 10, 1, 1000, unit="s or calls", help=f"window length (resilience4j default {R4J.sliding_window_size})"),
        Param("minimum_number_of_calls", 10, 1, 1000, unit="calls", help=f"no decision below this many calls (resilience4j default {R4J.minimum_number_of_calls})"),
        Param("wait_duration_in_open_state", 30.0, 0.1, 600.0, unit="s", help=f"cool-down before probing (resilience4j default {R4J.wait_duration_in_open_state:g} s)"),
        Param("permitted_number_of_calls_in_half_open_state", 2, 1, 100, unit="calls", help=f"probe calls in half-open (resilience4j default {R4J.permitted_number_of_calls_in_half_open_state})"),
        Param("slow_call_duration_threshold", 60.0, 0.01, 600.0, unit="s", help=f"a call slower than this is slow (resilience4j default {R4J.slow_call_duration_threshold:g} s)"),
        Param("slow_call_rate_threshold", 100.0, 1.0, 100.0, unit="%", help=f"open when slow-call rate >= this (resilience4j default {R4J.slow_call_rate_threshold:g})"),
    )
    sweeps = {
        "q08.p99_baseline": Sweep("client_timeout_s", (1.0, 5.0, 30.0, 60.0)),
        "q08.p99_breaker": Sweep("outage_mode", ("hang", "error")),
        "q08.compute_saved": Sweep("client_timeout_s", (1.0, 5.0, 10.0, 30.0)),
        "q08.opens_on_half_errors": Sweep("client_timeout_s", (1.0, 5.0, 10.0, 30.0)),
        "q08.cooldown": Sweep("wait_duration_in_open_state", (10.0, 30.0, 60.0)),
        "q08.probes": Sweep("permitted_number_of_calls_in_half_open_state", (1, 3, 10)),
    }

    exercises = (
        Exercise("Cut the client timeout from 30 s to 1 s. What happens to the breaker arm's P99 during the outage?",
                 {"client_timeout_s": 1.0}, ("pattern", "p99_ms")),
        Exercise("Make the outage fail fast (error mode) instead of hanging. How much caller time does the breaker still save?",
                 {"outage_mode": "error"}, ("comparison", "resource_savings_pct")),
        Exercise("Use resilience4j's own defaults: a 100-call count window with minimum 100 calls, 60 s wait, 10 probes. "
                 "How long after the outage starts does the breaker open?",
                 {"sliding_window_type": "COUNT_BASED", "sliding_window_size": 100, "minimum_number_of_calls": 100,
                  "wait_duration_in_open_state": 60.0, "permitted_number_of_calls_in_half_open_state": 10},
                 ("pattern", "time_to_open_s")),
    )

    def breaker_config(self, p: dict) -> CircuitBreakerConfig:
        return CircuitBreakerConfig(
            failure_rate_threshold=p["failure_rate_threshold"],
            slow_call_rate_threshold=p["slow_call_rate_threshold"],
            slow_call_duration_threshold=p["slow_call_duration_threshold"],
            sliding_window_type=p["sliding_window_type"],
            sliding_window_size=p["sliding_window_size"],
            minimum_number_of_calls=p["minimum_number_of_calls"],
            wait_duration_in_open_state=p["wait_duration_in_open_state"],
            permitted_number_of_calls_in_half_open_state=p["permitted_number_of_calls_in_half_open_state"],
        )

    # ------------------------------------------------------------------ model
    def simulate(self, seed: int, **p) -> Outcome:
        horizon = p["requests"] / p["rate_rps"]
        room = horizon - p["outage_start_s"]
        if room <= 0:
            raise ParamError(f"parameter outage_start_s: {p['outage_start_s']:g} is not allowed; expected a number "
                             f"in [0, {horizon:g}) s (the window is requests / rate_rps = {horizon:g} s)")
        if p["outage_duration_s"] > room:
            raise ParamError(f"parameter outage_duration_s: {p['outage_duration_s']:g} is not allowed; expected a "
                             f"number in [1, {room:g}] s so the outage ends inside the window "
                             f"(requests / rate_rps = {horizon:g} s); raise requests for longer outages")
        streams = Streams(seed)
        n = p["requests"]
        draws = {
            "arrivals": poisson_arrivals(streams["arrivals"], p["rate_rps"], n),
            "service": Lognormal(p["service_ms"] / 1e3, 1.0).sample(streams["service"], n),
            "cached": streams["cache"].random(n) < p["cache_coverage"],
        }
        outage = Outage(p["outage_start_s"], p["outage_start_s"] + p["outage_duration_s"], p["outage_mode"])
        base = _simulate_arm("baseline", p, draws, outage, None)
        breaker = CircuitBreaker(self.breaker_config(p), name="model-server")
        pat = _simulate_arm("pattern", p, draws, outage, breaker)

        metrics = {"baseline": base["metrics"], "pattern": pat["metrics"]}
        metrics["pattern"].update(_breaker_metrics(breaker, outage, pat))
        wasted_b, wasted_p = base["metrics"]["wasted_caller_s"], pat["metrics"]["wasted_caller_s"]
        metrics["comparison"] = {
            "resource_savings_pct": 100.0 * (1 - wasted_p / wasted_b) if wasted_b > 0 else np.nan,
            "p99_reduction_x": base["metrics"]["p99_ms"] / pat["metrics"]["p99_ms"],
        }
        width = max(1.0, round(horizon / 200))
        series = {
            "latency": pd.concat([windowed(base["log"], width, horizon), windowed(pat["log"], width, horizon)],
                                 ignore_index=True),
            "breaker_state": _state_series(breaker, horizon),
            "outage": pd.DataFrame({"start_s": [outage.start], "end_s": [outage.end], "mode": [outage.mode]}),
        }
        intervals = {arm: {k: (iv.low, iv.high) for k, iv in r["intervals"].items()}
                     for arm, r in (("baseline", base), ("pattern", pat))}
        notes = [
            f"Simulated window: {horizon:g} s ({n} requests per arm at {p['rate_rps']:g} req/s); "
            f"outage {outage.start:g}-{outage.end:g} s ({outage.mode}).",
            "Outage-window metrics (p50_ms, p99_ms, error_rate_pct) cover every request arriving during the outage; "
            "p99_open_ms covers only those arriving while the breaker was open (the seed's literal 'P99 (Open)', "
            "fast by construction).",
            "Breaker settings vs resilience4j defaults: "
            + ", ".join(f"{k} {p[k]} (default {getattr(R4J, k)})" for k in (
                "failure_rate_threshold", "sliding_window_type", "sliding_window_size", "minimum_number_of_calls",
                "wait_duration_in_open_state", "permitted_number_of_calls_in_half_open_state")),
        ]
        return Outcome(metrics, series, intervals, notes)

    def plots(self, result):
        from .plotting import lines_by_arm, state_timeline

        o = result.series["outage"].iloc[0]
        spans = [(o.start_s, o.end_s)]
        return [
            lines_by_arm(result.series["latency"], "time_s", "p99_ms",
                         f"P99 latency per window, outage ({o['mode']}) shaded", "P99 (ms, log)",
                         spans, logy=True),
            state_timeline(result.series["breaker_state"], "Breaker state (pattern arm)", spans),
        ]


def _simulate_arm(arm: str, p: dict, draws: dict, outage: Outage, breaker: CircuitBreaker | None) -> dict:
    env = simpy.Environment()
    pool = ReplicaPool(env, servers=p["replicas"])
    faults = FaultSchedule([outage])
    n = p["requests"]
    log = RequestLog(n, arm)
    wasted = np.zeros(n)  # caller seconds spent on downstream calls that failed
    probe = np.zeros(n, dtype=bool)  # admitted while HALF_OPEN
    opened_at_rates = []  # the rolling failure rate each time the breaker opened
    service, cached = draws["service"], draws["cached"]
    rtt = p["network_ms"] / 1e3
    half_rtt = rtt / 2
    timeout, error_s, fallback_s = p["client_timeout_s"], p["error_ms"] / 1e3, p["fallback_ms"] / 1e3

    def fall_back(i):
        if cached[i]:
            yield env.timeout(fallback_s)
            return FALLBACK
        return ERROR

    def request(i):
        now = env.now
        log.arrival[i] = now
        if breaker is not None:
            if not breaker.try_acquire_permission(now):
                log.outcome[i] = yield from fall_back(i)
                log.end[i] = env.now
                return
            probe[i] = breaker.state is State.HALF_OPEN
        # Every call pays the same network delay, so entering the server's queue now and adding
        # the round trip afterwards gives each request exactly the same timeline as paying half
        # on the way in (the queue sees all arrivals shifted by one constant): one event fewer.
        mode = faults.mode_at(now + half_rtt)
        if mode is None:
            outcome, start = yield from pool.serve(service[i], timeout=timeout)
            log.start[i] = start + half_rtt
            if outcome == OK:
                if env.now - now + rtt > timeout:
                    yield env.timeout(timeout - (env.now - now))
                    outcome = TIMEOUT  # answered, but after the caller gave up
                elif rtt:
                    yield env.timeout(rtt)
        elif mode == "error":
            yield env.timeout(error_s + rtt)
            outcome = ERROR
        else:  # hang: nothing comes back; the caller waits out its timeout
            yield env.timeout(timeout)
            outcome = TIMEOUT
        duration = env.now - now
        if outcome == OK:
            if breaker is not None:
                breaker.on_success(env.now, duration)
            log.outcome[i] = OK
        else:
            if breaker is not None:
                before = breaker.state
                breaker.on_error(env.now, duration)
                if before is not State.OPEN and breaker.state is State.OPEN:
                    opened_at_rates.append(breaker.failure_rate(env.now))
            wasted[i] = duration
            log.outcome[i] = yield from fall_back(i)
        log.end[i] = env.now

    env.process(drive(env, draws["arrivals"], request))
    env.run()
    horizon = float(draws["arrivals"][-1])
    in_outage = (log.arrival >= outage.start) & (log.arrival < outage.end)
    overall = summarize(log, horizon)
    during = _subset_summary(log, in_outage)
    metrics = {
        "p50_ms": during["p50_ms"],
        "p99_ms": during["p99_ms"],
        "error_rate_pct": during["error_rate_pct"],
        "fallback_pct": during["fallback_pct"],
        "p99_all_ms": overall["p99_ms"],
        "availability_pct": overall["availability_pct"],
        "throughput_rps": overall["throughput_rps"],
        "wasted_caller_s": float(wasted.sum()),
        "server_utilization_pct": 100.0 * pool.utilization(),
    }
    sub = RequestLog(max(int(in_outage.sum()), 1), arm)
    for col in ("arrival", "start", "end", "outcome"):
        getattr(sub, col)[: in_outage.sum()] = getattr(log, col)[in_outage]
    ivs = percentile_intervals(sub) if in_outage.sum() >= 40 else {}
    return {"log": log, "metrics": metrics, "intervals": ivs, "probe": probe, "opened_at_rates": opened_at_rates}


def _subset_summary(log: RequestLog, mask: np.ndarray) -> dict:
    lat = log.latency[mask]
    outc = log.outcome[mask]
    if lat.size == 0:
        return {"p50_ms": np.nan, "p99_ms": np.nan, "error_rate_pct": np.nan, "fallback_pct": np.nan}
    return {
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "error_rate_pct": float(100 * np.mean(outc == ERROR)),
        "fallback_pct": float(100 * np.mean(outc == FALLBACK)),
    }


def _breaker_metrics(breaker: CircuitBreaker, outage: Outage, arm: dict) -> dict:
    """What the breaker did, read off its transitions and the calls it let through (never off its settings)."""
    log, tr = arm["log"], breaker.transitions
    opens = [t for t, _, new in tr if new == State.OPEN and t >= outage.start]
    time_to_open = opens[0] - outage.start if opens else np.nan
    dwell = [t2 - t1 for (t1, _, a), (t2, _, b) in zip(tr, tr[1:]) if a == State.OPEN and b == State.HALF_OPEN]
    half_open_spans = [(t1, t2) for (t1, _, a), (t2, _, _b) in zip(tr, tr[1:]) if a == State.HALF_OPEN]
    probes = [int(np.sum(arm["probe"] & (log.arrival >= t1) & (log.arrival < t2))) for t1, t2 in half_open_spans]
    closes = [t for t, _, new in tr if new == State.CLOSED and t >= outage.end]
    in_open = _mask_in_state(breaker, log.arrival, State.OPEN)
    lat_open = log.latency[in_open]
    return {
        "error_rate_threshold_pct": float(arm["opened_at_rates"][0]) if arm["opened_at_rates"] else np.nan,
        "time_to_open_s": float(time_to_open),
        "wait_duration_in_open_state_s": float(np.median(dwell)) if dwell else np.nan,
        "permitted_number_of_calls_in_half_open_state": float(np.median(probes)) if probes else np.nan,
        "recovery_time_s": float(closes[0] - outage.end) if closes else np.nan,
        "p99_open_ms": float(np.percentile(lat_open, 99) * 1e3) if lat_open.size else np.nan,
        "not_permitted": float(breaker.not_permitted),
        "open_episodes": float(len(dwell) + (1 if tr and tr[-1][2] == State.OPEN else 0)),
    }


def _mask_in_state(breaker: CircuitBreaker, times: np.ndarray, state: State) -> np.ndarray:
    tr = breaker.transitions
    mask = np.zeros(times.size, dtype=bool)
    for k, (t, _, new) in enumerate(tr):
        if new == state:
            end = tr[k + 1][0] if k + 1 < len(tr) else np.inf
            mask |= (times >= t) & (times < end)
    return mask


def _state_series(breaker: CircuitBreaker, horizon: float) -> pd.DataFrame:
    rows = [(0.0, State.CLOSED.value)] + [(t, new.value) for t, _, new in breaker.transitions]
    rows.append((horizon, rows[-1][1]))
    return pd.DataFrame(rows, columns=["time_s", "state"])


LAB = CircuitBreakerLab()
