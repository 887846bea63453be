"""Callers that call a model server through an optional circuit breaker, with a cached fallback.

The calling service holds one of ``caller_threads`` worker threads per request from
arrival to answer (Tomcat's thread pool, first come first served). Each call goes
through a ``sim.breaker.CircuitBreaker`` (resilience4j's decorator order:
``tryAcquirePermission``, the call, then ``onSuccess`` / ``onError`` with its duration)
to a ``ReplicaPool``; the call gives up at its start + ``timeout_s`` (a replica already
working on it finishes it). During an outage the server either hangs (nothing comes
back before the deadline) or fails after ``error_s``. A refused or failed call answers
from a prediction cache in ``fallback_s`` when the request has an entry there.
"""
from __future__ import annotations

import numpy as np
import simpy

from .breaker import CircuitBreaker, State
from .components import FaultSchedule, Outage, ReplicaPool, Slots, drive
from .metrics import ERROR, FALLBACK, OK, TIMEOUT, RequestLog


def simulate_guarded_calls(arrivals, service, cached, outage: Outage, breaker: CircuitBreaker | None, *,
                           replicas: int, caller_threads: int, network_s: float, timeout_s: float, error_s: float,
                           fallback_s: float, arm: str = "") -> dict:
    """Every request's log, the caller seconds wasted on failed calls, which calls were half-open probes, the
    failure rate each time the breaker opened, and the server's utilisation."""
    env = simpy.Environment()
    pool = ReplicaPool(env, servers=replicas)
    workers = Slots(env, caller_threads)
    faults = FaultSchedule([outage])
    n = len(arrivals)
    log = RequestLog(n, arm)
    wasted = np.zeros(n)  # caller seconds spent on downstream calls that failed
    probe = np.zeros(n, dtype=bool)  # admitted while HALF_OPEN
    opened_at_rates = []  # the rolling failure rate each time the breaker opened
    rtt, half_rtt = network_s, network_s / 2

    def fall_back(i):
        if cached[i]:
            yield env.timeout(fallback_s)
            return FALLBACK
        return ERROR

    def request(i):
        log.arrival[i] = env.now
        wait = workers.take()
        if wait is not None:
            yield wait
        yield from call(i)
        workers.give()
        log.end[i] = env.now

    def call(i):
        now = env.now
        if breaker is not None:
            if not breaker.try_acquire_permission(now):
                log.outcome[i] = yield from fall_back(i)
                return
            probe[i] = breaker.state is State.HALF_OPEN
        # Every call pays the same network delay, so entering the server's queue now and adding the
        # round trip afterwards gives each request the same timeline as paying half on the way in.
        mode = faults.mode_at(now + half_rtt)
        deadline = now + timeout_s
        if mode is None:
            outcome, start = yield from pool.serve(service[i], deadline=deadline - rtt)
            log.start[i] = start + half_rtt
            yield env.timeout(rtt if outcome == OK else max(0.0, deadline - env.now))
        elif mode == "error":
            yield env.timeout(min(error_s + rtt, timeout_s))
            outcome = ERROR if error_s + rtt <= timeout_s else TIMEOUT
        else:  # hang: nothing comes back; the caller waits out its timeout
            yield env.timeout(timeout_s)
            outcome = TIMEOUT
        duration = env.now - now
        if breaker is not None:
            if outcome == OK:
                breaker.on_success(env.now, duration)
            else:
                before = breaker.state
                breaker.on_error(env.now, duration)
                if before is not State.OPEN and breaker.state is State.OPEN:
                    opened_at_rates.append(breaker.failure_rate(env.now))
        if outcome != OK:
            wasted[i] = duration
            outcome = yield from fall_back(i)
        log.outcome[i] = outcome

    env.process(drive(env, arrivals, request))
    env.run()
    return {"log": log, "wasted": wasted, "probe": probe, "opened_at_rates": opened_at_rates,
            "utilization": pool.utilization()}
