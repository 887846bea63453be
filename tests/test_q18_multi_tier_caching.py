"""Q18 lab: tier shares, Che's approximation, latency, staleness, regions, controls and random settings."""
import math

import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q18")
SMALL = dict(requests=8000, rate_rps=30.0)


def run(**kw):
    return LAB.run(seed=3, **{**SMALL, **kw})


def test_tier_shares_add_up_and_the_hit_rate_is_l1_plus_l2():
    m = run().metrics["pattern"]
    assert m["l1_hit_pct"] + m["l2_hit_pct"] + m["db_read_pct"] == pytest.approx(100.0)
    assert m["hit_rate_pct"] == pytest.approx(m["l1_hit_pct"] + m["l2_hit_pct"])


@pytest.mark.parametrize("routing,zipf_s,l1", [("random", 1.0, 1000), ("random", 0.8, 300), ("by_key", 1.1, 200)])
def test_l1_share_matches_che_without_ttl_or_writes(routing, zipf_s, l1):
    # each process sees an independent-reference stream (random routing thins it; by_key splits the keys)
    r = LAB.run(seed=1, requests=40000, rate_rps=30.0, zipf_s=zipf_s, l1_maxsize=l1, routing=routing,
                l1_ttl_s=86400.0, write_rate_per_s=0.0, warmup_pct=40.0)
    m = r.metrics["pattern"]
    assert m["l1_hit_pct"] == pytest.approx(m["l1_che_hit_pct"], abs=1.5)


def test_ttl_and_writes_only_lower_the_l1_share_below_che():
    m = run(write_rate_per_s=5.0, update_policy="invalidate_all", l1_ttl_s=10.0).metrics["pattern"]
    assert m["l1_hit_pct"] < m["l1_che_hit_pct"] - 5


def test_caches_cut_p95_and_database_load():
    r = run()
    b, p = r.metrics["baseline"], r.metrics["pattern"]
    assert p["p95_ms"] < b["p95_ms"] and p["db_utilization_pct"] < b["db_utilization_pct"]
    assert r.metrics["comparison"]["p95_reduction_x"] > 1


def test_p95_lands_in_the_database_tier_once_more_than_5pct_of_reads_miss():
    # P95 below the database's own latency needs the miss share below 5%
    for keys in (100, 10000):
        m = run(feature_keys=keys).metrics["pattern"]
        assert (m["p95_ms"] < 20) == (m["db_read_pct"] < 5)


def test_control_without_caches_every_read_reaches_the_database():
    r = run(l1_maxsize=0, l2_maxmemory_keys=0)
    p = r.metrics["pattern"]
    assert p["hit_rate_pct"] == 0 and p["db_read_pct"] == 100
    assert p["p95_ms"] >= r.metrics["baseline"]["p95_ms"]  # the lookups only add time
    assert math.isnan(p["staleness_s"]) and "no read" in r.reasons["pattern"]["staleness_s"]


def test_invalidating_every_copy_leaves_no_stale_read():
    r = run(update_policy="invalidate_all", write_rate_per_s=5.0)
    assert r.metrics["pattern"]["stale_read_pct"] == 0
    assert math.isnan(r.metrics["pattern"]["stale_for_p95_s"])
    ttl_only = run(update_policy="ttl_only", write_rate_per_s=5.0).metrics["pattern"]
    assert ttl_only["stale_read_pct"] > 1


def test_oldest_served_value_is_bounded_by_the_ttls():
    m = run().metrics["pattern"]
    assert m["staleness_s"] < LAB.defaults()["l1_ttl_s"] + LAB.defaults()["l2_ttl_s"]
    assert run(cap_l1_by_l2=True).metrics["pattern"]["staleness_s"] < LAB.defaults()["l2_ttl_s"]


def test_ttl_curve_rises_with_the_ttl():
    curve = run(update_policy="ttl_only").series["ttl_curve"]
    assert curve["hit_rate_pct"].is_monotonic_increasing
    assert curve["stale_read_pct"].is_monotonic_increasing
    assert curve["oldest_served_s"].is_monotonic_increasing


@pytest.fixture(scope="module")
def verdicts():
    return {v.id: v for v in LAB.check(0, cache=False)}


def test_regions_are_pinned(verdicts):
    # hit rate and miss share are set by keys x skew against rate x TTL; P95 < 20 ms needs < 5% misses
    region = {k: v.region for k, v in verdicts.items()}
    assert region["q18.l1_share"] == "holds only when zipf_s = 1.2"
    assert region["q18.db_share"] == "holds only when feature_keys = 100; or feature_keys = 1000 and zipf_s ≥ 1"
    assert region["q18.hit_rate"] == "holds only when feature_keys = 100; or feature_keys = 1000 and zipf_s ≥ 1"
    assert region["q18.hit_rate_95"] == "holds only when feature_keys = 100"
    assert region["q18.p95_cached"] == "holds only when feature_keys = 100"
    assert region["q18.p95_uncached"] == "holds only when db_connections = 2 and rate_rps ≥ 25"
    assert region["q18.staleness"] == ("holds only when cap_l1_by_l2 = False and l2_ttl_s ≤ 240; "
                                       "or cap_l1_by_l2 = True and l2_ttl_s ≤ 300")


def test_every_control_makes_its_claim_vanish(verdicts):
    for v in verdicts.values():
        assert v.control["vanishes"], v.id


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"requests": (2000, 6000), "rate_rps": (1.0, 2000.0)}))
def test_random_settings_run_or_are_refused_in_one_line(values):
    check_run(LAB, values)
