"""sim.cluster against Kubernetes semantics: priority queue, quota admission, preemption and its victims."""
import numpy as np
import pytest

from sim.cluster import NEVER, Cluster, Jobs, PriorityClass, ResourceQuota

BRONZE, SILVER, GOLD = PriorityClass("bronze", 100), PriorityClass("silver", 500), PriorityClass("gold", 1000)
CALM = PriorityClass("calm", 1000, NEVER)


def jobs(*rows):
    """rows: (arrival h, duration h, gpus, namespace); CPUs follow at 8 per GPU."""
    a = np.array(rows, dtype=float)
    return Jobs(a[:, 0], a[:, 1], 8 * a[:, 2], a[:, 2], a[:, 3].astype(int))


def cluster(nodes=1, classes=(BRONZE, GOLD), quotas=None, grace_h=0.0, checkpoint_h=0.0):
    return Cluster(nodes, 64, 8, list(classes), quotas, grace_h, checkpoint_h)


def test_a_fitting_job_starts_on_arrival_and_runs_its_duration():
    r = cluster().run(jobs((1.0, 2.0, 4, 0), (1.5, 1.0, 4, 0)))
    assert np.allclose(r.start, [1.0, 1.5]) and np.allclose(r.end, [3.0, 2.5])
    assert r.preempted.sum() == 0


def test_queue_is_ordered_by_priority_then_creation_time():
    # a full node; then bronze (t=1) and a never-preempting high class (t=2) wait: the higher one goes first
    r = cluster(classes=(BRONZE, CALM)).run(jobs((0, 5, 8, 0), (1, 1, 8, 0), (2, 1, 8, 1), (3, 1, 8, 0)))
    assert r.start[2] == 5.0 and r.start[1] == 6.0 and r.start[3] == 7.0
    assert r.preempted.sum() == 0  # preemptionPolicy Never


def test_a_big_pending_job_does_not_block_a_small_one_that_fits():
    r = cluster().run(jobs((0, 5, 6, 0), (1, 1, 8, 0), (2, 1, 2, 0)))
    assert r.start[2] == 2.0 and r.start[1] == 5.0


def test_gold_preempts_bronze_after_the_grace_period_and_bronze_restarts():
    grace = 30 / 3600
    r = cluster(grace_h=grace).run(jobs((0, 10, 8, 0), (4, 1, 8, 1)))
    assert r.preempted.tolist() == [1, 0]
    assert r.start[1] == pytest.approx(4 + grace)  # the victim holds its GPUs for its grace period
    assert r.end[1] == pytest.approx(5 + grace)
    assert r.end[0] == pytest.approx(5 + grace + 10)  # no checkpoint: the bronze job starts over
    assert r.lost_gpu_h[0] == pytest.approx(8 * (4 + grace))


def test_a_checkpoint_keeps_the_work_done_before_it():
    r = cluster(checkpoint_h=1.5).run(jobs((0, 10, 8, 0), (4, 1, 8, 1)))
    assert r.end[0] == pytest.approx(5 + 10 - 3.0)  # checkpoints at 1.5 and 3.0 h survive
    assert r.lost_gpu_h[0] == pytest.approx(8 * 1.0)


def test_equal_priority_never_preempts():
    r = cluster(classes=(BRONZE, BRONZE)).run(jobs((0, 10, 8, 0), (4, 1, 8, 1)))
    assert r.preempted.sum() == 0 and r.start[1] == 10.0


def test_victims_are_the_least_important_after_reprieve():
    # SelectVictimsOnNode: remove every lower pod, then re-add from most important (earliest start) while
    # the preemptor still fits: the 4-GPU pod started first and is kept; the two later 2-GPU pods go
    r = cluster().run(jobs((0, 10, 4, 0), (1, 10, 2, 0), (2, 10, 2, 0), (3, 1, 4, 1)))
    assert r.preempted.tolist() == [0, 1, 1, 0]


def test_the_node_with_the_lowest_priority_victims_is_chosen():
    classes = (BRONZE, SILVER, GOLD)
    r = cluster(nodes=2, classes=classes).run(jobs((0, 10, 8, 1), (0.5, 10, 8, 0), (1, 1, 8, 2)))
    assert r.preempted.tolist() == [0, 1, 0]  # the bronze pod, not the silver one


def test_room_freed_by_preemption_is_held_for_the_preemptor():
    # during the grace period a bronze pod arriving later must not take the nominated node's room
    grace = 0.5
    r = cluster(grace_h=grace).run(jobs((0, 10, 8, 0), (4, 1, 8, 1), (4.2, 1, 8, 0)))
    assert r.start[1] == pytest.approx(4.5)
    assert r.start[2] >= r.end[1]


def test_quota_makes_pods_wait_and_refuses_a_pod_larger_than_the_quota():
    q = [ResourceQuota(requests_gpu=4), None]
    r = cluster(nodes=2, quotas=q).run(jobs((0, 2, 4, 0), (0, 2, 4, 0), (0, 1, 8, 0), (0, 1, 8, 1)))
    assert r.start[0] == 0.0 and r.start[1] == 2.0  # the cluster had room; the quota did not
    assert r.refused.tolist() == [False, False, True, False]
    assert np.isnan(r.end[2]) and r.start[3] == 0.0


def test_allocation_never_exceeds_capacity_and_accounts_for_all_work():
    rng = np.random.default_rng(3)
    n = 400
    j = Jobs(np.sort(rng.uniform(0, 100, n)), rng.exponential(2.0, n), np.zeros(n),
             rng.choice([1.0, 2.0, 4.0, 8.0], n), rng.integers(0, 3, n))
    j.cpu = 8 * j.gpu
    c = Cluster(4, 64, 8, [BRONZE, SILVER, GOLD], [ResourceQuota(requests_gpu=16)] * 3, 0.01, 0.25)
    r = c.run(j)
    assert r.alloc_gpu.max() <= 32 + 1e-9 and r.alloc_gpu.min() >= -1e-9
    assert r.preempted.sum() > 0
    busy = r.allocated_hours(0, np.inf)
    assert busy == pytest.approx(float(np.sum(j.gpu * j.duration) + r.lost_gpu_h.sum()), rel=1e-9)
    assert np.all(r.end >= r.start + j.duration - 1e-9)


def test_priority_class_values_follow_the_api_limits():
    with pytest.raises(ValueError):
        PriorityClass("system", 2_000_000_001)
    with pytest.raises(ValueError):
        PriorityClass("x", 1, "Sometimes")
