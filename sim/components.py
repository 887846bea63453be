"""SimPy building blocks: replica pools, network links, load generators, faults.

Components are composed with ``yield from`` inside one request process (a hop
costs a generator call, not a new ``env.process``), and draw their randomness
from arrays indexed by request number, so two arms that route the same request
differently still see the same service time and link delay for it (common
random numbers).
"""
from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import simpy

from .dist import Distribution
from .metrics import OK, REJECTED, TIMEOUT, TimeWeighted


class Slots:
    """``capacity`` identical slots handed out first come, first served (``simpy.Resource`` without the
    event objects).

    ``take()`` returns None when a slot is free (the caller holds it at once: no event is scheduled,
    unlike ``simpy.Resource.request``), else an event to yield that fires when a slot is handed over.
    ``give()`` hands the slot straight to the longest waiter (or frees it). ``leave(ev)`` withdraws a
    waiter that gave up; if its slot was handed over in the same instant, it is given on. Grants and
    queue order are those of ``simpy.Resource`` (FIFO, no preemption); only the order in which
    processes resume within one instant may differ, because a free slot costs no event.
    """

    __slots__ = ("env", "capacity", "count", "waiting")

    def __init__(self, env: simpy.Environment, capacity: int = 1):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.env = env
        self.capacity = capacity
        self.count = 0  # slots held
        self.waiting: deque[simpy.Event] = deque()

    def take(self) -> simpy.Event | None:
        if self.count < self.capacity:
            self.count += 1
            return None
        ev = simpy.Event(self.env)
        self.waiting.append(ev)
        return ev

    def give(self) -> None:
        if self.waiting:
            self.waiting.popleft().succeed()  # the slot passes on; count unchanged
        else:
            self.count -= 1

    def leave(self, ev: simpy.Event) -> None:
        if ev.triggered:  # handed a slot in the instant it gave up: pass it on
            self.give()
        else:
            self.waiting.remove(ev)


class ReplicaPool:
    """``servers`` identical replicas behind one FIFO queue (an M/M/c station).

    ``queue_limit`` bounds the number waiting (an arrival finding it full is
    rejected at once, like a bounded accept queue); ``timeout`` is the caller's
    patience for getting a replica (it leaves the queue when it runs out).
    Busy replicas and queue length are tracked as time averages. The replicas are
    ``Slots``: a request that finds one free starts at once, without an event.
    """

    def __init__(self, env: simpy.Environment, servers: int = 1, queue_limit: int | None = None,
                 timeout: float | None = None, keep_history: bool = False):
        if servers < 1:
            raise ValueError(f"servers must be >= 1, got {servers}")
        if queue_limit is not None and queue_limit < 0:
            raise ValueError(f"queue_limit must be >= 0, got {queue_limit}")
        self.env = env
        self.servers = servers
        self.queue_limit = queue_limit
        self.timeout = timeout
        self._slots = Slots(env, servers)
        self.busy = TimeWeighted(env.now, 0, keep_history)
        self.queue = TimeWeighted(env.now, 0, keep_history)
        self.completed = 0

    @property
    def in_queue(self) -> int:
        return len(self._slots.waiting)

    @property
    def in_service(self) -> int:
        return self._slots.count

    def serve(self, service_time: float, timeout: float | None = None, deadline: float | None = None):
        """Wait for a replica, hold it for ``service_time``; returns (outcome, start_time).

        ``timeout`` is the patience for a replica. ``deadline`` is the absolute time the
        caller gives up, whatever the queue (as a gRPC deadline): a queued request leaves
        the queue then, and one in service returns TIMEOUT at the deadline while its
        replica finishes the work (servers do not see the caller leave).
        """
        env, slots = self.env, self._slots
        now = env.now
        if deadline is not None and deadline <= now:
            return TIMEOUT, now
        waiting = slots.waiting
        if self.queue_limit is not None and len(waiting) >= self.queue_limit and slots.count >= self.servers:
            return REJECTED, now
        ev = slots.take()
        self.queue.update(now, len(waiting))
        if ev is not None:  # all replicas busy: queue
            patience = self.timeout if timeout is None else timeout
            if deadline is not None:
                patience = deadline - now if patience is None else min(patience, deadline - now)
            if patience is None:
                yield ev
            else:
                got = yield ev | env.timeout(patience)
                if ev not in got:
                    slots.leave(ev)
                    self.queue.update(env.now, len(waiting))
                    return TIMEOUT, env.now
        start = env.now
        self.queue.update(start, len(waiting))
        self.busy.update(start, slots.count)
        if deadline is not None and start + service_time > deadline:
            # the replica works on after the caller leaves: its release is a callback, not a process
            env.timeout(service_time).callbacks.append(self._finished)
            yield env.timeout(deadline - start)
            return TIMEOUT, start
        yield env.timeout(service_time)
        self._release()
        return OK, start

    def _release(self) -> None:
        self._slots.give()
        self.completed += 1
        self.busy.update(self.env.now, self._slots.count)
        self.queue.update(self.env.now, len(self._slots.waiting))

    def _finished(self, _event) -> None:
        self._release()

    def utilization(self, t: float | None = None) -> float:
        """Time-average fraction of replicas busy up to ``t`` (default: now)."""
        return self.busy.mean(self.env.now if t is None else t) / self.servers


class Link:
    """A network hop with a latency distribution and optional loss.

    Delays and loss draws are made up front for ``capacity`` request indices,
    so ``transit(i)`` gives request ``i`` the same delay in every arm.
    """

    def __init__(self, env: simpy.Environment, latency: Distribution, rng: np.random.Generator,
                 capacity: int, loss: float = 0.0):
        if not 0 <= loss < 1:
            raise ValueError(f"loss must be in [0, 1), got {loss}")
        self.env = env
        self.delays = np.asarray(latency.sample(rng, capacity), dtype=float)
        self.lost = rng.random(capacity) < loss if loss > 0 else np.zeros(capacity, dtype=bool)

    def transit(self, i: int):
        """One traversal by request ``i``; returns False if the message was lost."""
        k = i % self.delays.size
        yield self.env.timeout(self.delays[k])
        return not self.lost[k]


# ---------------------------------------------------------------- load generators
def poisson_arrivals(rng: np.random.Generator, rate: float, n: int, start: float = 0.0) -> np.ndarray:
    """Arrival times of a Poisson process of ``rate`` per second (n arrivals)."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    return start + np.cumsum(rng.exponential(1.0 / rate, n))


def constant_arrivals(rate: float, n: int, start: float = 0.0) -> np.ndarray:
    """Evenly spaced arrivals (a closed-loop load tester at a fixed pace)."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    return start + np.arange(1, n + 1) / rate


def profile_arrivals(rng: np.random.Generator, knots: Sequence[float], rates: Sequence[float],
                     horizon: float) -> np.ndarray:
    """Non-homogeneous Poisson arrivals with a piecewise-linear rate profile.

    ``rates[k]`` is the rate at time ``knots[k]``; repeat a knot for a step
    (``knots=[0, 60, 60, 120], rates=[10, 10, 40, 40]``), use distinct knots
    for a ramp. Generated by inverting the cumulative intensity (time
    rescaling), so the draw count depends only on the profile, not the arm.
    """
    t = np.asarray(knots, dtype=float)
    r = np.asarray(rates, dtype=float)
    if t.shape != r.shape or t.size < 2 or np.any(np.diff(t) < 0) or np.any(r < 0):
        raise ValueError("knots must be non-decreasing, one non-negative rate per knot")
    grid = np.union1d(np.linspace(0.0, horizon, 4097), t[(t >= 0) & (t <= horizon)])
    # Every knot is a grid point, so the rate is linear inside each cell and the
    # trapezoid is exact if a cell takes the rate's right-hand limit at its left
    # end and its left-hand limit at its right end (they differ at a step; one
    # value for both smeared half the jump into the cell before the step).
    right = _piecewise_linear(grid[:-1], t, r, "right")
    left = _piecewise_linear(grid[1:], t, r, "left")
    cum = np.concatenate([[0.0], np.cumsum(np.diff(grid) * (right + left) / 2)])
    total = cum[-1]
    if total <= 0:
        return np.empty(0)
    n = rng.poisson(total)
    unit = np.sort(rng.uniform(0.0, total, n))
    return np.interp(unit, cum, grid)


def _piecewise_linear(x: np.ndarray, t: np.ndarray, r: np.ndarray, side: str) -> np.ndarray:
    """The profile through (t, r) at ``x``, constant beyond the end knots.

    At a repeated knot (a step) ``side="right"`` gives the right-hand limit
    (the new rate) and ``side="left"`` the left-hand limit (the old rate).
    """
    k = np.clip(np.searchsorted(t, x, side=side) - 1, 0, t.size - 2)
    t0, t1, r0, r1 = t[k], t[k + 1], r[k], r[k + 1]
    span = t1 - t0
    frac = np.clip(np.divide(x - t0, span, out=np.zeros_like(x), where=span > 0), 0.0, 1.0)
    out = r0 + (r1 - r0) * frac
    return np.where(x < t[0], r[0], np.where(x > t[-1], r[-1], out))


def step_arrivals(rng, before: float, after: float, at: float, horizon: float) -> np.ndarray:
    """Poisson load that jumps from ``before`` to ``after`` per second at time ``at``."""
    return profile_arrivals(rng, [0.0, at, at, horizon], [before, before, after, after], horizon)


def ramp_arrivals(rng, start_rate: float, end_rate: float, horizon: float) -> np.ndarray:
    """Poisson load rising (or falling) linearly over the horizon."""
    return profile_arrivals(rng, [0.0, horizon], [start_rate, end_rate], horizon)


def on_off_arrivals(rng: np.random.Generator, on_rate: float, off_rate: float, mean_on: float,
                    mean_off: float, horizon: float) -> np.ndarray:
    """Bursty load: exponential ON and OFF periods, Poisson at each period's rate (an MMPP)."""
    out, t, on = [], 0.0, True
    while t < horizon:
        length = rng.exponential(mean_on if on else mean_off)
        rate = on_rate if on else off_rate
        end = min(t + length, horizon)
        if rate > 0:
            k = rng.poisson(rate * (end - t))
            out.append(np.sort(rng.uniform(t, end, k)))
        t, on = end, not on
    return np.concatenate(out) if out else np.empty(0)


def drive(env: simpy.Environment, arrival_times: np.ndarray, handler: Callable[[int], Iterable]):
    """Process that starts ``handler(i)`` as its own process at ``arrival_times[i]``."""
    for i, t in enumerate(arrival_times):
        delay = t - env.now
        if delay > 0:
            yield env.timeout(delay)
        env.process(handler(i))


# ---------------------------------------------------------------- faults
@dataclass(frozen=True)
class Outage:
    start: float
    end: float
    mode: str = "error"  # "error": fails fast; "hang": never answers; "none": a window where nothing fails (a control)

    def __post_init__(self):
        if self.end < self.start:
            raise ValueError(f"outage ends ({self.end}) before it starts ({self.start})")
        if self.mode not in ("error", "hang", "none"):
            raise ValueError(f"outage mode must be 'error', 'hang' or 'none', got {self.mode!r}")


class FaultSchedule:
    """Outage windows of a dependency; ``mode_at(t)`` says what a call at ``t`` meets."""

    def __init__(self, outages: Iterable[Outage] = ()):
        self.outages = tuple(sorted(outages, key=lambda o: o.start))
        for a, b in zip(self.outages, self.outages[1:]):
            if b.start < a.end:  # mode_at looks only at the last window starting at or before t
                raise ValueError(f"outages overlap: {a} and {b}")
        self._starts = [o.start for o in self.outages]

    def mode_at(self, t: float) -> str | None:
        k = bisect.bisect_right(self._starts, t) - 1
        if k >= 0 and t < self.outages[k].end and self.outages[k].mode != "none":
            return self.outages[k].mode
        return None

    def down_time(self, horizon: float) -> float:
        return sum(max(0.0, min(o.end, horizon) - o.start) for o in self.outages
                   if o.start < horizon and o.mode != "none")

    @classmethod
    def alternating(cls, rng: np.random.Generator, mtbf: float, mttr: float, horizon: float,
                    mode: str = "error") -> "FaultSchedule":
        """Exponential up times (mean ``mtbf``) and repair times (mean ``mttr``)."""
        outages, t = [], rng.exponential(mtbf)
        while t < horizon:
            repair = rng.exponential(mttr)
            outages.append(Outage(t, t + repair, mode))
            t += repair + rng.exponential(mtbf)
        return cls(outages)
