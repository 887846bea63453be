"""Q29 lab: drift detection and retraining policies on real digits with a real model."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.claims import SweepRunner, check_claim
from labs.contract import ParamError
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q29")
SMALL = dict(weeks=16, rows_per_week=300, drift_start_week=3, final_weeks=3, shift_per_week=0.8)


def run(**kw):
    return LAB.run(seed=2, **{**SMALL, **kw})


def overlap(r, key, a, b):
    (alo, ahi), (blo, bhi) = r.intervals[a][key], r.intervals[b][key]
    return alo <= bhi and blo <= ahi


def test_control_without_drift_psi_retrains_only_on_false_alarms_and_policies_tie():
    r = run(drift_kind="none")
    m = r.metrics
    assert m["pattern"]["retrains"] == m["pattern"]["false_retrains"]
    assert m["scheduled"]["retrains"] == m["scheduled"]["false_retrains"]
    for a, b in (("baseline", "pattern"), ("baseline", "scheduled")):
        assert overlap(r, "accuracy_all_pct", a, b)
    assert m["comparison"]["weeks_mattered"] <= 1  # only a noisy week could dip below the margin
    assert np.isnan(m["pattern"]["psi"]) and "no drift mattered" in r.reasons["pattern"]["psi"]


def test_covariate_drift_hurts_the_old_model_and_psi_retraining_recovers():
    r = run(drift_kind="covariate")
    m = r.metrics
    assert m["baseline"]["accuracy_pct"] < 85
    assert m["pattern"]["accuracy_pct"] > m["baseline"]["accuracy_pct"] + 10
    assert m["pattern"]["retrains"] > m["pattern"]["false_retrains"]
    assert m["comparison"]["psi_recall_pct"] == 100.0  # pixel PSI is huge once ink moves
    assert m["pattern"]["psi"] > 1.0


def test_psi_cannot_see_concept_drift_but_a_schedule_partly_can():
    # 600 rows a week: PSI's sampling noise stays below 0.2, so false alarms are rare
    r = run(drift_kind="concept", swap_per_week=0.08, rows_per_week=600)
    calm = run(drift_kind="none", rows_per_week=600)
    m = r.metrics
    # the pixels are exactly the no-drift control's: PSI, and so the PSI policy's retrains, cannot differ
    assert m["pattern"]["retrains"] == calm.metrics["pattern"]["retrains"]
    assert np.array_equal(r.series["drift"]["psi_vs_original"], calm.series["drift"]["psi_vs_original"])
    assert m["pattern"]["retrains"] <= 2
    assert overlap(r, "accuracy_pct", "pattern", "baseline")
    assert m["baseline"]["accuracy_pct"] < 85
    assert m["scheduled"]["accuracy_pct"] > m["pattern"]["accuracy_pct"]
    psi = r.series["drift"]["psi_vs_original"]
    assert psi.max() < 0.5  # PSI stays at its sampling-noise level while accuracy falls


def test_arms_share_their_weeks_until_the_first_retrain():
    r = run(drift_kind="covariate")
    wk = r.series["weekly"].pivot(index="week", columns="arm", values="accuracy_pct")
    first = r.series["weekly"].query("arm == 'pattern' and retrained")["week"].min()
    upto = wk.index <= first
    assert np.array_equal(wk.loc[upto, "pattern"], wk.loc[upto, "baseline"])
    assert np.array_equal(wk["scheduled"].iloc[:2], wk["baseline"].iloc[:2])


def test_staleness_and_retrain_counts_follow_the_policies():
    r = run(drift_kind="covariate", schedule_weeks=5)
    m, W = r.metrics, SMALL["weeks"]
    assert m["baseline"]["model_staleness_days"] == pytest.approx(3.5 * W)
    assert m["baseline"]["days_since_retrain_days"] == 7 * W and m["baseline"]["retrains"] == 0
    assert m["scheduled"]["retrains"] == (W - 1) // 5
    assert m["pattern"]["model_staleness_days"] >= 3.5


def test_a_higher_psi_threshold_retrains_no_more_often():
    counts = [run(drift_kind="both", psi_threshold=t).metrics["pattern"]["retrains"] for t in (0.1, 1.0, 20.0)]
    assert counts[0] >= counts[1] >= counts[2] == 0


def test_claim_verdicts_at_their_telling_settings():
    def verdict(cid, **kw):
        return next(v for v in run(**kw).claims if v.id == cid).verdict

    assert verdict("q29.psi_threshold", drift_kind="covariate") == "holds"
    assert verdict("q29.psi_threshold", drift_kind="none") == "not_measured"
    assert verdict("q29.accuracy_recovered", drift_kind="covariate") == "holds"
    assert verdict("q29.accuracy_recovered", drift_kind="concept", swap_per_week=0.08,
                   rows_per_week=600) == "fails"
    assert verdict("q29.accuracy_recovered", drift_kind="covariate", psi_threshold=20.0) == "fails"  # control
    assert verdict("q29.staleness_auto", drift_kind="covariate") == "holds"
    assert verdict("q29.staleness_auto", drift_kind="concept", swap_per_week=0.08, rows_per_week=600) == "fails"


def test_check_regions_over_the_sweeps():
    # lab.check's evaluator on three claims' sweeps and controls, over a 16-week base (cheaper fits)
    runner = SweepRunner(LAB, 0, dict(LAB.settings({"weeks": 16})))
    got = {cid: check_claim(LAB.question.claim(cid), runner)
           for cid in ("accuracy_recovered", "staleness_auto", "accuracy_maintained")}
    rec = got["accuracy_recovered"]
    assert rec.verdict == "conditional"
    holds = {(c["drift_kind"], c["psi_threshold"]) for c in rec.grid if c["verdict"] == "holds"}
    assert holds == {("covariate", 0.1), ("covariate", 0.2), ("covariate", 1.0)}  # never concept, never t=10
    assert rec.control["vanishes"]
    auto = got["staleness_auto"]
    young = {(c["drift_kind"], c["psi_threshold"]) for c in auto.grid if c["verdict"] == "holds"}
    assert ("covariate", 0.2) in young and ("covariate", 10.0) not in young
    assert ("concept", 1.0) not in young and ("none", 1.0) not in young
    assert auto.control["vanishes"]
    kept = got["accuracy_maintained"]
    assert kept.verdict == "conditional" and kept.control["vanishes"]
    assert all(c["verdict"] != "holds" for c in kept.grid if c["psi_threshold"] == 10.0 and c["shift_per_week"] >= 0.4)


def test_drift_must_start_inside_the_run():
    with pytest.raises(ParamError, match="drift_start_week"):
        LAB.run(seed=0, weeks=10, drift_start_week=10)
    with pytest.raises(ParamError, match="final_weeks"):
        LAB.run(seed=0, weeks=6, final_weeks=8)


def test_plots_show_accuracy_retrains_psi_and_the_confusion_table():
    r = run(drift_kind="both")
    assert len(LAB.plots(r)) == 4
    conf = r.series["confusion"]
    assert set(conf["detector"]) == {"PSI", "KS any pixel", "KS share>=0.5"}
    assert conf.groupby("detector")["weeks"].sum().eq(SMALL["weeks"]).all()


def _repair(d):
    d["drift_start_week"] = min(d["drift_start_week"], d["weeks"] - 1)
    d["final_weeks"] = min(d["final_weeks"], d["weeks"])
    return d


@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(settings_strategy(LAB, ranges={"weeks": (6, 14), "rows_per_week": (100, 250)}, repair=_repair))
def test_any_valid_setting_runs_or_is_refused(values):
    check_run(LAB, values)
