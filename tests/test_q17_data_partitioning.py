"""Q17 lab: partition skew per scheme, scaling efficiency, the scan comparison; controls, regions and a fuzz test."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.contract import ParamError
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q17")
SMALL = dict(rows=40_000, users=20_000)


def run(seed=0, **kw):
    return LAB.run(seed, **{**SMALL, **kw})


@pytest.fixture(scope="module")
def base():
    return run()


def test_hot_users_unbalance_hash_and_range_partitions(base):
    h, r = base.metrics["pattern"], base.metrics["range"]
    assert base.intervals["pattern"]["partition_skew_x"][0] > 1.5
    assert r["partition_skew_x"] > 1.5  # sampled bounds cannot split one user's rows either


def test_control_uniform_users_give_balanced_hash_and_range_partitions():
    r = run(zipf_s=0.0)
    assert 1.0 <= r.metrics["pattern"]["partition_skew_x"] < 1.2
    # range bounds come from 60 sampled keys per partition: each share is off by about 1/sqrt(60) ≈ 13%, and the
    # largest of 64 partitions sits two to three of those above the mean
    assert 1.1 < r.metrics["range"]["partition_skew_x"] < 1.5
    flat = run(zipf_s=0.0, weekend_boost_pct=0.0, growth_pct=0.0)
    assert flat.metrics["baseline"]["partition_skew_x"] < 1.2  # days equally busy: date partitions balance too


def test_hash_skew_is_about_the_top_users_share_times_the_partition_count():
    # with a hot key, max partition ≈ (share of the top user + 1/P) of the rows, so skew ≈ 1 + P × p1
    from sim.partitioning import zipf_probabilities

    r = run(zipf_s=1.2, partitions=64)
    p1 = zipf_probabilities(SMALL["users"], 1.2)[0]
    lo, hi = r.intervals["pattern"]["partition_skew_x"]
    assert 0.8 * (1 + 64 * p1) < r.metrics["pattern"]["partition_skew_x"] < 1.25 * (1 + 64 * p1), (lo, hi)


def test_date_partitions_follow_the_calendar(base):
    # weekend boost 30% and growth 50%: the busiest day is a late weekend day
    boost, growth = 0.3, 0.5
    expected = (1 + boost) * (1 + growth) / np.mean([(1 + boost * (d % 7 >= 5)) * (1 + growth * d / 90)
                                                      for d in range(91)])
    lo, hi = base.intervals["baseline"]["partition_skew_x"]
    assert lo - 0.1 < expected < hi + 0.1


def test_control_one_worker_is_perfectly_efficient():
    r = run(workers=1)
    for arm in ("baseline", "pattern", "range"):
        assert r.metrics[arm]["scaling_efficiency_pct"] == pytest.approx(100.0)


def test_efficiency_falls_with_imbalance_sync_and_stragglers():
    def eff(**kw):
        return run(workers=8, **kw).metrics["pattern"]["scaling_efficiency_pct"]

    even = eff(zipf_s=0.0)
    assert eff(zipf_s=1.0) < even
    assert eff(zipf_s=0.0, bandwidth_gbps=1.0) < even - 20  # all-reduce 1.4 s against 0.5 s of compute
    assert eff(zipf_s=0.0, straggler_pct=20.0, straggler_factor=3.0) < even - 10


def test_no_sync_no_stragglers_balanced_shards_scale_perfectly():
    r = run(zipf_s=0.0, workers=4, hop_ms=0.0, bandwidth_gbps=400.0, model_mb=0.1, straggler_pct=0.0,
            partitions=1024, rows=400_000, batch_per_worker=128)
    assert r.metrics["pattern"]["scaling_efficiency_pct"] > 97


def test_scan_metrics_come_from_the_committed_profile(base):
    prof = json.loads(open("data/profiles/parquet_scan.json", encoding="utf-8").read())
    g = prof["grid"]["8"]
    c = base.metrics["comparison"]
    ratios = np.array(g["csv_s"]) / np.array(g["parquet_s"])
    assert c["scan_speedup_x"] == pytest.approx(np.exp(np.mean(np.log(ratios))))  # geometric mean of pairs
    assert c["parquet_scanned_mb"] < c["csv_scanned_mb"]
    assert prof["provenance"]["cpu"] and prof["provenance"]["pyarrow"]
    few, every = run(columns_read=1).metrics["comparison"], run(columns_read=30).metrics["comparison"]
    assert few["parquet_scanned_mb"] < every["parquet_scanned_mb"]
    assert few["scan_speedup_x"] > every["scan_speedup_x"]  # column pruning is most of Parquet's lead


@pytest.mark.slow
def test_live_scan_measures_this_machine_sanely():
    r = run(scan_profile="live", columns_read=4)
    c = r.metrics["comparison"]
    assert np.isfinite(c["scan_speedup_x"]) and c["scan_speedup_x"] > 1  # fewer bytes, no text parsing
    assert c["parquet_scanned_mb"] < c["csv_scanned_mb"]
    assert "measured here" in r.notes[-1]
    again = run(scan_profile="live", columns_read=4)  # cached on disk with its provenance: the same numbers
    assert again.metrics["comparison"] == c


def test_rule_bounds_the_simulated_steps():
    with pytest.raises(ParamError, match="batch_per_worker"):
        LAB.run(0, rows=2_000_000, batch_per_worker=16, epochs=20)


@pytest.fixture(scope="module")
def verdicts():
    return {v.id: v for v in LAB.check(0)}


def test_claim_regions(verdicts):
    skew = verdicts["q17.partition_skew"]
    assert skew.verdict == "conditional"
    cell = {(c["zipf_s"], c["partitions"]): c["verdict"] for c in skew.grid}
    assert cell[(0.0, 64)] == "holds" and cell[(0.8, 16)] == "holds" and cell[(0.8, 64)] == "fails"
    assert {cell[(1.2, n)] for n in (16, 64, 256)} == {"fails"}
    eff = verdicts["q17.efficiency"]
    assert eff.verdict == "conditional"
    e = {(c["workers"], c["zipf_s"]): c for c in eff.grid}
    assert e[(16, 0.0)]["verdict"] == "holds" and e[(16, 0.8)]["verdict"] == "fails"  # hot users break it
    assert {e[(n, 0.8)]["verdict"] for n in (8, 16, 64)} == {"fails"}
    assert e[(4, 0.0)]["measured"] > e[(16, 0.0)]["measured"] > e[(64, 0.0)]["measured"]
    scan = verdicts["q17.scan_speedup"]
    assert scan.evidence == "measured"
    s = {c["columns_read"]: c["measured"] for c in scan.grid}
    assert s[1] > s[30]


def test_controls_remove_the_effect(verdicts):
    for v in verdicts.values():
        if v.control:
            assert v.control["vanishes"], v.id


def _repair(d):
    d = dict(d)
    d["batch_per_worker"] = max(d["batch_per_worker"], int(np.ceil(d["rows"] * d["epochs"] / 40_000)))
    return d


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"rows": (10_000, 60_000), "users": (100, 50_000), "workers": (1, 64)},
                         fixed={"scan_profile": "reference"}, repair=_repair))
def test_random_settings_run_or_are_refused_cleanly(values):
    r = check_run(LAB, values)
    if r is not None:
        assert np.isfinite(r.metrics["pattern"]["partition_skew_x"])
