"""sim.failover against Route 53's health-check rules and DNS TTL caching."""
from __future__ import annotations

import numpy as np
import pytest

from sim.components import FaultSchedule, Outage
from sim.failover import (AnswerSchedule, HealthCheckConfig, HealthTimeline, ResolverCaches, answer_schedule,
                          latency_routing, simulate_health_checks, weighted_quantile)


def outage(start, end):
    return FaultSchedule([Outage(start, end, "error")])


def test_defaults_are_route53s():
    c = HealthCheckConfig()
    assert (c.request_interval, c.failure_threshold, c.checkers, c.healthy_threshold_pct) == (30.0, 3, 8, 18.0)


@pytest.mark.parametrize("checkers,needed", [(8, 2), (5, 1), (50, 10), (100, 19), (3, 1), (16, 3)])
def test_more_than_18_percent_must_report_healthy(checkers, needed):
    assert HealthCheckConfig(checkers=checkers).min_healthy_checkers == needed


@pytest.mark.parametrize("kw", [dict(request_interval=0), dict(failure_threshold=0), dict(failure_threshold=11),
                                dict(failure_threshold=2.5), dict(checkers=0), dict(healthy_threshold_pct=100),
                                dict(result_delay=30.0)])
def test_bad_config_is_refused(kw):
    with pytest.raises(ValueError):
        HealthCheckConfig(**kw)


def closed_form_detection(cfg: HealthCheckConfig, phases, start):
    """Each checker flips at its failure_threshold-th failed probe; Route 53 flips when too few stay healthy."""
    first = phases + np.ceil((start - phases) / cfg.request_interval) * cfg.request_interval
    flips = np.sort(first + (cfg.failure_threshold - 1) * cfg.request_interval + cfg.result_delay)
    return flips[cfg.checkers - cfg.min_healthy_checkers]


@pytest.mark.parametrize("interval,threshold,checkers,delay", [(30, 3, 8, 0.0), (10, 3, 8, 0.0), (10, 1, 16, 4.0),
                                                              (30, 10, 5, 2.0)])
def test_detection_matches_closed_form(interval, threshold, checkers, delay):
    cfg = HealthCheckConfig(request_interval=interval, failure_threshold=threshold, checkers=checkers,
                            result_delay=delay)
    rng = np.random.default_rng(3)
    for _ in range(20):
        phases = rng.random(checkers) * interval
        start = 100 + rng.random() * 50
        h = simulate_health_checks(cfg, outage(start, start + 1000), 2000, phases)
        detected = h.first_change_after(start, False)
        assert detected == pytest.approx(closed_form_detection(cfg, phases, start))
        # about failure_threshold x request_interval after the failure
        assert (threshold - 1) * interval <= detected - start - delay <= threshold * interval


def test_a_blip_shorter_than_the_threshold_is_not_detected():
    cfg = HealthCheckConfig(request_interval=10, failure_threshold=3)
    phases = np.linspace(0, 9, 8)
    h = simulate_health_checks(cfg, outage(100, 115), 400, phases)  # at most 2 failed probes per checker
    assert h.healthy.all()
    assert all(not flips for flips in h.checker_changes)


def test_recovery_needs_threshold_successes_from_more_than_18_percent():
    cfg = HealthCheckConfig(request_interval=10, failure_threshold=3, checkers=8)
    phases = np.arange(8) * 1.25
    h = simulate_health_checks(cfg, outage(100, 300), 600, phases)
    back = h.first_change_after(300, True)
    # the 2nd checker (of 8) to see 3 good probes in a row turns the endpoint healthy
    first_ok = phases + np.ceil((300 - phases) / 10) * 10
    assert back == pytest.approx(np.sort(first_ok + 20)[1])
    assert not h.healthy_at(back - 1e-6) and h.healthy_at(back)
    assert list(h.healthy) == [True, False, True]


def test_always_healthy_timeline():
    h = HealthTimeline.always_healthy()
    assert h.healthy_at(np.array([0.0, 1e6])).all()
    assert np.isnan(h.first_change_after(0, False))


def test_resolver_cache_refresh_times():
    rng = np.random.default_rng(0)
    ttl = 60.0
    c = ResolverCaches.from_uniforms(rng.random(50), ttl)
    t = rng.uniform(0, 1000, 50)
    idx = np.arange(50)
    last, nxt = c.last_refresh(idx, t), c.next_refresh(idx, t)
    assert np.all(last <= t) and np.all(t < last + ttl)
    assert np.all(nxt >= t) and np.all(nxt < t + ttl)
    for k in ((last - c.phases) / ttl, (nxt - c.phases) / ttl):  # whole numbers of TTLs after the phase
        assert np.allclose(k, np.round(k))
    # a refresh instant is its own last and next refresh
    assert np.allclose(c.last_refresh(idx, c.phases + 120), c.phases + 120)
    assert np.allclose(c.next_refresh(idx, c.phases + 120), c.phases + 120)


def test_zero_ttl_means_every_request_resolves():
    c = ResolverCaches.from_uniforms(np.array([0.3, 0.7]), 0.0)
    t = np.array([5.0, 9.0])
    assert np.array_equal(c.last_refresh(np.array([0, 1]), t), t)
    assert np.array_equal(c.next_refresh(np.array([0, 1]), 7.0), [7.0, 7.0])
    with pytest.raises(ValueError):
        ResolverCaches(np.zeros(2), -1.0)


def test_change_reaches_resolvers_within_one_ttl_uniformly():
    u = (np.arange(1000) + 0.5) / 1000
    c = ResolverCaches.from_uniforms(u, 30.0)
    wait = c.next_refresh(np.arange(1000), 1234.5) - 1234.5
    assert wait.min() >= 0 and wait.max() < 30
    assert np.mean(wait) == pytest.approx(15, abs=0.1)


def test_latency_routing_takes_lowest_healthy_and_all_when_none_healthy():
    rtt = np.array([[10.0, 50.0, 90.0], [80.0, 20.0, 30.0]])
    deployed = [0, 1, 2]
    assert list(latency_routing(rtt, deployed, np.array([True, True, True]))) == [0, 1]
    assert list(latency_routing(rtt, deployed, np.array([False, True, True]))) == [1, 1]
    assert list(latency_routing(rtt, deployed, np.array([True, False, True]))) == [0, 2]
    assert list(latency_routing(rtt, deployed, np.array([False, False, False]))) == [0, 1]
    assert list(latency_routing(rtt, [1, 2], np.array([True, False, True]))) == [2, 2]


def test_answer_schedule_follows_health():
    h = HealthTimeline(np.array([0.0, 50.0, 90.0]), np.array([True, False, True]))
    rtt = np.array([[10.0, 50.0], [80.0, 20.0]])
    sched = answer_schedule({0: h}, 2, lambda healthy: latency_routing(rtt, [0, 1], healthy))
    assert isinstance(sched, AnswerSchedule)
    t = np.array([0.0, 49.9, 50.0, 89.9, 90.0, 200.0])
    assert list(sched.at(t, np.zeros(6, dtype=int))) == [0, 0, 1, 1, 0, 0]
    assert list(sched.at(t, np.ones(6, dtype=int))) == [1] * 6


def test_weighted_quantile():
    v = np.arange(1.0, 101.0)
    assert weighted_quantile(v, np.ones(100), 0.95) == 95
    assert weighted_quantile(v, np.ones(100), 0.5) == 50
    w = np.where(v > 90, 9.0, 1.0)  # the top ten carry half of the weight
    assert weighted_quantile(v, w, 0.5) == 90
    assert np.isnan(weighted_quantile([], [], 0.5))
    assert weighted_quantile([1.0, np.nan, 3.0], [1, 1, 1], 1.0) == 3.0


def _flips_probing_every_interval(config, faults, phase, horizon):
    """The definition, probe by probe (what _checker_flips must equal while skipping idle probes)."""
    status, run, flips = True, 0, []
    for t in np.arange(phase, horizon, config.request_interval):
        ok = faults.mode_at(float(t)) is None
        if ok == status:
            run = 0
            continue
        run += 1
        if run >= config.failure_threshold:
            status, run = ok, 0
            flips.append((float(t) + config.result_delay, status))
    return flips


def test_checker_flips_skip_idle_probes_without_changing_any_flip():
    from sim.components import Outage
    from sim.failover import _checker_flips

    rng = np.random.default_rng(7)
    for _ in range(300):
        interval = float(rng.choice([10.0, 30.0, 7.3]))
        cfg = HealthCheckConfig(request_interval=interval, failure_threshold=int(rng.integers(1, 11)),
                                result_delay=float(rng.uniform(0, interval / 2)))
        t, outages = 0.0, []
        for _ in range(int(rng.integers(0, 4))):
            t += float(rng.exponential(80))
            length = float(rng.choice([interval, 2 * interval, rng.exponential(100) + 0.5]))
            outages.append(Outage(t, t + length, str(rng.choice(["error", "hang", "none"]))))
            t += length
        faults = FaultSchedule(outages)
        phase = float(rng.uniform(0, interval))
        horizon = float(rng.uniform(50, 1000))
        assert _checker_flips(cfg, faults, phase, horizon) == _flips_probing_every_interval(cfg, faults, phase, horizon)


def test_failover_times_are_detection_plus_each_resolvers_wait():
    from sim.failover import failover_times

    # checkers every 10 s from phase 0, threshold 3, outage 100-400 s: the probes at 100, 110, 120 fail,
    # so Route 53 calls it down at 120 s (detection 20 s); probes at 400, 410, 420 pass: healthy at 420 s
    cfg = HealthCheckConfig(request_interval=10.0, failure_threshold=3, checkers=3)
    health = simulate_health_checks(cfg, FaultSchedule([Outage(100.0, 400.0)]), 1000.0, [0.0, 0.0, 0.0])
    ttl = 60.0
    phases = np.array([0.0, 15.0, 30.0, 45.0])  # resolvers refresh at phase + k * 60
    caches = ResolverCaches(phases, ttl)
    fo = failover_times(health, caches, [0, 1, 2, 3], [1.0, 1.0, 1.0, 1.0], 100.0, 400.0)
    # next refresh at or after 120 s: 120, 135, 150, 165 -> failover 20, 35, 50, 65 s after the start
    assert fo["detection_time_s"] == 20.0
    assert list(fo["per_resolver_s"]) == [20.0, 35.0, 50.0, 65.0]
    assert fo["failover_max_s"] == 65.0 and fo["failover_time_s"] == 65.0 and fo["failover_p50_s"] == 35.0
    assert fo["reroute_after_detect_s"] == 45.0
    # healthy again at 420: next refreshes 420, 435, 450, 465 -> failback 20 .. 65 s after the end
    assert fo["failback_time_s"] == 65.0
    short = failover_times(health, caches, [0, 1], [1.0, 1.0], 100.0, 115.0)  # over before the 3rd probe
    assert np.isnan(short["failover_time_s"]) and np.isnan(short["per_resolver_s"]).all()


def test_a_sub_microsecond_ttl_is_no_cache():
    tiny = ResolverCaches.from_uniforms(np.array([0.3, 0.9]), 1e-300)
    assert list(tiny.next_refresh(np.array([0, 1]), 42.0)) == [42.0, 42.0]
    assert list(tiny.last_refresh(np.array([0, 1]), np.array([5.0, 6.0]))) == [5.0, 6.0]
