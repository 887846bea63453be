"""A token-bucket rate limiter with Envoy's local rate limit semantics.

Reference: Envoy's ``envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit``
with its ``token_bucket`` (``api/envoy/type/v3/token_bucket.proto``), see
REFERENCES.md §4:

* ``max_tokens``: the bucket's capacity, and also its fill at start;
* ``tokens_per_fill``: tokens added at the end of every ``fill_interval``
  (a discrete refill, never above ``max_tokens``), default 1;
* ``fill_interval``: the refill period (Envoy requires at least 50 ms);
* every request consumes one token; a request that finds the bucket empty is
  refused (HTTP 429) and consumes nothing.

Refills happen on a timer at ``fill_interval``, ``2 * fill_interval``, ... after
the bucket was created (time 0 here), not relative to the first request, as
Envoy's filter refills from a periodic timer. One bucket is one API key (or one
connection, with ``local_rate_limit_per_downstream_connection``); a client
holding ``keys`` keys has ``keys`` independent buckets.

Everything here is exact arithmetic on the refill schedule: no simulation
clock is needed, so the functions are cheap enough for the labs' default runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["TokenBucket", "ENVOY_MIN_FILL_INTERVAL_S"]

ENVOY_MIN_FILL_INTERVAL_S = 0.05  # the local rate limit filter refuses shorter intervals


@dataclass(frozen=True)
class TokenBucket:
    """Envoy's token bucket: ``max_tokens``, ``tokens_per_fill`` per ``fill_interval`` seconds."""

    max_tokens: int
    tokens_per_fill: int = 1
    fill_interval: float = 1.0

    def __post_init__(self):
        if int(self.max_tokens) != self.max_tokens or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if int(self.tokens_per_fill) != self.tokens_per_fill or self.tokens_per_fill < 1:
            raise ValueError(f"tokens_per_fill must be a positive integer, got {self.tokens_per_fill!r}")
        if not (self.fill_interval >= ENVOY_MIN_FILL_INTERVAL_S and math.isfinite(self.fill_interval)):
            raise ValueError(f"fill_interval must be at least {ENVOY_MIN_FILL_INTERVAL_S} s (Envoy's minimum), "
                             f"got {self.fill_interval!r}")

    # ------------------------------------------------------------------ rates
    @property
    def tokens_per_fill_effective(self) -> int:
        """Tokens an always-waiting client can gain per fill: a refill never overflows ``max_tokens``."""
        return min(int(self.tokens_per_fill), int(self.max_tokens))

    @property
    def sustained_rate_per_s(self) -> float:
        """Long-run requests per second one bucket admits to a greedy client."""
        return self.tokens_per_fill_effective / self.fill_interval

    # ------------------------------------------------------------------ a greedy client
    def time_to_admit(self, n: int | float, keys: int = 1, client_rps: float = math.inf) -> float:
        """Seconds until a greedy client has had ``n`` requests admitted.

        The client holds ``keys`` keys (independent buckets, all full at time 0)
        and sends as fast as it can, at most ``client_rps`` requests per second
        in total, spreading requests evenly over its keys. With an unlimited
        client each key's first ``max_tokens`` requests pass at once and then
        ``min(tokens_per_fill, max_tokens)`` more pass at every refill, so one
        key needs ``ceil((m - max_tokens) / tokens_per_fill_effective)`` refills
        for its share ``m = ceil(n / keys)``. A client slower than the bucket is
        limited by its own rate instead; the larger of the two times is
        returned (exact when either limit binds throughout, a close upper bound
        otherwise).
        """
        if n <= 0:
            return 0.0
        if keys < 1:
            raise ValueError("keys must be >= 1")
        per_key = math.ceil(n / keys)
        if per_key <= self.max_tokens:
            bucket_time = 0.0
        else:
            fills = math.ceil((per_key - self.max_tokens) / self.tokens_per_fill_effective)
            bucket_time = fills * self.fill_interval
        own_time = (n / client_rps) if math.isfinite(client_rps) else 0.0
        return max(bucket_time, own_time)

    def admitted_by(self, t: float, keys: int = 1) -> int:
        """Requests a greedy client with ``keys`` keys has had admitted by time ``t`` (inverse of time_to_admit)."""
        if t < 0:
            return 0
        fills = math.floor(t / self.fill_interval + 1e-12)
        return keys * (self.max_tokens + fills * self.tokens_per_fill_effective)

    # ------------------------------------------------------------------ arbitrary traffic
    def admit(self, arrivals: np.ndarray) -> np.ndarray:
        """Which requests, arriving at the (sorted) times ``arrivals`` on one key, are admitted.

        Walks the refill schedule exactly: before a request at time ``t`` the
        bucket has received every refill at ``k * fill_interval <= t``, each
        capped at ``max_tokens``.
        """
        arrivals = np.asarray(arrivals, dtype=float)
        if arrivals.size and np.any(np.diff(arrivals) < 0):
            raise ValueError("arrivals must be sorted")
        ok = np.zeros(arrivals.size, dtype=bool)
        tokens = float(self.max_tokens)
        fills_done = 0
        cap, add, period = float(self.max_tokens), float(self.tokens_per_fill), self.fill_interval
        for i, t in enumerate(arrivals.tolist()):
            due = math.floor(t / period + 1e-12)
            if due > fills_done:
                # each refill tops up by tokens_per_fill but never beyond capacity
                tokens = min(cap, tokens + (due - fills_done) * add)
                fills_done = due
            if tokens >= 1.0:
                tokens -= 1.0
                ok[i] = True
        return ok
