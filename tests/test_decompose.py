"""sim.decompose: blast radius by failure kind on a hand-built graph, Erlang C sizing, crossovers, weekly cost."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sim.analytic import mmc_wait_quantile
from sim.decompose import (System, affected, blast_radius, core_plan, cores_for_wait, first_where, random_system,
                           weekly_cost_h)

# gateway 0 on every path; e0: 0 -> 1 -> 2, e1: 0 -> 3, e2: 0 -> 1 -> 4
SYS = System(5, 1, ((0, 1, 2), (0, 3), (0, 1, 4)))


def test_graph_relations():
    assert SYS.uses.sum(axis=0).tolist() == [3, 2, 1, 1, 1]
    assert SYS.leaves() == [2, 3, 4]
    assert SYS.callers[1] == {0} and SYS.callers[2] == {1} and SYS.callers[4] == {1} and SYS.callers[0] == set()


@pytest.mark.parametrize("kind", ["crash", "exhaustion"])
def test_a_monolith_process_takes_every_endpoint_down(kind):
    assert affected(SYS, 3, kind, "monolith").all()
    assert blast_radius(SYS, kind, "monolith") == 1.0


def test_a_defect_reaches_only_the_endpoints_that_run_the_code_in_either_deployment():
    for dep in ("monolith", "services"):
        assert affected(SYS, 3, "defect", dep).tolist() == [False, True, False]
        assert affected(SYS, 1, "defect", dep).tolist() == [True, False, True]


def test_exhaustion_climbs_the_callers_without_timeouts():
    assert affected(SYS, 2, "exhaustion", "services", caller_timeouts=True).tolist() == [True, False, False]
    # 2 blocks 1 (its caller), 1 blocks the gateway 0: every endpoint
    assert affected(SYS, 2, "exhaustion", "services", caller_timeouts=False).all()


def test_blast_radius_averages_over_the_components_named():
    crash = blast_radius(SYS, "crash", "services")
    assert crash == pytest.approx((1 + 2 / 3 + 1 / 3 + 1 / 3 + 1 / 3) / 5)
    assert blast_radius(SYS, "crash", "services", "leaf") == pytest.approx(1 / 3)
    assert blast_radius(SYS, "crash", "services", "shared") == 1.0
    assert math.isnan(blast_radius(System(3, 0, ((1, 2),)), "crash", "services", "shared"))
    # the vectorised average equals the per-component definition
    rng = np.random.default_rng(3)
    for _ in range(20):
        s = random_system(rng, 12, 7, 3, 2)
        used = sorted({c for p in s.paths for c in p})
        direct = np.mean([affected(s, c, "crash", "services").mean() for c in used])
        assert blast_radius(s, "crash", "services") == pytest.approx(direct)


def test_random_systems_have_the_shared_prefix_and_distinct_calls():
    s = random_system(np.random.default_rng(0), 10, 50, 4, 2)
    for path in s.paths:
        assert path[:2] == (0, 1) and len(set(path)) == 6 and all(c >= 2 for c in path[2:])


@pytest.mark.parametrize("c,a", [(1, 0.5), (3, 2.0), (10, 8.0), (50, 45.0), (200, 190.0)])
def test_wait_quantile_matches_the_erlang_c_recursion(c, a):
    from sim.decompose import wait_quantile

    assert wait_quantile(a, 1.0, c, 0.95) == pytest.approx(mmc_wait_quantile(a, 1.0, c, 0.95), rel=1e-9, abs=1e-12)
    assert wait_quantile(a, 1.0, int(a), 0.95) == math.inf


def test_cores_for_wait_is_the_fewest_erlang_c_servers():
    lam, s, wait = 100.0, 0.02, 0.005
    c = cores_for_wait(lam, s, wait)
    assert mmc_wait_quantile(lam, 1 / s, c, 0.95) <= wait
    assert c - 1 <= lam * s or mmc_wait_quantile(lam, 1 / s, c - 1, 0.95) > wait  # one fewer is unstable or late
    assert c >= 3  # offered load 2 Erlangs needs more than 2 servers
    assert cores_for_wait(0.0, s, wait) == 0
    for lam in (1.0, 37.0, 500.0, 20000.0):  # the search agrees with a plain scan
        c = cores_for_wait(lam, 0.01, 0.002)
        scan = next(k for k in range(int(lam * 0.01) + 1, 10**6) if mmc_wait_quantile(lam, 100.0, k, 0.95) <= 0.002)
        assert c == scan
    assert cores_for_wait(1e5, 10.0, 0.005) > 1e6  # a million servers: closed form, no recursion


def test_core_plan_arithmetic():
    work = [0.02, 0.002, 0.002]
    part = core_plan(100.0, work, 0.0, 0.005, 0.2, "partitioned")
    side = 0.2 * 100 / 1000
    assert part.monolith_pool == 3 * max(cores_for_wait(100.0, w, 0.005) for w in work)
    assert part.services_cores == pytest.approx(sum(part.per_service) + side * (1 + 2 * 2))
    assert part.monolith_cores == pytest.approx(part.monolith_pool + side)
    shared = core_plan(100.0, work, 0.0, 0.005, 0.2, "shared")
    assert shared.monolith_pool == cores_for_wait(100.0, sum(work), 0.005)
    assert shared.monolith_cores < part.monolith_cores
    hop = core_plan(100.0, work, 0.001, 0.005, 0.2, "partitioned")  # hop CPU only ever adds
    assert all(a >= b for a, b in zip(hop.per_service, part.per_service))


def test_first_where_needs_the_tail_to_hold():
    assert first_where([1, 2, 3, 4], lambda v: v >= 3) == 3
    assert first_where([1, 2, 3, 4], lambda v: v in (2, 4)) == 4
    assert math.isnan(first_where([1, 2, 3], lambda v: v == 1))


def test_weekly_cost_terms():
    base = dict(services=4, deploys_per_week=1.0, deploy_h=1.0, coordination_h=0.1, ops_h_per_service=0.0,
                cores=0.0, core_week_h=0.0)
    mono = weekly_cost_h(8, split=False, **{**base, "deploys_per_week": 1e-9})
    assert mono == pytest.approx(0.1 * 28, rel=1e-6)  # 8 engineers: 28 pairs
    split = weekly_cost_h(8, split=True, **{**base, "deploys_per_week": 1e-9})
    assert split == pytest.approx(0.1 * (4 * 1 + 3), rel=1e-6)  # teams of 2: one pair each, 3 interfaces
    assert weekly_cost_h(8, split=False, **{**base, "deploys_per_week": 10.0}) == math.inf  # 40 h of releases
    assert weekly_cost_h(8, split=True, **{**base, "deploys_per_week": 10.0}) < math.inf
    assert weekly_cost_h(8, split=True, **{**base, "ops_h_per_service": 5.0}) == pytest.approx(
        weekly_cost_h(8, split=True, **base) + 20.0)
