"""Client connection policies for calls between services, in SimPy: what a request waits for.

Semantics follow REFERENCES.md §21:

* ``per_request``: a new TCP connection per call (1 RTT before the first byte); with ``tls``
  a full TLS 1.3 handshake adds 1 RTT (RFC 8446bis: the client's Finished travels with its
  first request) plus the handshake's CPU: the server's share queues on the server's cores,
  the client's share delays only the caller. No resumption (0-RTT is not replay-safe).
* ``keep_alive``: HTTP/1.1 persistent connections (RFC 9112 §9.3), one request in flight per
  connection; a pool of ``slots`` connections opened (and handshaken) before the window, so a
  call waits for a free connection, never for a handshake.
* ``multiplexed``: HTTP/2 streams on long-lived connections (RFC 9113 §6.5.2): a call waits
  only if ``slots`` = connections × SETTINGS_MAX_CONCURRENT_STREAMS streams are open (grpc-go
  clients assume 100 until the server says otherwise; a server's default is unlimited).

A call is: [connection or slot] → half an RTT plus the request's bytes on the link → the
server's cores (FIFO, ``cores`` at a time, ``server_s`` each) → half an RTT back → the
caller's own time (``client_s``: its stack, encode and decode, the kernel). On loopback
with no load, a call therefore takes the measured round trip (``sim.rpc``), which is where
these numbers come from. Differences from real stacks: no TCP slow start, no congestion,
no Nagle, one link of fixed RTT, server time constant per request (its variation is in
``client_s``); HTTP/2 head-of-line blocking on a lost packet is not modelled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

POLICIES = ("per_request", "keep_alive", "multiplexed")


@dataclass(frozen=True)
class CallCost:
    """What one call costs, apart from the network: per-request caller times (seconds, one per
    request, drawn with common random numbers) and constant server CPU seconds."""

    client_s: np.ndarray       # caller-side time of each request (its own stack, encoding, kernel)
    server_s: float            # server core time per request (transport + decode + handler + encode)
    connect_server_s: float = 0.0  # extra server core time to accept a new TCP connection
    tls_server_s: float = 0.0  # server core time of a full TLS 1.3 handshake
    tls_client_s: float = 0.0  # caller time of the same handshake
    request_bytes: int = 0     # request body on the wire (the answer is a few bytes)
    server_extra_s: np.ndarray | None = None  # per-request server time on top of server_s (the handler's work)

    def __post_init__(self):
        if self.server_s < 0 or self.connect_server_s < 0 or self.tls_server_s < 0 or self.tls_client_s < 0:
            raise ValueError("CallCost times must be >= 0")


@dataclass(frozen=True)
class Link:
    """One network path: round-trip time and bandwidth (bytes per second; inf = no serialisation delay)."""

    rtt_s: float = 0.0
    bandwidth_Bps: float = float("inf")

    def wire_s(self, nbytes: int) -> float:
        return nbytes / self.bandwidth_Bps if np.isfinite(self.bandwidth_Bps) else 0.0


class Service:
    """A service's cores (FIFO) and, per caller, its connection slots under one policy."""

    def __init__(self, env: simpy.Environment, cores: int, policy: str, slots: int = 1, tls: bool = False):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        if cores < 1 or slots < 1:
            raise ValueError("cores and slots must be >= 1")
        self.env, self.policy, self.tls = env, policy, tls
        self.cores = simpy.Resource(env, cores)
        self.slots = None if policy == "per_request" else simpy.Resource(env, slots)
        self.busy_s = 0.0
        self.handshakes = 0

    def work(self, seconds: float):
        """Hold one of the cores for ``seconds`` (FIFO); compose with ``yield from``."""
        with self.cores.request() as req:
            yield req
            yield self.env.timeout(seconds)
        self.busy_s += seconds


def call(env: simpy.Environment, svc: Service, link: Link, cost: CallCost, i: int):
    """One call of request ``i`` (compose with ``yield from``); returns when the caller has its answer."""
    half, wire = link.rtt_s / 2, link.wire_s(cost.request_bytes)
    if svc.policy == "per_request":
        svc.handshakes += 1
        if svc.tls:  # SYN/SYN-ACK, then ClientHello out; server's flight after its CPU; client Finished + request
            yield env.timeout(link.rtt_s + half)
            yield from svc.work(cost.tls_server_s)
            yield env.timeout(half + cost.tls_client_s + half + wire)
        else:  # SYN/SYN-ACK, then the request rides with the ACK
            yield env.timeout(link.rtt_s + half + wire)
        yield from svc.work(cost.server_s + cost.connect_server_s + _extra(cost, i))
        yield env.timeout(half + cost.client_s[i])
        return
    with svc.slots.request() as slot:
        yield slot
        yield env.timeout(half + wire)
        yield from svc.work(cost.server_s + _extra(cost, i))
        yield env.timeout(half + cost.client_s[i])


def _extra(cost: CallCost, i: int) -> float:
    return 0.0 if cost.server_extra_s is None else float(cost.server_extra_s[i])


@dataclass
class Run:
    latency_s: np.ndarray   # per request, arrival order (NaN: unfinished at the end)
    done_s: np.ndarray      # completion time per request
    busy_s: float           # server core-seconds used
    window_s: float         # simulated time


def open_loop(arrivals_s: np.ndarray, cost: CallCost, link: Link, policy: str, cores: int = 1, slots: int = 1,
              tls: bool = False) -> Run:
    """Poisson (or any) arrivals: each request is its own caller; latency from arrival to answer."""
    env = simpy.Environment()
    svc = Service(env, cores, policy, slots, tls)
    n = len(arrivals_s)
    done = np.full(n, np.nan)

    def one(i):
        yield from call(env, svc, link, cost, i)
        done[i] = env.now

    def source():
        for i in range(n):
            d = arrivals_s[i] - env.now
            if d > 0:
                yield env.timeout(d)
            env.process(one(i))

    env.process(source())
    env.run()
    return Run(done - arrivals_s, done, svc.busy_s, float(env.now))


def closed_loop(n: int, callers: int, cost: CallCost, link: Link, policy: str, cores: int = 1, slots: int = 1,
                tls: bool = False) -> Run:
    """``callers`` callers each calling back to back (no think time) until ``n`` calls have finished:
    the service's throughput under that many callers. Latency is per call, in completion order."""
    env = simpy.Environment()
    svc = Service(env, cores, policy, slots, tls)
    done = np.full(n, np.nan)
    lat = np.full(n, np.nan)
    state = {"next": 0, "finished": 0}

    def caller():
        while state["next"] < n:
            i = state["next"]
            state["next"] += 1
            t0 = env.now
            yield from call(env, svc, link, cost, i)
            k = state["finished"]
            done[k], lat[k] = env.now, env.now - t0
            state["finished"] += 1

    for _ in range(callers):
        env.process(caller())
    env.run()
    return Run(lat, done, svc.busy_s, float(env.now))


def throughput(run: Run, warmup: float = 0.1, batches: int = 20):
    """Completions per second between the first and the last ``warmup`` share of completions (the
    start-up and the drain, when callers stop issuing, are left out), with a batch-means interval
    (on the gaps between completions; the rate is one over the mean gap)."""
    d = np.sort(run.done_s[np.isfinite(run.done_s)])
    cut = int(len(d) * warmup)
    d = d[cut:len(d) - cut]
    if len(d) < 2 * batches + 1:
        return float("nan"), (float("nan"), float("nan"))
    from .metrics import batch_means

    iv = batch_means(np.diff(d), n_batches=batches)  # mean gap between completions, batch by batch
    est = 1.0 / iv.estimate
    return float(est), (1.0 / iv.high, 1.0 / iv.low) if iv.low > 0 else (float("nan"), float("nan"))


def little_bound_rps(slots: int, cost: CallCost, link: Link) -> float:
    """The most a ``slots``-wide pool can carry (Little's law): slots / (RTT + wire + server + mean caller)."""
    return slots / (link.rtt_s + link.wire_s(cost.request_bytes) + cost.server_s + float(np.mean(cost.client_s)))
