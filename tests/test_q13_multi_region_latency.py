"""Q13 lab: routing arms, RTT arithmetic, Route 53 failover timing, rules, and random valid settings."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from scipy import stats

from labs import get_lab
from labs.contract import ParamError
from labs.q13_multi_region_latency import AREA_KEYS, GEO

LAB = get_lab("q13")
SMALL = dict(requests=4000, rate_rps=10.0)  # 400 s window; the 300-480 s outage outlasts it


@pytest.fixture(scope="module")
def default():
    return LAB.run(0)


def lognormal_quantile(mean, cv, q):
    s2 = np.log1p(cv**2)
    return mean * np.exp(-s2 / 2 + np.sqrt(s2) * stats.norm.ppf(q))


def test_latency_routing_never_slower_than_one_region(default):
    b, pt = default.metrics["baseline"], default.metrics["pattern"]
    # same draws, and East US is one of the deployed regions: per request the pattern's RTT is <= baseline's
    for key in ["global_p50_ms", "global_p95_ms", "global_p99_ms"] + [f"p95_{k}_ms" for k in AREA_KEYS]:
        assert pt[key] <= b[key] + 1e-9, key
    assert pt["p95_us_east_ms"] == pytest.approx(b["p95_us_east_ms"])  # both serve US East from East US


def test_p95_matches_rtt_plus_server_quantile_without_jitter():
    # US East users on East US pay the access RTT only; latency = 20 ms + lognormal server time
    expected = 20.0 + lognormal_quantile(25.0, 0.5, 0.95)
    covered, estimates = 0, []
    for seed in range(12):  # each run's 95% interval may miss; P(more than 3 misses of 12) = 0.002
        r = LAB.run(seed, jitter_ms=0.0, access_rtt_ms=20.0, server_ms=25.0, requests=8000)
        lo, hi = r.intervals["baseline"]["p95_us_east_ms"]
        covered += lo <= expected <= hi
        estimates.append(r.metrics["baseline"]["p95_us_east_ms"])
    assert covered >= 9
    assert np.mean(estimates) == pytest.approx(expected, rel=0.015)


def test_each_extra_round_trip_adds_exactly_the_rtt():
    one = LAB.run(0, jitter_ms=0.0, connection_rtts=1, **SMALL).metrics["baseline"]
    three = LAB.run(0, jitter_ms=0.0, connection_rtts=3, **SMALL).metrics["baseline"]
    sea = GEO.area_index("Southeast Asia")
    rtt = 20.0 + GEO.backbone_ms[sea, GEO.region_index("East US")]  # 20 + 235.5 (Azure table)
    assert three["p95_southeast_asia_ms"] - one["p95_southeast_asia_ms"] == pytest.approx(2 * rtt, abs=1e-6)


def test_more_regions_lower_the_global_p95():
    p95 = [LAB.run(0, regions=k, **SMALL).metrics["pattern"]["global_p95_ms"] for k in (2, 3, 9)]
    assert p95[0] > p95[1] > p95[2]


def test_failover_is_detection_plus_cache_wait(default):
    pt = default.metrics["pattern"]
    interval, threshold, ttl = 30, 3, 60.0
    assert (threshold - 1) * interval <= pt["detection_time_s"] <= threshold * interval
    assert pt["detection_time_s"] <= pt["failover_p50_s"] <= pt["failover_time_s"] <= pt["failover_max_s"]
    assert pt["failover_max_s"] <= pt["detection_time_s"] + ttl
    lo, hi = default.intervals["pattern"]["failover_time_s"]
    assert lo <= pt["failover_time_s"] <= hi


def test_zero_ttl_fails_over_at_detection_and_faster_checks_help():
    zero = LAB.run(0, dns_ttl_s=0.0).metrics["pattern"]
    assert zero["failover_time_s"] == pytest.approx(zero["detection_time_s"])
    assert zero["reroute_after_detect_s"] == 0
    fast = LAB.run(0, dns_ttl_s=0.0, request_interval=10).metrics["pattern"]
    assert 20 <= fast["detection_time_s"] <= 30 < zero["detection_time_s"]
    assert LAB.run(0, dns_ttl_s=300.0).metrics["pattern"]["failover_time_s"] > zero["failover_time_s"] + 100


def test_errors_only_health_checks_can_cut(default):
    b, g, pt = (default.metrics[a] for a in ("baseline", "geodns", "pattern"))
    assert b["outage_error_pct"] == 100  # the only region is down
    assert b["failover_errors"] > g["failover_errors"] > pt["failover_errors"] > 0
    assert "static DNS" in default.reasons["geodns"]["failover_time_s"]


def test_failover_grid_brackets_the_run(default):
    grid = default.series["failover_grid"]
    row = grid[(grid["request_interval"] == 30) & (grid["dns_ttl_s"] == 60)].iloc[0]
    assert row["failover_time_s"] == pytest.approx(default.metrics["pattern"]["failover_time_s"])
    for _, g in grid.groupby("request_interval"):
        assert np.all(np.diff(g["failover_time_s"]) >= -1e-9)  # a longer TTL never fails over sooner


def test_detect_to_rerouted_is_the_resolver_cache_wait_only(default):
    pt = default.metrics["pattern"]
    # from Route 53 marking the region down, traffic waits only for resolvers to refresh: under one TTL
    assert 0 < pt["reroute_after_detect_s"] <= 60.0
    assert pt["failover_time_s"] == pytest.approx(pt["detection_time_s"] + pt["reroute_after_detect_s"], abs=1.0)
    slow_checks = LAB.run(0, failure_threshold=5).metrics["pattern"]  # two more probes of 30 s each
    assert slow_checks["detection_time_s"] == pytest.approx(pt["detection_time_s"] + 60, abs=1.0)
    assert slow_checks["reroute_after_detect_s"] == pytest.approx(pt["reroute_after_detect_s"], rel=0.15)


def test_a_threshold_of_one_halves_detection_or_better(default):
    one = LAB.run(0, failure_threshold=1).metrics["pattern"]
    assert one["detection_time_s"] < default.metrics["pattern"]["detection_time_s"] / 2


def test_edge_hits_cost_only_the_edge_leg():
    r = LAB.run(0, edge_hit_pct=100.0, jitter_ms=0.0, edge_rtt_ms=10.0, **SMALL).metrics
    assert r["edge"]["global_p95_ms"] == pytest.approx(10.0 + 1.0)  # one round trip to the PoP + the lookup
    assert r["edge"]["edge_hit_share_pct"] == 100.0
    assert r["edge"]["failover_errors"] == 0  # the cache answers while the region is down


def test_without_hits_the_edge_is_latency_routing_plus_the_lookup(default):
    r = LAB.run(0, edge_hit_pct=0.0).metrics
    assert r["edge"]["global_p95_ms"] == pytest.approx(r["pattern"]["global_p95_ms"] + 1.0, abs=1e-6)
    assert r["pattern"]["edge_global_p95_ms"] == r["edge"]["global_p95_ms"]
    half = default.metrics
    assert half["edge"]["failover_errors"] < half["pattern"]["failover_errors"]


def test_us_asia_rtt_reads_the_backbone_only():
    a = LAB.run(0, access_rtt_ms=0.0, jitter_ms=0.0, **SMALL).metrics["baseline"]["us_east_asia_rtt_ms"]
    b = LAB.run(0, access_rtt_ms=40.0, jitter_ms=50.0, **SMALL).metrics["baseline"]["us_east_asia_rtt_ms"]
    assert a == b
    east = GEO.region_index("East US")
    assert a in {GEO.backbone_ms[GEO.area_index(x), east] for x in ("India", "Southeast Asia", "Japan")}


@pytest.fixture(scope="module")
def regions():
    return {v.id: v for v in LAB.check(0)}


def test_check_reports_the_regions_the_lab_computes(regions):
    r = {k: (v.verdict, v.region) for k, v in regions.items()}
    # at Route 53's default 30 s interval, only a one-probe threshold and a TTL of at most 5 s move 95% in 30 s
    assert r["q13.failover"] == ("conditional", "holds only when failure_threshold = 1 and dns_ttl_s ≤ 5")
    assert r["q13.reroute_after_detect"][0] == "conditional"
    assert r["q13.reroute_after_detect"][1] == "holds only when dns_ttl_s ≤ 30"
    # the seed's own three-region case (users next to the three regions) meets 100 ms with three regions
    mr = regions["q13.multi_region_p95"]
    assert any(c["user_mix"] == "seed_three" and c["regions"] == 3 and c["verdict"] == "holds" for c in mr.grid)
    assert not any(c["user_mix"] == "global" and c["regions"] == 3 and c["verdict"] == "holds" for c in mr.grid)
    edge = regions["q13.edge_p95"]
    assert edge.verdict == "conditional" and edge.control["vanishes"]
    assert all(c["verdict"] != "holds" for c in edge.grid if c["edge_hit_pct"] <= 90)
    assert regions["q13.failover"].control["vanishes"]


def test_outage_shorter_than_detection_is_not_measured_with_a_reason():
    r = LAB.run(0, outage_duration_s=20.0)  # 3 probes x 30 s cannot fit in 20 s
    assert math.isnan(r.metrics["pattern"]["failover_time_s"])
    assert "ended before Route 53" in r.reasons["pattern"]["failover_time_s"]
    verdict = {v.id: v.verdict for v in r.claims}["q13.failover"]
    assert verdict == "not_measured"


def test_outage_from_time_zero_still_measures_steady_latency():
    r = LAB.run(0, outage_start_s=0.0)
    assert math.isfinite(r.metrics["pattern"]["global_p95_ms"])


def test_parameter_combinations_are_rules():
    with pytest.raises(ParamError, match="failed_region"):
        LAB.run(0, regions=2, failed_region="Southeast Asia")
    with pytest.raises(ParamError, match="outage_start_s"):
        LAB.run(0, requests=2000, rate_rps=20.0, outage_start_s=200.0)
    with pytest.raises(ParamError, match="request_interval"):
        LAB.validate({"request_interval": 20})


def test_failed_region_without_users_has_nothing_to_fail_over():
    r = LAB.run(0, user_mix="asia_pacific", **SMALL)
    assert math.isnan(r.metrics["pattern"]["failover_time_s"])
    assert "nothing to fail over" in r.reasons["pattern"]["failover_time_s"]
    assert r.metrics["pattern"]["failover_errors"] == 0
    assert "not in this user_mix" in r.reasons["baseline"]["p95_us_east_ms"]


def test_plots(default):
    charts = LAB.plots(default)
    assert len(charts) == 3
    for c in charts:  # browser-drawn charts, each with data
        spec = c.to_dict()
        assert sum(len(v) for v in spec.get("datasets", {}).values()) > 0


# ---------------------------------------------------------------- random valid settings
def _value(param):
    if param.choices is not None:
        return st.sampled_from(param.choices)
    hi = param.high
    if param.name == "requests":
        hi = 6000  # small budgets keep the property test fast; the bounds are tried below
    if param.kind is int:
        return st.one_of(st.sampled_from([int(param.low), int(hi)]), st.integers(int(param.low), int(hi)))
    return st.one_of(st.sampled_from([param.low, hi]), st.floats(param.low, hi, allow_nan=False))


def _check(values):
    try:
        r = LAB.run(0, **values)
    except ParamError as e:
        msg = str(e)
        assert "\n" not in msg and any(p.name in msg for p in LAB.params)
        return
    for arm, metrics in r.metrics.items():
        for key, v in metrics.items():
            assert math.isfinite(v) or r.reasons.get(arm, {}).get(key), f"{arm}.{key} is NaN without a reason"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({p.name: _value(p) for p in LAB.params}))
def test_random_valid_settings_run_or_are_refused_cleanly(values):
    _check(values)


@pytest.mark.parametrize("end", ["low", "high"])
def test_all_min_and_all_max_settings(end):
    values = {p.name: (p.choices[0 if end == "low" else -1] if p.choices is not None else getattr(p, end))
              for p in LAB.params}
    values["requests"] = min(values["requests"], 20000)
    _check(values)
