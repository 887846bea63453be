"""sim.autoscaler against the Kubernetes HPA: replica calculator cases, behaviour, pods."""
from __future__ import annotations

import math

import pytest
import simpy

from sim.autoscaler import (Deployment, HPAConfig, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
                            PodSample, hpa_process, replica_calculator)

NOW = 1000.0  # long after the pods started (past the CPU initialization period)


def pod(value, ready=True, pending=False):
    """A pod started long ago; Ready for a long time if ready, else never became Ready."""
    return PodSample(start_time=0.0, ready=ready, value=value, pending=pending,
                     ready_since=10.0 if ready else 0.0, sample_time=NOW)


def cpu(current, pods, target, tolerance=0.1):
    return replica_calculator(current, pods, target, tolerance, cpu=True, now=NOW)


# ---------------------------------------------------------------- replica calculator
# CPU cases from kubernetes pkg/controller/podautoscaler/replica_calculator_test.go (utilization in %
# of a 1-core request: 300m -> 30).
def test_scale_up():  # TestReplicaCalcScaleUp
    assert cpu(3, [pod(30), pod(50), pod(70)], 30) == 5


def test_scale_up_unready_less_scale():  # TestReplicaCalcScaleUpUnreadyLessScale
    assert cpu(3, [pod(30, ready=False), pod(50), pod(70)], 30) == 4


def test_scale_up_unready_no_scale():  # TestReplicaCalcScaleUpUnreadyNoScale
    assert cpu(3, [pod(40), pod(50, ready=False), pod(70, ready=False)], 30) == 3


def test_scale_down():  # TestReplicaCalcScaleDown
    assert cpu(5, [pod(10), pod(30), pod(50), pod(25), pod(25)], 50) == 3


def test_scale_down_ignores_unready_pods():  # TestReplicaCalcScaleDownIgnoresUnreadyPods
    assert cpu(5, [pod(10), pod(30), pod(50), pod(25, ready=False), pod(25, ready=False)], 50) == 2


def test_tolerance():  # TestReplicaCalcTolerance: 102% of target stays put
    assert cpu(3, [pod(1010 / 9), pod(103), pod(1020 / 11)], 100) == 3
    assert cpu(3, [pod(108)] * 3, 100) == 3
    assert cpu(3, [pod(112)] * 3, 100) == 4
    assert cpu(3, [pod(112)] * 3, 100, tolerance=0.2) == 3


def test_missing_metrics_count_as_full_request_on_scale_down():  # TestReplicaCalcMissingMetrics
    assert cpu(4, [pod(40), pod(9.5), pod(None), pod(None)], 100) == 3


@pytest.mark.parametrize("level, expected", [(100, 2), (190, 2), (60, 2)])
def test_missing_metrics_no_change(level, expected):  # TestReplicaCalcMissingMetricsNoChange{Eq,Gt,Lt}
    assert cpu(2, [pod(level), pod(None)], 100) == expected


def test_missing_metrics_unready_no_change():  # TestReplicaCalcMissingMetricsUnreadyNoChange
    assert cpu(3, [pod(10, ready=False), pod(45), pod(None)], 50) == 3


def test_missing_metrics_unready_scale_up():  # TestReplicaCalcMissingMetricsUnreadyScaleUp
    assert cpu(3, [pod(10, ready=False), pod(200), pod(None)], 50) == 4


def test_missing_metrics_unready_scale_down():  # TestReplicaCalcMissingMetricsUnreadyScaleDown
    assert cpu(4, [pod(10, ready=False), pod(10), pod(10), pod(None)], 50) == 3


def test_pending_pods_count_zero_on_scale_up_and_nothing_on_scale_down():
    P = pod(None, pending=True)
    assert cpu(4, [pod(100), pod(100), pod(100), P], 50) == 6  # (300 + 0) / 4 / 50 = 1.5 -> ceil(6.0)
    assert cpu(5, [pod(100), pod(100), pod(100), P, P], 50) == 6  # 300 / 5 / 50 = 1.2 -> ceil(6.0)
    assert cpu(4, [pod(100), pod(100), P, P], 50) == 4  # 200 / 4 / 50 = 1.0: within tolerance, hold
    assert cpu(3, [pod(10), pod(10), P], 50) == 1  # scale-down: the pending pod is left out, 0.2 x 2 -> 1


def test_custom_metric_counts_unready_pods_as_reported():
    # Pods metric (AverageValue): the current code filters unready pods for CPU only
    pods = [pod(20000), pod(10000), pod(30000)]
    assert replica_calculator(3, pods, 15000, cpu=False, now=NOW) == 4  # TestReplicaCalcScaleUpCM
    pods = [pod(12000)] * 5
    assert replica_calculator(5, pods, 20000, cpu=False, now=NOW) == 3  # TestReplicaCalcScaleDownCM
    pods = [pod(20000), pod(21000), pod(21000)]
    assert replica_calculator(3, pods, 20000, cpu=False, now=NOW) == 3  # TestReplicaCalcToleranceCM


def test_recently_ready_pod_waits_one_metric_window_for_cpu():
    fresh = PodSample(start_time=NOW - 60, ready=True, value=100, ready_since=NOW - 5, sample_time=NOW, window_s=15)
    settled = PodSample(start_time=NOW - 60, ready=True, value=100, ready_since=NOW - 20, sample_time=NOW, window_s=15)
    # the fresh pod's sample is ignored (0 on scale-up): (100 + 0) / 2 / 50 = 1 -> no change
    assert cpu(2, [pod(100), fresh], 50) == 2
    assert cpu(2, [pod(100), settled], 50) == 4


def test_no_usable_metric_raises():
    with pytest.raises(ValueError):
        cpu(2, [pod(None), pod(50, ready=False)], 50)


# ---------------------------------------------------------------- behaviour
def hpa(**kw) -> HorizontalPodAutoscaler:
    base = dict(target=50.0, min_replicas=1, max_replicas=100)
    base.update(kw)
    return HorizontalPodAutoscaler(HPAConfig(**base))


def test_default_behaviour_matches_the_documentation():
    cfg = HPAConfig(target=70)
    assert cfg.tolerance == 0.1 and cfg.sync_period_s == 15
    up, down = cfg.scale_up, cfg.scale_down
    assert up.stabilization_window_s == 0 and up.select_policy == "Max"
    assert {(p.type, p.value, p.period_s) for p in up.policies} == {("Percent", 100, 15), ("Pods", 4, 15)}
    assert down.stabilization_window_s == 300
    assert [(p.type, p.value, p.period_s) for p in down.policies] == [("Percent", 100, 15)]


@pytest.mark.parametrize("current, limit", [(1, 5), (2, 6), (4, 8), (5, 10), (10, 20)])
def test_scale_up_limit_is_max_of_double_and_plus_four(current, limit):
    assert hpa().normalize(0.0, current, 1000) == limit


def test_scale_up_limit_counts_changes_within_the_period():
    h = hpa()
    first = h.reconcile(0.0, 2, [pod(500), pod(500)])  # wants 20, may go to max(4, 6) = 6
    assert first == 6
    # 10 s later the period still holds the +4: start = 6 - 4 = 2, limit 6 -> no more
    assert h.normalize(10.0, 6, 60) == 6
    # one full period later the event has left the window (strictly after cutoff): start = 6 -> 12
    assert h.normalize(15.0, 6, 60) == 12


def test_select_policy_min_and_disabled():
    rules = HPAScalingRules(0.0, (HPAScalingPolicy("Percent", 100, 15), HPAScalingPolicy("Pods", 4, 15)), "Min")
    assert hpa(scale_up=rules).normalize(0.0, 10, 100) == 14
    off = HPAScalingRules(0.0, rules.policies, "Disabled")
    assert hpa(scale_up=off).normalize(0.0, 10, 100) == 10


def test_scale_down_waits_for_the_stabilization_window():
    h = hpa()
    assert h.normalize(0.0, 10, 10) == 10
    assert h.normalize(15.0, 10, 3) == 10  # the 10 of t=0 is still in the 300 s window
    assert h.normalize(299.0, 10, 3) == 10
    assert h.normalize(300.0, 10, 3) == 3  # t=0 is no longer strictly inside (0, 300]
    h2 = hpa(scale_down=HPAScalingRules(0.0, (HPAScalingPolicy("Percent", 100, 15),)))
    assert h2.normalize(0.0, 10, 10) == 10 and h2.normalize(15.0, 10, 3) == 3


def test_scale_down_rate_limit_and_min_replicas():
    slow = HPAScalingRules(0.0, (HPAScalingPolicy("Pods", 1, 60),))
    h = hpa(scale_down=slow, min_replicas=2)
    assert h.reconcile(0.0, 10, [pod(5)] * 10) == 9
    assert h.reconcile(15.0, 9, [pod(5)] * 9) == 9  # one pod per minute
    assert h.reconcile(61.0, 9, [pod(5)] * 9) == 8
    assert hpa(min_replicas=3, scale_down=HPAScalingRules(0.0, (HPAScalingPolicy("Percent", 100, 15),))) \
        .normalize(0.0, 10, 1) == 3


def test_max_and_min_replicas_bound_the_result():
    assert hpa(max_replicas=7).normalize(0.0, 5, 50) == 7
    h = hpa(min_replicas=3, max_replicas=7)
    assert h.reconcile(0.0, 9, [pod(50)] * 9) == 7
    assert h.reconcile(15.0, 1, [pod(50)]) == 3


def test_decisions_are_recorded():
    h = hpa()
    h.reconcile(0.0, 2, [pod(100), pod(100)])
    d = h.decisions[-1]
    assert (d.time_s, d.current, d.proposal, d.desired) == (0.0, 2, 4, 4)


# ---------------------------------------------------------------- pods and the SimPy process
def test_readiness_waits_for_the_next_probe():
    env = simpy.Environment()
    assert Deployment(env, 45, 10).readiness_delay() == 50
    assert Deployment(env, 40, 10).readiness_delay() == 40
    assert Deployment(env, 45, 0).readiness_delay() == 45


def test_deployment_scales_and_calls_back():
    env = simpy.Environment()
    log = []
    dep = Deployment(env, 30, 10, on_ready=lambda p: log.append(("ready", p.id, env.now)),
                     on_removed=lambda p: log.append(("removed", p.id, env.now)),
                     on_created=lambda p: log.append(("created", p.id, env.now)))
    dep.start(2, warm=True)

    def script():
        yield env.timeout(5)
        dep.scale(5)  # pods 2, 3, 4 ready at 35
        yield env.timeout(40)
        dep.scale(7)  # pods 5, 6 not ready until 75
        yield env.timeout(1)
        dep.scale(4)  # not-ready 6, 5 go first, then the newest ready (4)

    env.process(script())
    env.run(until=100)
    assert ("ready", 0, 0) in log and ("ready", 2, 35) in log and ("ready", 4, 35) in log
    assert [p.id for p in dep.pods] == [0, 1, 2, 3]
    assert ("removed", 4, 46) in log
    assert not any(e[0] == "ready" and e[1] in (5, 6) for e in log)  # deleted before they became Ready
    assert dep.replicas == 4 and len(dep.ready_pods()) == 4


def test_hpa_process_syncs_every_period_and_scales():
    env = simpy.Environment()
    dep = Deployment(env, 20, 10)
    dep.start(2, warm=True)
    h = hpa(target=50.0, sync_period_s=15.0)

    def observe(now):
        return dep.replicas, dep.samples(now, lambda p: 100.0 if p.is_ready(now) else 0.0, 15.0)

    env.process(hpa_process(env, h, observe, dep.scale))
    env.run(until=61)
    times = [d.time_s for d in h.decisions]
    assert times == [15.0, 30.0, 45.0, 60.0]
    assert h.decisions[0].desired == 4  # 100% of a 50% target on two pods
    # new pods are Ready at 35; at 30 they are unready (0 on scale-up): (100+100+0+0)/4/50 = 1 -> hold
    assert h.decisions[1].desired == 4
    assert math.isclose(dep.all_pods[2].ready_at, 35.0)
