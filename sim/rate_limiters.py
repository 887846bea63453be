"""Online rate limiters on a simulated clock: token bucket (Envoy), fixed window, sliding log, sliding counter.

Each limiter answers ``acquire(t)`` for one request at time ``t`` (non-decreasing): ``0.0`` when it is
admitted, else the seconds until a request could be admitted (what ``Retry-After`` carries, rounded up
to whole seconds by ``retry_after_header``). A refused request consumes nothing. References
(REFERENCES.md §4):

* ``EnvoyTokenBucket``: Envoy's local rate limit ``token_bucket`` (``max_tokens`` = capacity and initial
  fill, ``tokens_per_fill`` per ``fill_interval``, one token per request). ``refill="timer"`` is Envoy up to
  1.30: a discrete refill on a timer at every multiple of ``fill_interval`` after creation (exactly
  ``sim.token_bucket.TokenBucket``); ``refill="on_access"`` is Envoy 1.31 and later (PR #35207): tokens
  accrue continuously at ``tokens_per_fill / fill_interval``, computed when a request arrives, capped at
  ``max_tokens``. Same sustained rate; they differ in when tokens appear.
* ``FixedWindow``: at most ``limit`` admitted per window [k*window, (k+1)*window), counters reset at the
  boundary (the "N per minute" counter; ``limits``' fixed window).
* ``SlidingLog``: pyrate-limiter's ``InMemoryBucket`` semantics: a request at ``t`` is admitted while fewer
  than ``limit`` admitted requests have timestamps in [t - window, t] (both ends inclusive).
* ``SlidingCounter``: the ``limits`` library's sliding-window counter: with aligned windows,
  weighted = previous count * (window - elapsed) / window + current count, admitted while
  floor(weighted) + 1 <= limit (``limits.storage.MemoryStorage.acquire_sliding_window_entry``).
"""
from __future__ import annotations

import math
from collections import deque

__all__ = ["EnvoyTokenBucket", "FixedWindow", "SlidingLog", "SlidingCounter", "Unlimited", "retry_after_header",
           "burst_duration_closed_form", "make_limiter", "LIMITERS", "serve"]

EPS = 1e-9


def retry_after_header(wait_s: float) -> int:
    """Retry-After as delay-seconds (RFC 9110): a whole number, rounded up, at least 1."""
    return max(1, math.ceil(wait_s - EPS))


def burst_duration_closed_form(max_tokens: float, rate: float, k: float) -> float:
    """Seconds a client sending at k x the refill rate is fully admitted from a full bucket: B / ((k - 1) R)."""
    return math.inf if k <= 1 else max_tokens / ((k - 1) * rate)


class Unlimited:
    def acquire(self, t: float) -> float:
        return 0.0


class EnvoyTokenBucket:
    def __init__(self, max_tokens: float, tokens_per_fill: float = 1, fill_interval: float = 1.0,
                 refill: str = "on_access"):
        if refill not in ("timer", "on_access"):
            raise ValueError("refill must be 'timer' (Envoy <= 1.30) or 'on_access' (Envoy >= 1.31)")
        if not (max_tokens >= 1 and tokens_per_fill > 0 and fill_interval > 0):
            raise ValueError("max_tokens >= 1, tokens_per_fill > 0 and fill_interval > 0 are required")
        self.cap, self.add, self.period, self.refill = float(max_tokens), float(tokens_per_fill), \
            float(fill_interval), refill
        self.rate = self.add / self.period
        self.tokens, self.last, self.fills = self.cap, 0.0, 0

    def acquire(self, t: float) -> float:
        if self.refill == "on_access":
            tokens = self.tokens + (t - self.last) * self.rate
            self.tokens = tokens if tokens < self.cap else self.cap
            self.last = t
            if self.tokens >= 1.0 - EPS:
                self.tokens -= 1.0
                return 0.0
            return (1.0 - self.tokens) / self.rate
        due = math.floor(t / self.period + 1e-12)
        if due > self.fills:
            self.tokens = min(self.cap, self.tokens + (due - self.fills) * self.add)
            self.fills = due
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (due + 1) * self.period - t


class FixedWindow:
    def __init__(self, limit: int, window: float):
        self.limit, self.window = int(limit), float(window)
        self.k, self.count = -1, 0

    def acquire(self, t: float) -> float:
        k = math.floor(t / self.window + 1e-12)
        if k != self.k:
            self.k, self.count = k, 0
        if self.count < self.limit:
            self.count += 1
            return 0.0
        return (k + 1) * self.window - t


class SlidingLog:
    def __init__(self, limit: int, window: float):
        self.limit, self.window = int(limit), float(window)
        self.log: deque[float] = deque()

    def acquire(self, t: float) -> float:
        log, lo = self.log, t - self.window
        while log and log[0] < lo - EPS:
            log.popleft()
        if len(log) < self.limit:
            log.append(t)
            return 0.0
        # the oldest of the last ``limit`` admissions leaves the window just after it is ``window`` old
        return log[-self.limit] + self.window - t + 1e-3


class SlidingCounter:
    def __init__(self, limit: int, window: float):
        self.limit, self.window = int(limit), float(window)
        self.k, self.prev, self.cur = 0, 0, 0

    def _roll(self, t: float) -> float:
        k = math.floor(t / self.window + 1e-12)
        if k != self.k:
            self.prev = self.cur if k == self.k + 1 else 0
            self.k, self.cur = k, 0
        return t - k * self.window  # elapsed in the current window

    def acquire(self, t: float) -> float:
        e = self._roll(t)
        weighted = self.prev * (self.window - e) / self.window + self.cur
        if math.floor(weighted + 1e-12) + 1 <= self.limit:
            self.cur += 1
            return 0.0
        # within this window the previous count decays linearly; else wait for the next window
        room = self.limit - self.cur
        if self.prev > 0 and room >= 1:
            return max(1e-3, (self.window - e) - room * self.window / self.prev + 1e-3)
        return self.window - e + 1e-3


LIMITERS = ("token_bucket", "fixed_window", "sliding_log", "sliding_counter")


def make_limiter(kind: str, rate: float, burst: float, window: float, refill: str = "on_access",
                 fill_interval: float = 0.1):
    """One key's limiter: token bucket (burst tokens, rate per second), or a window limiter of rate * window."""
    if math.isinf(rate):
        return Unlimited()
    if kind == "token_bucket":
        return EnvoyTokenBucket(burst, rate * fill_interval, fill_interval, refill)
    limit = max(1, int(round(rate * window)))
    return {"fixed_window": FixedWindow, "sliding_log": SlidingLog, "sliding_counter": SlidingCounter}[kind](
        limit, window)


def serve(arrivals, keys, limiters, honour, retry_gap_s: float = 0.1, max_attempts: int = 1) -> dict:
    """Offer requests to limiters in time order; refused requests of retrying keys come back.

    ``arrivals`` (sorted) and ``keys`` give each request's first attempt; ``limiters[key]`` answers it
    (several keys may share one limiter: a global limit). ``honour[key]`` is None for a key that never
    retries, True for one that waits the Retry-After it was sent (whole seconds), False for one that
    comes back after ``retry_gap_s`` regardless; a request is abandoned after ``max_attempts`` attempts.
    Returns per request: admitted (bool), attempts, admission time (NaN if never), and refusals (429s).
    """
    import heapq

    import numpy as np

    times = np.asarray(arrivals, dtype=float).tolist()
    ks = np.asarray(keys, dtype=np.int64).tolist()
    n = len(times)
    ok, attempts, when = [False] * n, [0] * n, [math.nan] * n
    acquire = [lim.acquire for lim in limiters]
    retries: list[tuple[float, int]] = []
    i, refused = 0, 0
    while i < n or retries:
        if retries and (i >= n or retries[0][0] < times[i]):
            t, j = heapq.heappop(retries)
        else:
            t, j = times[i], i
            i += 1
        k = ks[j]
        attempts[j] += 1
        wait = acquire[k](t)
        if wait == 0.0:
            ok[j], when[j] = True, t
            continue
        refused += 1
        mode = honour[k]
        if mode is not None and attempts[j] < max_attempts:
            heapq.heappush(retries, (t + (retry_after_header(wait) if mode else retry_gap_s), j))
    ok, attempts, when = np.array(ok, dtype=bool), np.array(attempts, dtype=np.int64), np.array(when)
    return {"ok": ok, "attempts": attempts, "when": when, "refused": refused}
