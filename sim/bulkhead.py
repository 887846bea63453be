"""A semaphore bulkhead and a time limiter for SimPy, after resilience4j.

Reference: resilience4j ``BulkheadConfig`` (semaphore bulkhead) and ``TimeLimiterConfig``
(REFERENCES.md section 3). ``Bulkhead`` has ``max_concurrent_calls`` permits (resilience4j
default 25); a caller asks for one and waits for it at most ``max_wait_duration`` seconds
(default 0: a call finding every permit taken is rejected at once, resilience4j's
``BulkheadFullException``). Waiting callers are served first come, first served
(``fairCallHandlingStrategyEnabled = true``, the default). ``guarded_call`` runs one call
through a bulkhead and a time limiter: the caller stops waiting after
``timeout_duration`` (resilience4j default 1 s) and, as with ``cancelRunningFuture = true``
(the default), the call is cancelled then, so its permit comes back at the timeout.

Differences: one bulkhead per dependency per service instance, no thread-pool variant, and
``max_wait_duration`` counts against the caller's time limit (a caller that waited for a
permit has less time left for the call), which resilience4j leaves to how the two are
decorated; we decorate time limiter outside bulkhead.
"""
from __future__ import annotations

from dataclasses import dataclass

import simpy

from .metrics import ERROR, OK, REJECTED, TIMEOUT


@dataclass(frozen=True)
class BulkheadConfig:
    max_concurrent_calls: int = 25
    max_wait_duration: float = 0.0  # seconds

    def __post_init__(self):
        if int(self.max_concurrent_calls) != self.max_concurrent_calls or self.max_concurrent_calls < 1:
            raise ValueError(f"max_concurrent_calls must be an integer >= 1, got {self.max_concurrent_calls}")
        if not self.max_wait_duration >= 0:
            raise ValueError(f"max_wait_duration must be >= 0, got {self.max_wait_duration}")


class Bulkhead:
    """``max_concurrent_calls`` permits; ``acquire`` waits up to ``max_wait_duration`` for one."""

    def __init__(self, env: simpy.Environment, config: BulkheadConfig = BulkheadConfig(), name: str = ""):
        self.env, self.config, self.name = env, config, name
        self._sem = simpy.Resource(env, capacity=config.max_concurrent_calls)
        self.permitted = 0
        self.rejected = 0
        self.peak = 0

    @property
    def available_permits(self) -> int:
        return self.config.max_concurrent_calls - self._sem.count

    def acquire(self):
        """Generator: returns a permit (pass it to ``release``) or None when the call is rejected."""
        req = self._sem.request()  # FIFO: a waiting caller is served before a later one
        if not req.triggered:
            wait = self.config.max_wait_duration
            if wait <= 0:
                req.cancel()
                self.rejected += 1
                return None
            got = yield req | self.env.timeout(wait)
            if req not in got:
                req.cancel()
                self.rejected += 1
                return None
        else:
            yield req
        self.permitted += 1
        self.peak = max(self.peak, self._sem.count)
        return req

    def release(self, permit) -> None:
        self._sem.release(permit)


def guarded_call(env: simpy.Environment, bulkhead: Bulkhead | None, duration: float, timeout_duration: float,
                 fails: bool = False):
    """Generator: one call of ``duration`` s through the bulkhead under a time limit.

    Returns ``(outcome, elapsed)``: REJECTED (no permit in time), TIMEOUT (the call outlasted
    ``timeout_duration``, counted from the call's start, including any wait for a permit),
    ERROR (it ended in time but failed: ``fails``) or OK. ``duration = inf`` is a hung call.
    """
    start = env.now
    permit = None
    if bulkhead is not None:
        permit = yield from bulkhead.acquire()
        if permit is None:
            return REJECTED, env.now - start
    left = timeout_duration - (env.now - start)
    try:
        if duration > left:
            if left > 0:
                yield env.timeout(left)
            return TIMEOUT, env.now - start
        yield env.timeout(duration)
        return (ERROR if fails else OK), env.now - start
    finally:
        if permit is not None:
            bulkhead.release(permit)
