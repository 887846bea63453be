"""sim.rollout against the Kubernetes Deployment and Argo Rollouts blue-green semantics (REFERENCES.md §23, §7)."""
import math

import numpy as np
import pytest

from sim.rollout import NEW, OLD, OK, Config, ready_time, resolve_fenceposts, run_strategy, summarize
from sim.shadow import compare


@pytest.mark.parametrize("replicas, surge_pct, unavail_pct, expected", [
    (8, 25, 25, (2, 2)),     # 25% of 8
    (10, 25, 25, (3, 2)),    # surge rounds up, unavailable rounds down
    (4, 10, 10, (1, 0)),
    (3, 0, 0, (0, 1)),       # both zero: the controller makes maxUnavailable 1
    (8, 100, 0, (8, 0)),
])
def test_fenceposts_round_like_kubernetes(replicas, surge_pct, unavail_pct, expected):
    assert resolve_fenceposts(replicas, surge_pct, unavail_pct) == expected


def test_readiness_waits_for_the_next_probe_after_the_load():
    assert ready_time(0.0, 25.0, 0.0, 10.0) == 30.0
    assert ready_time(0.0, 30.0, 0.0, 10.0) == 30.0
    assert ready_time(100.0, 0.0, 0.0, 10.0) == 100.0
    assert ready_time(0.0, 3.0, 5.0, 10.0) == 5.0   # initialDelaySeconds first
    assert ready_time(0.0, 6.0, 5.0, 10.0) == 15.0


def scenario(strategy, bad=False, rate=4.0, n=6000, load=100.0, seed=1, **cfg):
    rng = np.random.default_rng(seed)
    c = Config(**cfg)
    loads = load * rng.lognormal(-0.03, 0.25, 400) if load > 0 else np.zeros(400)
    r = run_strategy(strategy, c, arrivals=np.cumsum(rng.exponential(1 / rate, n)),
                     service=rng.exponential(1 / 0.6, n), bad=rng.random(n) < 0.3, route=rng.random(n),
                     load_times=loads, rollout_at=60.0, new_is_bad=bad, horizon=1e9)
    assert r["finished"]
    tl = r["deployment"].timeline
    return r, np.asarray(tl.times), np.asarray(tl.pods).reshape(-1, 2), np.asarray(tl.serving).reshape(-1, 2)


@pytest.mark.parametrize("surge, unavail", [(25, 25), (25, 0), (100, 0), (0, 25), (50, 50)])
def test_rolling_update_keeps_within_surge_and_unavailable(surge, unavail):
    r, t, pods, serving = scenario("rolling", max_surge=surge, max_unavailable=unavail)
    s, u = resolve_fenceposts(8, surge, unavail)
    assert pods.sum(axis=1).max() <= 8 + s
    assert serving.sum(axis=1).min() >= 8 - u   # min_ready_seconds = 0: ready == available
    assert pods[-1].tolist() == [0, 8] and serving[-1].tolist() == [0, 8]


def test_surge_only_rolling_update_never_loses_capacity():
    r, t, pods, serving = scenario("rolling", max_surge=25, max_unavailable=0)
    summary = summarize(r["deployment"], r["end"], 4.0, 0.6, 0.0)
    assert summary["degraded_s"] == 0 and summary["downtime_s"] == 0


def test_min_ready_seconds_slows_the_rollout():
    def last_old_gone(**cfg):
        _, t, pods, _ = scenario("rolling", analysis_count=1, **cfg)
        return t[np.argmax((pods[:, OLD] == 0) & (t > 60))]
    # each wave waits minReadySeconds before old pods go: at least two waves for 8 pods at 25%/25%
    assert last_old_gone(min_ready_seconds=60.0) >= last_old_gone() + 120


def test_recreate_never_runs_two_versions_and_goes_down_for_a_load():
    r, t, pods, serving = scenario("recreate")
    assert not np.any((pods[:, OLD] > 0) & (pods[:, NEW] > 0))
    down = summarize(r["deployment"], r["end"], 4.0, 0.6, 0.0)["downtime_s"]
    assert down >= 60   # at least the fastest pod's load, rounded up to a probe


def test_blue_green_doubles_then_deletes_blue_after_the_delay():
    r, t, pods, serving = scenario("blue_green", scale_down_delay_seconds=45.0, switch_delay_s=2.0)
    assert pods.sum(axis=1).max() == 16
    switch = t[np.argmax(serving[:, NEW] > 0)] - 2.0   # the selector change reached the routers 2 s after
    blue_gone = t[np.argmax((pods[:, OLD] == 0) & (t > 60))]
    assert blue_gone == pytest.approx(switch + 45.0)
    assert serving.sum(axis=1).min() == 8   # the active service always has a full set
    assert summarize(r["deployment"], r["end"], 4.0, 0.6, 0.0)["downtime_s"] == 0


def test_blue_green_rollback_is_one_switch_only_while_blue_runs():
    inside, *_ = scenario("blue_green", bad=True, scale_down_delay_seconds=600.0, analysis_interval_s=30.0,
                          switch_delay_s=3.0)
    dep = inside["deployment"]
    assert dep.rollback_done_at - dep.detected_at == pytest.approx(3.0)
    after, *_ = scenario("blue_green", bad=True, scale_down_delay_seconds=10.0, analysis_interval_s=30.0)
    dep = after["deployment"]
    assert dep.rollback_done_at - dep.detected_at >= 60   # blue is gone: new pods must load again


def test_blue_deleted_before_routers_switch_causes_downtime():
    r, *_ = scenario("blue_green", scale_down_delay_seconds=0.0, switch_delay_s=5.0)
    assert summarize(r["deployment"], r["end"], 4.0, 0.6, 0.0)["downtime_s"] == pytest.approx(5.0)


def test_rolling_undo_is_a_full_rolling_update_back():
    r, t, pods, serving = scenario("rolling", bad=True)
    dep = r["deployment"]
    assert dep.detected_at - dep.first_new_at == pytest.approx(60.0)
    assert dep.rollback_done_at - dep.detected_at >= 60  # old pods load their model again
    assert pods[-1].tolist() == [8, 0]
    assert pods.sum(axis=1).max() <= 10


def test_good_version_is_never_rolled_back_and_bad_answers_fail():
    good, *_ = scenario("rolling")
    assert math.isnan(good["deployment"].detected_at)
    assert np.all(good["requests"].outcome[good["requests"].version == NEW] == OK)
    bad, *_ = scenario("blue_green", bad=True, scale_down_delay_seconds=600.0)
    log = bad["requests"]
    share = np.mean(log.outcome[log.version == NEW] != OK)
    assert 0.2 < share < 0.4   # 30% of the bad version's answers are errors


def test_instant_loads_give_no_degraded_time():
    for strategy in ("rolling", "blue_green"):
        r, *_ = scenario(strategy, load=0.0, bad=True)
        s = summarize(r["deployment"], r["end"], 4.0, 0.6, 0.0)
        assert s["degraded_s"] == 0 and s["downtime_s"] == 0


def test_shadow_compare_counts_disagreements_and_kept_answers():
    y = np.array([0, 1, 2, 3, 4])
    live = np.array([0, 1, 2, 9, 4])
    cand = np.array([0, 7, 2, 3, 4])
    out = compare(live, cand, y)
    assert out["disagree"] == 2 and out["tests"] == 4 and out["passed"] == 3
    assert compare(live, live, y)["disagree"] == 0
