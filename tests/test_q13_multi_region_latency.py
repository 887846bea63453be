"""Q13 lab: routing arms, RTT arithmetic, Route 53 failover timing and parameter checks."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from labs import get_lab
from labs.contract import ParamError
from labs.q13_multi_region_latency import AREA_KEYS, AREAS, ASIA, GEO, USER_MIXES

LAB = get_lab("q13")
SMALL = dict(requests=4000, rate_rps=10.0)  # 400 s window; outage 300-480 s is cut at the window's end


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
    assert default.metrics["comparison"]["p95_reduction_x"] > 1


def test_p95_matches_rtt_plus_server_quantile_without_jitter():
    r = LAB.run(0, jitter_ms=0.0, access_rtt_ms=20.0, server_ms=25.0)
    # US East users on East US pay the access RTT only; latency = 20 ms + lognormal server time
    expected = 20.0 + lognormal_quantile(25.0, 0.5, 0.95)
    lo, hi = r.intervals["baseline"]["p95_us_east_ms"]
    assert lo <= expected <= hi
    assert r.metrics["baseline"]["p95_us_east_ms"] == pytest.approx(expected, rel=0.05)


def test_each_extra_round_trip_adds_exactly_the_rtt():
    one = LAB.run(0, jitter_ms=0.0, connection_rtts=1, **SMALL).metrics["baseline"]
    three = LAB.run(0, jitter_ms=0.0, connection_rtts=3, **SMALL).metrics["baseline"]
    sea = GEO.area_index("Southeast Asia")
    rtt = 20.0 + GEO.backbone_ms[sea, GEO.region_index("East US")]  # 20 + 235.5 (Azure table)
    assert three["p95_southeast_asia_ms"] - one["p95_southeast_asia_ms"] == pytest.approx(2 * rtt, abs=1e-6)


def test_us_east_asia_rtt_is_the_traffic_median_of_asian_areas():
    r = LAB.run(0, jitter_ms=0.0, access_rtt_ms=10.0, **SMALL)
    eus = GEO.region_index("East US")
    mix = np.array(USER_MIXES["global"], dtype=float)
    idx = [AREAS.index(a) for a in ASIA]
    rtts = 10.0 + GEO.backbone_ms[idx, eus]
    order = np.argsort(rtts)
    cum = np.cumsum(mix[idx][order]) / mix[idx].sum()
    median_area_rtt = rtts[order][np.searchsorted(cum, 0.5)]
    assert r.metrics["baseline"]["us_east_asia_rtt_ms"] == pytest.approx(median_area_rtt, abs=1.0)


def test_more_regions_lower_the_global_p95():
    p95 = [LAB.run(0, regions=k, **SMALL).metrics["pattern"]["global_p95_ms"] for k in (2, 3, 9)]
    assert p95[0] > p95[1] > p95[2]


def test_failover_is_detection_plus_cache_wait(default):
    pt = default.metrics["pattern"]
    interval, threshold, ttl = 30, 3, 60.0
    assert (threshold - 1) * interval <= pt["detection_time_s"] <= threshold * interval
    assert pt["detection_time_s"] <= pt["failover_p50_s"] <= pt["failover_time_s"] <= pt["failover_max_s"]
    assert pt["failover_max_s"] <= pt["detection_time_s"] + ttl
    assert 0 <= pt["reroute_after_detect_s"] <= ttl
    lo, hi = default.intervals["pattern"]["failover_time_s"]
    assert lo <= hi


def test_zero_ttl_fails_over_at_detection_and_faster_checks_help():
    zero = LAB.run(0, dns_ttl_s=0.0).metrics["pattern"]
    assert zero["failover_time_s"] == pytest.approx(zero["detection_time_s"])
    assert zero["reroute_after_detect_s"] == 0
    fast = LAB.run(0, dns_ttl_s=0.0, request_interval=10).metrics["pattern"]
    assert 20 <= fast["detection_time_s"] <= 30 < zero["detection_time_s"]
    long_ttl = LAB.run(0, dns_ttl_s=300.0).metrics["pattern"]
    assert long_ttl["failover_time_s"] > zero["failover_time_s"] + 100


def test_errors_only_health_checks_can_cut(default):
    b, g, pt = (default.metrics[a] for a in ("baseline", "geodns", "pattern"))
    assert b["outage_error_pct"] == 100  # the only region is down
    assert b["failover_errors"] > g["failover_errors"] > pt["failover_errors"] > 0
    assert np.isnan(g["failover_time_s"]) and np.isnan(b["failover_time_s"])
    # GeoDNS without health checks: the failed region's users fail for the whole outage
    assert g["global_p95_ms"] == pytest.approx(pt["global_p95_ms"])


def test_failover_grid_reflects_interval_times_threshold(default):
    grid = default.series["failover_grid"]
    for interval, g in grid.groupby("request_interval"):
        assert (g["detection_time_s"] >= 2 * interval).all() and (g["detection_time_s"] <= 3 * interval).all()
        assert (g["failover_time_s"] >= g["detection_time_s"] - 1e-9).all()
    row = grid[(grid["request_interval"] == 30) & (grid["dns_ttl_s"] == 60)].iloc[0]
    assert row["failover_time_s"] == pytest.approx(default.metrics["pattern"]["failover_time_s"])


def test_parameter_combinations_are_checked():
    with pytest.raises(ParamError, match="failed_region"):
        LAB.run(0, regions=2, failed_region="Southeast Asia")
    with pytest.raises(ParamError, match="outage_start_s"):
        LAB.run(0, requests=2000, rate_rps=20.0, outage_start_s=200.0)
    with pytest.raises(ParamError, match="request_interval"):
        LAB.validate({"request_interval": 20})


def test_failed_region_without_users_has_nothing_to_fail_over():
    r = LAB.run(0, user_mix="asia_pacific", **SMALL)
    assert np.isnan(r.metrics["pattern"]["failover_time_s"])
    assert r.metrics["pattern"]["failover_errors"] == 0
    assert any("nothing to fail over" in n for n in r.notes)


def test_plots_and_series(default):
    import matplotlib.pyplot as plt

    figs = LAB.plots(default)
    assert len(figs) == 3
    for f in figs:
        plt.close(f)
    per_area = default.series["per_area"]
    assert set(per_area["area"]) == set(AREAS)
    assert default.series["failover_per_resolver"]["failover_s"].notna().all()
