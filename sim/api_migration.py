"""Clients moving from API v1 to v2 (SimPy), how many versions stay live, and retries with idempotency keys.

Upgrade model. Version 2 is released at day 0; from then on every v1 response carries ``Deprecation``
and ``Sunset`` (RFC 9745 / RFC 8594, REFERENCES.md §20). At the cut-off (the sunset; day 0 for a hard
cut-over) the v1 path starts answering with the v2 contract, so a client still on v1 breaks only if its
requests violate v2 (the per-client break flag measured on the real API, ``sim.inference_api``).
Each client would finish its upgrade ``lag`` days after the release (an assumed input). A client that
acts on the headers reads them on its first request after the release and, if its own plan is late,
brings its finish forward to ``max(seen + effort, cutoff - effort)`` days (it never starts earlier than
it saw the notice). A broken client fixes itself ``fix_days`` after breaking, or at its own plan if
sooner. The headers are a hint only (RFC 9745): nothing changes for clients that ignore them.

Versions live. Releases every ``release_interval`` days; a version is deprecated when its successor
ships and answers until ``window`` days later (half-open [release, sunset)). ``live_versions`` counts the
maximum number answering at once over a release timeline; the closed form is 1 + ceil(window / interval).

Retries. Each logical request's client sends an attempt, waits up to ``timeout_s`` for its answer, then
backs off (full jitter, as Envoy and the AWS backoff note: uniform in [0, min(cap, base * 2^k))) and
tries again, at most ``max_retries`` times. The server always finishes an attempt it started, whether
or not the client still waits (it cannot tell). With keys the server consults a real
``IdempotencyStore`` on the simulated clock: a finished key is replayed (no model call), a running one
answers 409, an expired one (older than ``ttl_s``) is new again. A prediction executed more than once
for one logical request is a duplicate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import simpy

from .inference_api import IdempotencyStore

__all__ = ["Clients", "simulate_upgrades", "live_versions", "live_versions_closed_form", "retry_horizon_s",
           "simulate_retries", "lognormal_p99"]

Z99 = 2.3263478740408408


# ---------------------------------------------------------------- upgrades
@dataclass(frozen=True)
class Clients:
    lag_days: np.ndarray  # when each client would finish its upgrade on its own
    aware: np.ndarray  # acts on Deprecation/Sunset headers
    first_request_days: np.ndarray  # its first request after the release (when it can see the headers)
    breaks: np.ndarray  # its requests violate the v2 contract


def simulate_upgrades(c: Clients, cutoff_days: float, effort_days: float, fix_days: float,
                      horizon_days: float, step_days: float = 1.0) -> dict:
    """Run the client population through a cut-off: per-client upgrade and break days (every client ends
    on v2), and a series (day, % on v1, % broken) every ``step_days`` up to ``horizon_days``."""
    env = simpy.Environment()
    n = len(c.lag_days)
    upgrade = np.full(n, np.nan)
    broken_at = np.full(n, np.nan)
    on_v1 = np.ones(n, dtype=bool)

    def client(i):
        plan = float(c.lag_days[i])
        seen = float(c.first_request_days[i])
        if c.aware[i] and seen < cutoff_days and seen < plan:
            yield env.timeout(seen)  # the first v1 response after the release carries the headers
            plan = min(plan, max(seen + effort_days, cutoff_days - effort_days))
        if plan > cutoff_days:
            yield env.timeout(cutoff_days - env.now)
            if c.breaks[i]:
                broken_at[i] = env.now
                plan = min(plan, cutoff_days + fix_days)
        yield env.timeout(max(0.0, plan - env.now))
        on_v1[i] = False
        upgrade[i] = env.now

    series = []

    def monitor():
        for k in range(int(horizon_days / step_days + 1e-9) + 1):
            yield env.timeout(k * step_days - env.now)
            broken = (~np.isnan(broken_at)) & on_v1
            series.append((env.now, 100.0 * on_v1.mean(), 100.0 * broken.mean()))

    for i in range(n):
        env.process(client(i))
    env.process(monitor())
    env.run()  # until every client has upgraded; the series stops at horizon_days
    return {"upgrade_days": upgrade, "broken_at": broken_at,
            "series": np.array(series, dtype=float).reshape(-1, 3)}


def live_versions(window_days: float, release_interval_days: float, releases: int = 24) -> int:
    """Most versions answering at once when one ships every interval and each lives ``window`` after its successor."""
    if window_days < 0 or release_interval_days <= 0:
        raise ValueError("window must be >= 0 and the release interval > 0")
    start = np.arange(releases) * release_interval_days
    end = np.append(start[1:] + window_days, np.inf)  # the newest is never retired
    times = np.concatenate([start, end[np.isfinite(end)]])
    return int(max(np.sum((start <= t) & (t < end)) for t in times))


def live_versions_closed_form(window_days: float, release_interval_days: float) -> int:
    return 1 + math.ceil(window_days / release_interval_days - 1e-12)


# ---------------------------------------------------------------- retries
def lognormal_p99(median_s: float, sigma: float) -> float:
    return median_s * math.exp(Z99 * sigma)


def retry_horizon_s(timeout_s: float, max_retries: int, base_s: float, cap_s: float) -> float:
    """Latest start of the last retry after the first attempt: every attempt times out, longest back-offs."""
    return max_retries * timeout_s + sum(min(cap_s, base_s * 2 ** k) for k in range(max_retries))


def simulate_retries(arrivals: np.ndarray, latency: np.ndarray, jitter: np.ndarray, timeout_s: float,
                     max_retries: int, base_s: float, cap_s: float, use_keys: bool, ttl_s: float,
                     replay_s: float, conflict_s: float) -> dict:
    """Logical requests at ``arrivals``; ``latency[i, k]`` is attempt k's time to answer if executed,
    ``jitter[i, k]`` in [0, 1) scales its back-off. Returns executions, attempts and outcome per request."""
    env = simpy.Environment()
    n = len(arrivals)
    store = IdempotencyStore(ttl_s, clock=lambda: env.now) if use_keys else None
    executions = np.zeros(n, dtype=int)
    attempts = np.zeros(n, dtype=int)
    conflicts = np.zeros(n, dtype=int)
    replays = np.zeros(n, dtype=int)
    ok = np.zeros(n, dtype=bool)
    done_at = np.full(n, np.nan)

    def finish_later(key, delay):
        yield env.timeout(delay)
        store.finish(key, 200, b"{}")

    def request(i):
        key = f"req-{i}"
        for k in range(max_retries + 1):
            attempts[i] += 1
            kind = "new" if store is None else store.begin(key, "same-payload").kind
            if kind == "replay":
                yield env.timeout(replay_s)
                replays[i] += 1
                ok[i], done_at[i] = True, env.now
                return
            if kind == "in_flight":
                yield env.timeout(conflict_s)
                conflicts[i] += 1
            else:
                executions[i] += 1
                lat = latency[i, k]
                if store is not None:
                    env.process(finish_later(key, lat))
                if lat <= timeout_s:
                    yield env.timeout(lat)
                    ok[i], done_at[i] = True, env.now
                    return
                yield env.timeout(timeout_s)
            if k < max_retries:
                yield env.timeout(jitter[i, k] * min(cap_s, base_s * 2 ** k))

    # A request answered within the timeout on its first attempt never meets another attempt or key: it is
    # settled without a process (exact, and keeps the default run cheap); the rest run through SimPy.
    first_ok = latency[:, 0] <= timeout_s
    executions[first_ok], attempts[first_ok], ok[first_ok] = 1, 1, True
    done_at[first_ok] = arrivals[first_ok] + latency[first_ok, 0]

    def drive():
        for i in np.flatnonzero(~first_ok):
            yield env.timeout(arrivals[i] - env.now)
            env.process(request(i))

    env.process(drive())
    env.run()
    return {"executions": executions, "attempts": attempts, "conflicts": conflicts, "replays": replays,
            "ok": ok, "latency": done_at - arrivals}
