"""Q4 lab: swaps, rollbacks, variants and mocked tests follow their formulas and the measured pieces; regions pinned."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.claims import SweepRunner, check_claim
from labs.contract import ParamError
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q04")


def run(seed=0, **kw):
    return LAB.run(seed, **kw)


def test_warm_then_atomic_swap_fails_no_request_and_unload_then_load_does():
    r = run()
    assert r.metrics["pattern"]["warm_swap_possible"] == 1
    assert r.metrics["pattern"]["swap_errors"] == 0 and r.intervals["pattern"]["swap_errors"] == (0.0, 0.0)
    assert r.metrics["pattern"]["measured_error_pct"] == 0 and r.metrics["pattern"]["swap_error_pct"] == 0
    assert r.metrics["unload"]["swap_errors"] > 0 and r.metrics["unload"]["swap_error_pct"] > 0
    assert r.metrics["pattern"]["measured_versions_served"] == 2


def test_swap_time_is_the_slowest_replica_to_notice_plus_the_load():
    r = run()
    p = r.params
    load = r.metrics["pattern"]["load_time_s"]
    assert load == pytest.approx(p["model_size_mb"] / p["load_mb_s"], abs=0.1)
    expect = p["config_poll_s"] * p["replicas"] / (p["replicas"] + 1) + load  # E[max of R uniforms] + load
    lo, hi = r.intervals["pattern"]["model_swap_time_s"]
    assert lo <= expect <= hi


def test_warm_rollback_is_a_flip_and_an_evicted_one_reloads():
    r = run()
    assert r.metrics["pattern"]["rollback_time_s"] < r.metrics["unload"]["rollback_time_s"]
    gap = r.metrics["unload"]["rollback_time_s"] - r.metrics["pattern"]["rollback_time_s"]
    assert gap == pytest.approx(r.metrics["pattern"]["load_time_s"], rel=0.15)


def test_no_free_slot_forces_the_pattern_to_unload_first():
    r = run(memory_budget_mb=1024.0)  # two 500 MB slots for three variants
    assert r.metrics["pattern"]["warm_swap_possible"] == 0
    assert r.metrics["pattern"]["swap_errors"] > 0
    assert r.metrics["pattern"]["rollback_time_s"] == r.metrics["unload"]["rollback_time_s"]


def test_redeploy_is_build_plus_rolling_batches():
    r = run(replicas=8, max_surge_pct=25.0)
    load = r.metrics["pattern"]["load_time_s"]
    assert r.metrics["baseline"]["rollback_time_s"] == pytest.approx(600 + 4 * (20 + load))
    assert r.metrics["baseline"]["swap_error_pct"] == 0


def test_variants_are_what_fits_less_one_warm_slot():
    r = run(model_size_mb=300.0, memory_budget_mb=4096.0)
    assert r.metrics["pattern"]["concurrent_variants"] == math.floor(4096 / 300) - 1
    assert r.metrics["unload"]["concurrent_variants"] == math.floor(4096 / 300)
    assert r.metrics["baseline"]["concurrent_variants"] == 1


def test_router_split_passes_chi_square():
    for v in (2, 6, 12):
        r = run(variants=v, memory_budget_mb=16384.0)
        assert r.metrics["pattern"]["split_chi2_p"] > 0.001 and r.metrics["pattern"]["split_max_dev_pp"] < 1.5


@pytest.mark.parametrize("variants", [1, 3, 12])
def test_mocked_share_counts_unit_tests_against_one_smoke_test_per_variant(variants):
    r = run(variants=variants, memory_budget_mb=16384.0)
    unit = r.metrics["pattern"]["suite_tests"] - variants
    assert r.metrics["pattern"]["mocked_tests_pct"] == pytest.approx(100 * unit / (unit + variants))
    assert r.metrics["baseline"]["mocked_tests_pct"] == 0  # the hard-wired module cannot even be imported


def test_a_model_larger_than_memory_is_not_measured_with_a_reason():
    r = run(model_size_mb=8000.0)
    assert math.isnan(r.metrics["pattern"]["model_swap_time_s"])
    assert "no model fits" in r.reasons["pattern"]["model_swap_time_s"]


def test_timeline_rule():
    with pytest.raises(ParamError, match="rollback_at_s"):
        run(swap_at_s=100.0, rollback_at_s=50.0)


def test_timeline_switches_each_replica_once_and_back():
    tl = run().series["timeline"]
    pat = tl[tl.arm == "pattern"]
    assert pat.new_version_pct.max() == 100 and pat.new_version_pct.iloc[0] == 0 and pat.new_version_pct.iloc[-1] == 0
    assert (tl[tl.arm == "pattern"].error_pct == 0).all()


@pytest.fixture(scope="module")
def runner():
    return SweepRunner(LAB, 0, LAB.validate({}))


def _v(runner, cid):
    return check_claim(LAB.question.claim(cid), runner)


def test_regions(runner):
    assert _v(runner, "q04.swap_time").region == "holds only when config_poll_s = 0; or config_poll_s = 10"
    roll = _v(runner, "q04.rollback")
    cells = {(c["model_size_mb"], c["config_poll_s"]): c["verdict"] for c in roll.grid}
    assert cells[(100.0, 60.0)] == "holds" and cells[(4000.0, 60.0)] == "fails"
    assert _v(runner, "q04.rollback_redeploy").verdict == "conditional"
    assert "memory_budget_mb = 16384" in _v(runner, "q04.variants").region
    assert _v(runner, "q04.mocked_tests").region == "holds only when variants ≤ 2"
    zero = _v(runner, "q04.zero_errors")
    assert zero.region == "holds only when memory_budget_mb ≥ 2048" and zero.control["vanishes"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"requests": (2000, 5000)}, fixed={"profile": "reference"}))
def test_random_settings_run_or_are_refused_cleanly(values):
    r = check_run(LAB, values)
    if r is not None:
        assert np.isfinite(r.metrics["pattern"]["mocked_tests_pct"])


@pytest.mark.slow
def test_live_profile_measures_this_machine():
    r = run(profile="live")
    assert r.metrics["pattern"]["swap_errors"] == 0  # warm-then-atomic, measured here
    assert r.metrics["pattern"]["build_torch_ms"] > 0 and r.metrics["pattern"]["mocked_tests_pct"] == 80
