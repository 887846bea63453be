"""Simulator overhead: the same M/M/c in bare SimPy and built from ``sim`` parts.

The two versions run alternately (to share the machine's noise) on the same
arrival and service draws; the report is customers per second of each and
their ratio, whose budget is >= 0.7 (DESIGN.md). A benchmark, not a test:
timings on a shared 2-core machine are too noisy to assert on.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import simpy

from .components import ReplicaPool, drive
from .metrics import RequestLog
from .rng import Streams


def _draws(n: int, lam: float, mu: float, seed: int):
    s = Streams(seed)
    return np.cumsum(s["arrivals"].exponential(1 / lam, n)), s["service"].exponential(1 / mu, n)


def bare_simpy(arrivals, services, c: int) -> float:
    """Textbook SimPy: a source process and one process per customer holding a Resource."""
    env = simpy.Environment()
    res = simpy.Resource(env, capacity=c)
    waits = np.empty(arrivals.size)

    def customer(i):
        t0 = env.now
        with res.request() as req:
            yield req
            waits[i] = env.now - t0
            yield env.timeout(services[i])

    def source():
        for i, t in enumerate(arrivals):
            yield env.timeout(t - env.now)
            env.process(customer(i))

    env.process(source())
    env.run()
    return float(waits.mean())


def fifo_station(env: simpy.Environment, arrivals, services, c: int) -> tuple[RequestLog, ReplicaPool]:
    """An M/M/c-style FIFO station from ReplicaPool, drive and RequestLog, ready for ``env.run()``."""
    pool = ReplicaPool(env, servers=c)
    log = RequestLog(arrivals.size)

    def customer(i):
        log.arrival[i] = env.now
        outcome, start = yield from pool.serve(services[i])
        log.start[i] = start
        log.end[i] = env.now
        log.outcome[i] = outcome

    env.process(drive(env, arrivals, customer))
    return log, pool


def with_sim(arrivals, services, c: int) -> float:
    """The same model from ``sim`` parts (with utilization tracking)."""
    env = simpy.Environment()
    log, _ = fifo_station(env, arrivals, services, c)
    env.run()
    return float(np.mean(log.start - log.arrival))


def run(customers: int = 50_000, rounds: int = 5, c: int = 4, rho: float = 0.8, seed: int = 0) -> dict:
    mu = 1.0
    lam = rho * c * mu
    arrivals, services = _draws(customers, lam, mu, seed)
    rates = {"bare_simpy": [], "sim": []}
    for _ in range(rounds):
        for name, fn in (("bare_simpy", bare_simpy), ("sim", with_sim)):
            t0 = time.perf_counter()
            fn(arrivals, services, c)
            rates[name].append(customers / (time.perf_counter() - t0))
    bare = statistics.median(rates["bare_simpy"])
    ours = statistics.median(rates["sim"])
    return {"model": f"M/M/{c} at rho={rho}", "customers": customers, "rounds": rounds,
            "bare_simpy_cps": bare, "sim_cps": ours, "ratio": ours / bare, "budget": 0.7}


def report(result: dict) -> str:
    return (f"{result['model']}, {result['customers']} customers, median of {result['rounds']} alternating rounds\n"
            f"  bare SimPy : {result['bare_simpy_cps']:>10,.0f} customers/s\n"
            f"  sim parts  : {result['sim_cps']:>10,.0f} customers/s\n"
            f"  ratio      : {result['ratio']:.2f} (budget >= {result['budget']})")
