"""Q2 modular pipeline: measured reruns and rebuilds, assumed durations, the catalogue's reuse."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs.registry import get_lab
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q02")
FAST = {"changes": 400}


def run(**kw):
    return LAB.run(0, **{**FAST, **kw})


def test_the_pipeline_reruns_less_and_ships_faster_than_the_script():
    m = run().metrics
    assert m["pattern"]["steps_rerun_pct"] < 70 and m["baseline"]["steps_rerun_pct"] == 100
    assert m["pattern"]["deployment_time_min"] < m["baseline"]["deployment_time_min"] / 10


def test_a_data_change_reruns_everything_and_costs_the_whole_pipeline():
    m = run(change_type="data").metrics["pattern"]
    assert m["steps_rerun_pct"] == 100
    mix = run().metrics["pattern"]["deployment_time_min"]
    assert m["deployment_time_min"] > mix
    assert run(change_type="deploy_config").metrics["pattern"]["deployment_time_min"] < 20


def test_without_handoffs_the_script_is_hours_not_days():
    m = run(handoff_h=0.0).metrics["baseline"]
    assert m["deployment_time_min"] < 200  # 8 steps, about 79 min plus retries and the shared runner


def test_pinned_rebuilds_are_identical_and_each_cause_breaks_ad_hoc_ones():
    m = run().metrics
    assert m["pattern"]["reproducibility_pct"] == 100 and m["pattern"]["accuracy_spread_pct"] == 0
    assert m["baseline"]["reproducibility_pct"] == 0  # unseeded forests never match
    clean = run(causes="none", mutation_rate=1.0).metrics["baseline"]
    assert clean["reproducibility_pct"] == 100  # the control: no cause, no difference
    for cause in ("unseeded", "set_columns", "latest_input"):
        one = run(causes=cause, mutation_rate=1.0).metrics["baseline"]
        assert one["reproducibility_pct"] == 0 and one["accuracy_match_pct"] < 100, cause
    assert run(causes="latest_input", mutation_rate=0.0).metrics["baseline"]["reproducibility_pct"] == 100


def test_rollback_is_a_flip_against_a_rebuild():
    m = run().metrics
    assert m["pattern"]["rollback_time_min"] == pytest.approx(2.5)
    assert m["pattern"]["rollback_serves_previous_pct"] == 100
    assert m["baseline"]["rollback_time_min"] > 60 * 24


def test_reuse_comes_from_the_catalogue():
    assert [run(projects=k).metrics["pattern"]["code_reuse_pct"] for k in (1, 2)] == [0.0, 60.0]
    assert run(projects=3).metrics["pattern"]["code_reuse_pct"] == pytest.approx(700 / 11)


@pytest.fixture(scope="module")
def verdicts():
    return {v.id: v for v in LAB.check(0, changes=400)}


def test_claim_regions(verdicts):
    base = verdicts["q02.deploy_time_baseline"]
    assert base.verdict == "conditional" and base.region == "holds only when handoff_h ≥ 4"
    fast = verdicts["q02.deploy_time"]
    assert fast.verdict == "conditional"
    cells = {(c["change_type"], c["train_min"]): c["verdict"] for c in fast.grid}
    assert cells[("mix", 30.0)] == "holds" and cells[("data", 120.0)] == "fails"
    adhoc = verdicts["q02.repro_baseline"]
    assert adhoc.verdict == "conditional"
    cells = {(c["mutation_rate"], c["causes"]): c["verdict"] for c in adhoc.grid}
    assert all(cells[(r, "all")] == "holds" for r in (0.0, 0.3, 0.6, 1.0))
    assert cells[(0.0, "latest_input")] != "holds" and cells[(1.0, "latest_input")] == "holds"
    pinned = verdicts["q02.repro_pipeline"]
    assert pinned.verdict == "inconclusive"  # 7 of 7 identical is consistent with 95%, and with 65%
    reuse = verdicts["q02.code_reuse"]
    assert reuse.verdict == "conditional" and reuse.region == "holds only when projects ≥ 2"
    flip = verdicts["q02.rollback"]
    assert flip.verdict == "conditional" and flip.region == "holds only when detect_min ≤ 4"


def test_controls_remove_the_effect(verdicts):
    for v in verdicts.values():
        if v.control:
            assert v.control["vanishes"], v.id


@pytest.mark.slow
def test_live_rebuilds_on_this_machine_are_sane():
    m = run(profile="live", rebuilds=1).metrics
    assert m["pattern"]["reproducibility_pct"] == 100 and m["baseline"]["reproducibility_pct"] == 0


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"changes": (100, 500)}, fixed={"profile": "reference"}))
def test_random_settings_run_or_are_refused_cleanly(values):
    r = check_run(LAB, values)
    if r is not None:
        assert np.isfinite(r.metrics["pattern"]["deployment_time_min"])
