"""Q30 lab: behaviour the model must show, invariants, the claims' regions, controls and random settings."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.q30_multi_tenant_platform import PORTS
from sim.netpolicy import count_leaks, cross_tenant_attempts, platform_policies
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q30")
SMALL = dict(jobs=1200)


@pytest.fixture(scope="module")
def default():
    return LAB.run(0)


def test_every_cross_tenant_attempt_is_blocked_and_declared_flows_still_work():
    tenants = [f"team-{k:02d}" for k in range(6)]
    ps = platform_policies(tenants, "default_deny")
    attempts = list(cross_tenant_attempts(ps, tenants, PORTS))
    assert len(attempts) == 6 * 5 * 9 * len(PORTS)  # ordered pairs x pod pairs x ports
    assert count_leaks(ps, attempts) == (0, len(attempts))
    pods = {p.name: p for p in ps.pods}
    assert ps.allowed(pods["team-00-train"], pods["team-00-serve"], 8080)  # same namespace
    assert ps.allowed(pods["team-03-serve"], pods["registry"], 443)
    assert ps.allowed(pods["prometheus"], pods["team-03-serve"], 9090)
    assert not ps.allowed(pods["prometheus"], pods["team-03-serve"], 8080)


@pytest.mark.parametrize("variant", ["empty_namespace_selector", "none"])
def test_a_broken_policy_leaks_so_the_check_can_fail(variant):
    tenants = ["team-a", "team-b", "team-c"]
    ps = platform_policies(tenants, variant)
    leaks, total = count_leaks(ps, cross_tenant_attempts(ps, tenants, PORTS))
    assert leaks == total > 0
    r = LAB.run(0, policy_variant=variant, **SMALL)
    assert r.metrics["pattern"]["leaks"] > 0 and r.metrics["pattern"]["cross_tenant_blocked_pct"] < 100


def test_namespaces_alone_do_not_isolate(default):
    assert default.metrics["no_quota"]["cross_tenant_blocked_pct"] == 0
    assert default.metrics["pattern"]["leaks"] == 0


def test_shared_cluster_is_smaller_and_busier_than_dedicated_ones(default):
    b, p, q = (default.metrics[a] for a in ("baseline", "pattern", "no_quota"))
    assert p["nodes"] < b["nodes"] and p["nodes"] == q["nodes"]
    assert p["utilization_pct"] > 1.5 * b["utilization_pct"]
    assert 0 < default.metrics["comparison"]["cost_reduction_pct"] < 100


def test_one_tenant_gains_nothing_from_sharing():
    r = LAB.run(0, tenants=1, **SMALL)
    assert r.metrics["pattern"]["nodes"] == r.metrics["baseline"]["nodes"]
    assert r.metrics["comparison"]["cost_reduction_pct"] == pytest.approx(0.0)
    assert r.metrics["pattern"]["utilization_pct"] == pytest.approx(r.metrics["baseline"]["utilization_pct"], rel=0.05)
    assert math.isnan(r.metrics["comparison"]["others_slowdown_protection_x"])


def test_gold_jobs_preempt_bronze_and_keep_their_slowdown_near_one(default):
    p = default.metrics["pattern"]
    assert p["preemptions"] > 0 and p["lost_gpu_hours"] > 0
    # no quota to contain a large flood: only the PriorityClass keeps gold tenants moving
    flood = dict(quota_pct=100.0, gold_share=0.5, flood_jobs=800, burstiness=1.0)
    tiered, equal = (LAB.run(0, priority_classes=c, **flood).metrics["pattern"] for c in ("tiered", "equal"))
    assert equal["preemptions"] == 0 < tiered["preemptions"]
    assert tiered["gold_flood_slowdown_p95"] < 1.2 < 5 < equal["gold_flood_slowdown_p95"]
    assert tiered["bronze_slowdown_p95"] > equal["bronze_slowdown_p95"]  # bronze pays for gold's priority


def test_sizing_for_the_peak_leaves_almost_no_preemption_without_bursts():
    calm = LAB.run(0, burstiness=1.0, flood_jobs=0, sizing_quantile=1.0)
    tight = LAB.run(0, burstiness=1.0, flood_jobs=0, sizing_quantile=0.9)
    assert calm.metrics["pattern"]["preemptions"] <= 3  # bin-packing fragmentation only
    assert tight.metrics["pattern"]["preemptions"] > 10 * max(1, calm.metrics["pattern"]["preemptions"])


def test_without_quotas_the_flood_slows_everyone_and_quotas_contain_it(default):
    nq, p = default.metrics["no_quota"], default.metrics["pattern"]
    assert nq["others_flood_slowdown_p95"] > 2 * p["others_flood_slowdown_p95"]
    calm = LAB.run(0, flood_jobs=0)
    assert calm.metrics["no_quota"]["others_flood_slowdown_p95"] < 1.2


def test_a_quota_below_a_tenants_burst_throttles_that_tenant():
    r = LAB.run(0, quota_pct=10.0, flood_jobs=0)
    assert r.metrics["pattern"]["others_slowdown_p95"] > 2 * r.metrics["no_quota"]["others_slowdown_p95"]


def test_a_job_bigger_than_its_quota_is_refused_with_a_count():
    r = LAB.run(0, quota_pct=5.0, tenants=3, **SMALL)  # a small cluster: 5% of it is under 8 GPUs
    assert r.metrics["pattern"]["refused_pct"] > 0
    assert r.metrics["baseline"]["refused_pct"] == 0 == r.metrics["no_quota"]["refused_pct"]


def test_bursts_lower_dedicated_utilisation():
    flat, bursty = (LAB.run(0, burstiness=b, tenant_gpus=32.0, flood_jobs=0, tenants=4) for b in (1.0, 6.0))
    assert bursty.metrics["baseline"]["utilization_pct"] < 0.7 * flat.metrics["baseline"]["utilization_pct"]


def test_series_and_intervals(default):
    assert set(default.series["allocation"]["arm"]) == {"baseline", "pattern", "no_quota"}
    assert np.all(default.series["allocation"]["allocated_pct"] <= 100 + 1e-9)
    for arm in ("baseline", "pattern"):
        lo, hi = default.intervals[arm]["utilization_pct"]
        assert lo <= default.metrics[arm]["utilization_pct"] <= hi
    lo, hi = default.intervals["comparison"]["cost_reduction_pct"]
    assert lo <= default.metrics["comparison"]["cost_reduction_pct"] <= hi


# ---------------------------------------------------------------- claims: regions from lab.check
@pytest.fixture(scope="module")
def regions():
    return {v.id: v for v in LAB.check(0)}


def test_check_pins_each_claims_region(regions):
    cost = regions["q30.cost"]
    assert cost.verdict == "conditional" and cost.control["vanishes"]
    assert all(c["verdict"] != "holds" for c in cost.grid if c["tenant_gpus"] == 32.0 and c["burstiness"] < 6)
    assert any(c["verdict"] == "holds" for c in cost.grid if c["tenant_gpus"] == 2.0)
    ded = regions["q30.util_dedicated"]
    assert ded.verdict == "conditional" and ded.control["vanishes"]
    assert all(c["verdict"] == "holds" for c in ded.grid if c["burstiness"] == 6.0)
    shared = regions["q30.util_shared"]
    assert shared.control["vanishes"]
    assert all(c["verdict"] == "fails" for c in shared.grid if c["tenants"] == 2)
    iso = regions["q30.isolation"]
    assert iso.verdict == "conditional" and iso.region == "holds only when policy_variant in {default_deny, ingress_only}"
    assert iso.control["vanishes"] and iso.evidence == "measured"
    noisy = regions["q30.noisy_neighbour"]
    assert noisy.verdict == "conditional" and noisy.control["vanishes"]
    assert all(c["verdict"] != "holds" for c in noisy.grid if c["quota_pct"] in (10.0, 100.0))
    pre = regions["q30.preemption"]
    assert pre.verdict == "conditional" and pre.control["vanishes"]
    assert all(c["verdict"] != "holds" for c in pre.grid if c["priority_classes"] == "equal")
    assert any(c["verdict"] == "holds" for c in pre.grid if c["sizing_quantile"] == 0.9)


# ---------------------------------------------------------------- random valid settings
def _repair(values):
    values["jobs"] = min(values["jobs"], 1500)  # small budgets keep the property test fast
    values["tenants"] = min(values["tenants"], 12)
    values["flood_jobs"] = min(values["flood_jobs"], 400)
    return values


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(settings_strategy(LAB, repair=_repair))
def test_random_valid_settings_run_or_are_refused_cleanly(values):
    check_run(LAB, values)


def test_extreme_settings_run():
    big = {p.name: (p.choices[-1] if p.choices else p.high) for p in LAB.params}
    check_run(LAB, {**big, "jobs": 1000, "tenants": 20})
    small = {p.name: (p.choices[0] if p.choices else p.low) for p in LAB.params}
    check_run(LAB, small)
