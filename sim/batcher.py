"""A model server with a dynamic batcher, after Triton Inference Server.

Reference implementation: Triton's dynamic batcher (REFERENCES.md §5;
``triton-inference-server/common`` ``protobuf/model_config.proto`` and
``server/docs/user_guide/batcher.md``). Parameter names follow Triton's model
configuration in snake_case:

``max_batch_size``
    Largest batch the model accepts (model level). ``1`` means every request
    runs on its own: no batching.
``preferred_batch_size``
    Sizes the batcher sends as soon as it can form them (``dynamic_batching``
    field; none by default). Each must be ``<= max_batch_size``.
``max_queue_delay_microseconds``
    Longest time the batcher holds the oldest queued request while it waits for
    a larger batch; ``0`` (Triton's default) means never wait.
``instance_count``
    Model instances (``instance_group { count }``); each runs one batch at a
    time and the batcher feeds whichever is free.

The scheduling rule, applied whenever an instance is free and requests are
queued (requests join a batch strictly in arrival order):

1. If a preferred size can be formed from the queued requests, send the
   **largest** preferred size that can be formed.
2. Otherwise, if ``max_batch_size`` requests are queued, send that many.
3. Otherwise, with no delay configured, send everything queued at once.
4. With a delay configured, hold the partial batch while its oldest request
   has waited less than ``max_queue_delay_microseconds``; an arrival that
   completes a preferred or the maximum batch sends it at once, and when the
   delay runs out the batch goes as it is.

A request that arrives at the very instant a decision is made is part of that
decision (it is already queued). Requests never time out and the queue is
unbounded (Triton's defaults ``default_timeout_microseconds`` 0 and
``max_queue_size`` 0); priorities and ``preserve_ordering`` are not modelled.
This follows the documented behaviour (batcher.md) rather than every corner of
Triton's C++ scheduler. One consequence worth knowing: with preferred sizes set,
no batch is ever larger than the largest preferred size (rule 1 fires first),
so ``max_batch_size`` then only bounds what a backlog could have formed.

Two engines give the same answer for the same inputs (the tests check them
request by request):

* :class:`DynamicBatcher`, a SimPy component for composing with other SimPy
  parts (``yield from batcher.infer(i)`` inside a request process);
* :func:`simulate_batching`, an exact next-event computation in plain Python
  over a whole arrival array (no event queue: the FIFO queue is a contiguous
  index range and the instances a heap of free times). With
  ``max_batch_size == 1`` it is a FIFO c-server queue and uses the Lindley /
  Kiefer-Wolfowitz recursions of :mod:`sim.analytic`.

Batch service times come from a callable ``service(batch_size, k)`` giving the
seconds of the ``k``-th batch sent (k = 0, 1, ...). :class:`QuantileService`
builds one from per-batch-size distributions (e.g. measured latency profiles,
``sim.profiles.Profile.service_time``) and one array of uniforms: the k-th
batch takes the ``u[k]`` quantile of its size's distribution, so two servers
forming different batches still draw comonotone times (common random numbers).
"""
from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import simpy

from .analytic import kiefer_wolfowitz, lindley

ServiceFn = Callable[[int, int], float]


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class DynamicBatchingConfig:
    """Triton's dynamic-batching settings for one model (defaults are Triton's)."""

    max_batch_size: int = 1
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_microseconds: float = 0
    instance_count: int = 1

    def __post_init__(self):
        if int(self.max_batch_size) != self.max_batch_size or self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {self.max_batch_size!r}")
        pref = tuple(sorted({int(p) for p in self.preferred_batch_size}))
        for p in pref:
            if not 1 <= p <= self.max_batch_size:
                raise ValueError(f"preferred_batch_size {p} must be in [1, max_batch_size={self.max_batch_size}]")
        object.__setattr__(self, "preferred_batch_size", pref)
        d = float(self.max_queue_delay_microseconds)
        if not (math.isfinite(d) and d >= 0):
            raise ValueError(f"max_queue_delay_microseconds must be >= 0, got {self.max_queue_delay_microseconds!r}")
        if int(self.instance_count) != self.instance_count or self.instance_count < 1:
            raise ValueError(f"instance_count must be an integer >= 1, got {self.instance_count!r}")

    @property
    def max_queue_delay_s(self) -> float:
        return float(self.max_queue_delay_microseconds) * 1e-6

    @property
    def saturated_batch_size(self) -> int:
        """The batch sent when requests are always waiting: the largest preferred size, else the maximum."""
        return self.preferred_batch_size[-1] if self.preferred_batch_size else int(self.max_batch_size)

    def batch_size(self, queued: int, expired: bool) -> int:
        """How many of ``queued`` requests to send now; 0 means hold (rules 1-4 of the module doc).

        ``expired``: the oldest queued request has waited ``max_queue_delay`` or longer.
        """
        if queued <= 0:
            return 0
        m = min(int(queued), int(self.max_batch_size))
        for p in reversed(self.preferred_batch_size):
            if p <= m:
                return p
        if m == self.max_batch_size or self.max_queue_delay_microseconds == 0 or expired:
            return m
        return 0

    def next_trigger(self, queued: int) -> int:
        """Smallest queue length above ``queued`` at which an arrival sends a batch at once."""
        for p in self.preferred_batch_size:
            if p > queued:
                return p
        return int(self.max_batch_size)

    def capacity_rps(self, mean_service: Callable[[int], float]) -> float:
        """Renewal-reward saturation throughput: instances x saturated batch / its mean seconds."""
        b = self.saturated_batch_size
        return self.instance_count * b / float(mean_service(b))


# --------------------------------------------------------------------------- service times
class QuantileService:
    """Batch seconds by inverse transform: the k-th batch of size b takes the u[k] quantile of ``dist(b)``.

    ``dist(b)`` returns either an object with a ``samples`` array (``sim.dist.Empirical``;
    its quantile function is the sorted samples, so resampling stays exact) or a
    ``scipy``-like object with ``ppf``. Distributions are built lazily and cached per size.
    """

    def __init__(self, dist: Callable[[int], object], uniforms: np.ndarray):
        u = np.asarray(uniforms, dtype=float).ravel()
        if u.size == 0 or np.any((u < 0) | (u >= 1)):
            raise ValueError("uniforms must be a non-empty array in [0, 1)")
        self._dist = dist
        self.uniforms = u
        self._n = u.size
        self._sorted: dict[int, np.ndarray] = {}
        self._tables: dict[int, tuple] = {}  # b -> (sorted samples, ranks) or (ppf value per draw, None)
        self._ranks: dict[int, list] = {}

    def quantiles(self, b: int) -> np.ndarray:
        """The sorted samples of ``dist(b)`` (empirical), or None for a ppf distribution."""
        if b not in self._sorted:
            d = self._dist(b)
            samples = getattr(d, "samples", None)
            self._sorted[b] = None if samples is None else np.sort(np.asarray(samples, dtype=float))
        return self._sorted[b]

    def draws(self, b: int, n: int, k0: int = 0) -> np.ndarray:
        """Seconds of batches k0 .. k0+n-1, all of size ``b`` (vectorised ``__call__``)."""
        u = self.uniforms[(k0 + np.arange(n)) % self._n]
        qs = self.quantiles(b)
        if qs is None:
            return np.asarray(self._dist(b).ppf(u), dtype=float)
        return qs[(u * qs.size).astype(np.int64)]

    def __call__(self, b: int, k: int) -> float:
        entry = self._tables.get(b)
        if entry is None:
            qs = self.quantiles(b)
            if qs is None:
                entry = (self.draws(b, self._n).tolist(), None)
            else:
                m = qs.size
                if m not in self._ranks:  # u[k] -> rank in the sorted samples, shared by sizes with m samples
                    self._ranks[m] = (self.uniforms * m).astype(np.int64).tolist()
                entry = (qs.tolist(), self._ranks[m])
            self._tables[b] = entry
        values, ranks = entry
        k %= self._n
        return values[k] if ranks is None else values[ranks[k]]

    def mean(self, b: int) -> float:
        """Mean seconds of one batch of size ``b`` (over the distribution, not the draws)."""
        qs = self.quantiles(b)
        return float(qs.mean()) if qs is not None else float(self._dist(b).mean())


# --------------------------------------------------------------------------- results
@dataclass
class BatchRun:
    """Per-request and per-batch results of a batching server.

    Per request (arrival order): ``arrival``, ``dispatch`` (its batch was sent),
    ``end`` (its batch finished), ``batch_size`` (size of its batch). Per batch
    (dispatch order): ``batch_start``, ``batch_end``, ``batch_sizes``.
    """

    arrival: np.ndarray
    dispatch: np.ndarray
    end: np.ndarray
    batch_size: np.ndarray
    batch_start: np.ndarray
    batch_end: np.ndarray
    batch_sizes: np.ndarray
    instance_count: int

    @property
    def latency(self) -> np.ndarray:
        return self.end - self.arrival

    @property
    def queue_wait(self) -> np.ndarray:
        return self.dispatch - self.arrival

    def busy_time(self, until: float) -> float:
        """Instance-seconds spent running batches within [0, until]."""
        return float(np.sum(np.clip(np.minimum(self.batch_end, until) - self.batch_start, 0.0, None)))

    def utilization(self, until: float) -> float:
        """Busy instance-seconds / (instances x until): the share of time the model instances compute."""
        return self.busy_time(until) / (self.instance_count * until) if until > 0 else math.nan

    def completed_by(self, t: float) -> int:
        return int(np.sum(self.end <= t))

    def mean_batch_size(self) -> float:
        """Requests per batch, averaged over batches."""
        return float(self.batch_sizes.mean()) if self.batch_sizes.size else math.nan


def _check_arrivals(arrivals) -> np.ndarray:
    a = np.asarray(arrivals, dtype=float).ravel()
    if a.size and (not np.all(np.isfinite(a)) or a[0] < 0 or np.any(np.diff(a) < 0)):
        raise ValueError("arrivals must be a finite, non-decreasing array of times >= 0")
    return a


# --------------------------------------------------------------------------- fast exact engine
def simulate_batching(arrivals, config: DynamicBatchingConfig, service: ServiceFn) -> BatchRun:
    """Run every request of ``arrivals`` (seconds, sorted) through the batching server.

    Exact next-event computation of the rules in the module docstring: each
    decision happens at ``max(earliest free instance, oldest queued arrival,
    previous decision)`` and sees every request that has arrived by then; a held
    batch goes at the arrival that completes the next preferred/maximum size or
    at the oldest request's deadline, whichever is first. Returns a BatchRun.
    """
    a = _check_arrivals(arrivals)
    n = a.size
    c = int(config.instance_count)
    if config.max_batch_size == 1:
        return _fifo(a, config, service)
    al = a.tolist()
    B = int(config.max_batch_size)
    delay = config.max_queue_delay_s
    # The rule as lookup tables over the queue length q (0..B): size to send at once
    # (0 = hold) before and after the delay has run out, and the next trigger size.
    send_now = [config.batch_size(q, False) for q in range(B + 1)]
    send_expired = [config.batch_size(q, True) for q in range(B + 1)]
    trigger = [config.next_trigger(q) for q in range(B + 1)]
    free = [0.0] * c
    starts: list[float] = []
    ends: list[float] = []
    sizes: list[int] = []
    h = 0
    last = 0.0
    k = 0
    bisect_right = bisect.bisect_right
    heapreplace = heapq.heapreplace
    while h < n:
        head = al[h]
        t = free[0]
        if head > t:
            t = head
        if last > t:
            t = last
        hi = h + B if h + B < n else n
        q = bisect_right(al, t, h, hi) - h
        size = send_expired[q] if t - head >= delay else send_now[q]
        if size == 0:  # hold for a larger batch
            deadline = head + delay
            idx = h + trigger[q] - 1
            if idx < n and al[idx] <= deadline:  # an arrival completes a preferred/maximum batch
                t = al[idx]
                q = bisect_right(al, t, h, hi) - h
                size = send_expired[q] if t - head >= delay else send_now[q]
            else:  # the delay runs out: send what is there
                t = deadline
                q = bisect_right(al, t, h, hi) - h
                size = send_expired[q]
        s = service(size, k)
        k += 1
        heapreplace(free, t + s)
        starts.append(t)
        ends.append(t + s)
        sizes.append(size)
        h += size
        last = t
    bs = np.asarray(sizes, dtype=np.int64)
    bstart = np.asarray(starts, dtype=float)
    bend = np.asarray(ends, dtype=float)
    return BatchRun(a, np.repeat(bstart, bs), np.repeat(bend, bs), np.repeat(bs, bs), bstart, bend, bs, c)


def _fifo(a: np.ndarray, config: DynamicBatchingConfig, service: ServiceFn) -> BatchRun:
    """``max_batch_size == 1``: a FIFO queue with ``instance_count`` servers (Lindley / Kiefer-Wolfowitz)."""
    n = a.size
    if isinstance(service, QuantileService):
        s = service.draws(1, n)
    else:
        s = np.fromiter((service(1, k) for k in range(n)), dtype=float, count=n)
    gaps = np.diff(a, prepend=0.0)
    c = int(config.instance_count)
    wait = lindley(gaps, s) if c == 1 else kiefer_wolfowitz(gaps, s, c)
    start = a + wait
    end = start + s
    ones = np.ones(n, dtype=np.int64)
    return BatchRun(a, start, end, ones, start.copy(), end.copy(), ones.copy(), c)


def saturation_throughput(config: DynamicBatchingConfig, service: ServiceFn, requests: int) -> float:
    """Completions per second with ``requests`` all waiting at time 0 (an always-full queue)."""
    if requests < 1:
        raise ValueError("requests must be >= 1")
    run = simulate_batching(np.zeros(int(requests)), config, service)
    return requests / float(run.batch_end.max())


# --------------------------------------------------------------------------- SimPy engine
class DynamicBatcher:
    """SimPy model server: Triton's dynamic batcher feeding ``instance_count`` model instances.

    Use ``result = yield from batcher.infer(i)`` inside a request process; it
    returns ``(dispatch_time, end_time, batch_size)`` of the batch that served
    request ``i``. Busy instance-seconds, batches and their sizes are recorded.
    """

    def __init__(self, env: simpy.Environment, config: DynamicBatchingConfig, service: ServiceFn):
        self.env = env
        self.config = config
        self.service = service
        self.free = int(config.instance_count)
        self._queue: list[tuple[float, simpy.Event]] = []  # (arrival time, event of the request)
        self._head = 0
        self._wake: simpy.Event | None = None
        self.batches: list[tuple[float, float, int]] = []  # (start, end, size)
        env.process(self._scheduler())

    @property
    def queued(self) -> int:
        return len(self._queue) - self._head

    def infer(self, i: int | None = None):
        """Queue one request; wait for its batch to be sent and to finish."""
        ev = self.env.event()
        self._queue.append((self.env.now, ev))
        self._poke()
        done = yield ev
        result = yield done
        return result

    def _poke(self):
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _on_done(self, _event):
        self.free += 1
        self._poke()

    def _scheduler(self):
        env, cfg = self.env, self.config
        delay = cfg.max_queue_delay_s
        while True:
            q = min(self.queued, cfg.max_batch_size)
            if self.free == 0 or q == 0:
                self._wake = env.event()
                yield self._wake
                continue
            head_arrival = self._queue[self._head][0]
            size = cfg.batch_size(q, env.now - head_arrival >= delay)
            if size == 0:
                self._wake = env.event()
                timer = env.timeout(max(head_arrival + delay - env.now, 0.0))
                fired = yield self._wake | timer
                if timer in fired:
                    size = cfg.batch_size(min(self.queued, cfg.max_batch_size), True)
                else:
                    continue  # an arrival: look again
            self._dispatch(size)

    def _dispatch(self, size: int):
        env = self.env
        s = self.service(size, len(self.batches))
        result = (env.now, env.now + s, size)
        done = env.timeout(s, value=result)
        done.callbacks.append(self._on_done)
        self.free -= 1
        self.batches.append(result)
        for _arrival, ev in self._queue[self._head:self._head + size]:
            ev.succeed(done)
        self._head += size
        if self._head > 4096 and self._head * 2 > len(self._queue):  # drop served entries now and then
            del self._queue[: self._head]
            self._head = 0

    def utilization(self, until: float) -> float:
        if until <= 0:
            return math.nan
        busy = sum(max(min(e, until) - s, 0.0) for s, e, _b in self.batches)
        return busy / (self.config.instance_count * until)


def simulate_batching_simpy(arrivals, config: DynamicBatchingConfig, service: ServiceFn) -> BatchRun:
    """The same run as :func:`simulate_batching`, through the SimPy :class:`DynamicBatcher`."""
    a = _check_arrivals(arrivals)
    n = a.size
    env = simpy.Environment()
    batcher = DynamicBatcher(env, config, service)
    dispatch = np.full(n, np.nan)
    end = np.full(n, np.nan)
    size = np.zeros(n, dtype=np.int64)

    def request(i):
        d, e, b = yield from batcher.infer(i)
        dispatch[i], end[i], size[i] = d, e, b

    def drive():
        for i, t in enumerate(a.tolist()):
            if t > env.now:
                yield env.timeout(t - env.now)
            env.process(request(i))

    env.process(drive())
    env.run()
    bt = np.array(batcher.batches, dtype=float).reshape(-1, 3)
    return BatchRun(a, dispatch, end, size, bt[:, 0], bt[:, 1], bt[:, 2].astype(np.int64),
                    int(config.instance_count))


__all__ = ["DynamicBatchingConfig", "QuantileService", "BatchRun", "simulate_batching",
           "simulate_batching_simpy", "saturation_throughput", "DynamicBatcher"]
