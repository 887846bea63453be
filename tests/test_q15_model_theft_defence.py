"""Q15 lab: extraction curves, the defences' costs, validator rates, fair verdicts.

The first run of a setting trains the attacker's copies (10-40 s, cached in the
session's cache folder); later runs of the same setting read the cache.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labs.claims import point_verdict
from labs.contract import ParamError
from labs.q15_model_theft_defence import EXTRACTION_ARMS, LAB


@pytest.fixture(scope="module")
def default():
    return LAB.run(seed=0)


def test_undefended_copy_reaches_the_target_quickly(default):
    b = default.metrics["baseline"]
    assert b["extraction_reached"] == 1.0
    assert b["extraction_queries"] < 10_000
    assert b["surrogate_accuracy_pct"] > default.params["target_accuracy_pct"]
    lo, hi = default.intervals["baseline"]["extraction_queries"]
    assert lo <= b["extraction_queries"] <= hi


def test_every_curve_reaches_the_plot_range_and_sends_in_order(default):
    df = default.series["curves"]
    for arm in EXTRACTION_ARMS:
        d = df[df.arm == arm]
        assert d.queries.iloc[0] == 10 and d.queries.max() >= 100_000
        assert np.all(np.diff(d.queries) > 0)
        assert np.all(d.answered <= d.queries) and np.all(np.diff(d.answered) >= 0)
    assert (df[df.arm == "baseline"].answered == df[df.arm == "baseline"].queries).all()
    assert (df[df.arm == "validator"].answered < df[df.arm == "validator"].queries).any()


def test_output_defences_cost_calibration_and_noise_costs_accuracy(default):
    m = default.metrics
    for arm in ("labels_only", "rounding", "validator", "rate_limit"):
        assert m[arm]["honest_accuracy_pct"] == m["baseline"]["honest_accuracy_pct"]
    # labels only: the confidence is always 1, so calibration error equals the error rate
    assert m["labels_only"]["ece_pct"] == pytest.approx(100 - m["baseline"]["honest_accuracy_pct"])
    assert m["noise"]["ece_pct"] > m["baseline"]["ece_pct"]
    # the calibration cost is reported next to the top-1 cost, and it is the bigger one here
    c = m["comparison"]
    assert c["calibration_loss_pct"] > c["utility_loss_pct"]
    assert "utility_loss_pct" in default.intervals["comparison"]


def test_rate_limit_changes_time_not_queries(default):
    m = default.metrics
    assert m["rate_limit"]["extraction_queries"] == m["baseline"]["extraction_queries"]
    assert m["rate_limit"]["extraction_time_h"] > 10 * m["baseline"]["extraction_time_h"]
    # 1M queries at 100 per minute on one key: 9999 refills of a minute
    assert m["pattern"]["million_queries_time_h"] == pytest.approx(9_999 * 60 / 3600)


def test_validator_measurements(default):
    m = default.metrics["pattern"]
    assert m["out_of_range_detection_pct"] == 100.0  # the schema check catches every malformed row
    assert m["ood_noise_detection_pct"] > 95
    assert m["false_positive_pct"] < 5  # calibrated at 1% on held-out training digits
    assert default.metrics["validator"]["adversarial_detection_pct"] == m["adversarial_detection_pct"]
    assert default.metrics["baseline"]["adversarial_detection_pct"] == 0.0
    assert m["adversarial_success_pct"] <= default.metrics["baseline"]["adversarial_success_pct"]


def test_detection_verdict_reads_the_wilson_interval(default):
    """The detection claim is decided by the recorded interval, not the point: straddling 90 is inconclusive."""
    lo, hi = default.intervals["pattern"]["adversarial_detection_pct"]
    v = default.metrics["pattern"]["adversarial_detection_pct"]
    assert lo < v < hi and hi - lo > 3  # a few hundred fooling images: several points wide
    claim = next(c for c in LAB.question.claims if c.id == "q15.detection")
    verdict = next(c for c in default.claims if c.id == "q15.detection").verdict
    assert verdict == ("holds" if lo > 90 else "fails" if hi <= 90 else "inconclusive")
    # the case: 90.7% with 95% interval 88-93 against ">90%"
    straddle = point_verdict(claim, {"pattern": {"adversarial_detection_pct": 90.7}},
                             {"pattern": {"adversarial_detection_pct": (88.0, 93.0)}})
    assert straddle.verdict == "inconclusive"


def test_budget_exhausted_by_both_arms_is_not_measured_never_a_defence_win():
    """Noise images: no copy, open or defended, gets there within the budget (the old lab called it a win)."""
    r = LAB.run(0, attacker_data="synthetic", max_queries=100_000)
    m, reasons = r.metrics, r.reasons
    assert m["baseline"]["extraction_reached"] == 0.0 and m["pattern"]["extraction_reached"] == 0.0
    assert math.isnan(m["pattern"]["extraction_queries"])
    assert "not reached within 100,000 queries" in reasons["pattern"]["extraction_queries"]
    assert "undefended copy does not reach" in reasons["pattern"]["extraction_queries"]
    assert math.isnan(m["comparison"]["extraction_slowdown_x"])
    verdicts = {c.id: c.verdict for c in r.claims}
    assert verdicts["q15.queries_defended"] == "not_measured"
    assert verdicts["q15.queries_undefended"] == "not_measured"


def test_rate_limit_and_traffic_settings_recompute_nothing(default):
    r = LAB.run(0, max_tokens=10, tokens_per_fill=1, fill_interval=1.0, attacker_keys=7,
                honest_rate_per_min=120.0, attacker_rps=5.0)
    assert r.extras["computed"] == []
    assert r.elapsed_s < 2.0
    # an honest client at 120/min against a 60/min bucket loses about half its requests
    assert r.metrics["pattern"]["honest_throttled_pct"] == pytest.approx(50, abs=3)
    assert r.metrics["baseline"]["honest_throttled_pct"] == 0.0


def test_more_keys_means_less_time(default):
    many = LAB.run(0, attacker_keys=10)
    assert many.metrics["pattern"]["million_queries_time_h"] < default.metrics["pattern"]["million_queries_time_h"] / 9
    assert many.metrics["pattern"]["extraction_queries"] == default.metrics["pattern"]["extraction_queries"]


def test_zero_noise_makes_the_noise_arm_the_open_api():
    m = LAB.run(0, noise_scale=0.0).metrics
    assert m["noise"]["extraction_queries"] == m["baseline"]["extraction_queries"]
    assert m["noise"]["utility_loss_pct"] == 0.0
    assert m["noise"]["ece_pct"] == m["baseline"]["ece_pct"]


def test_more_noise_costs_more_utility(default):
    loud = LAB.run(0, noise_scale=0.5)
    assert loud.metrics["comparison"]["utility_loss_pct"] > default.metrics["comparison"]["utility_loss_pct"]
    assert loud.metrics["noise"]["brier"] > default.metrics["noise"]["brier"]


def test_bad_settings_are_refused_with_the_parameter_named():
    with pytest.raises(ParamError, match="fill_interval"):
        LAB.run(0, fill_interval=0.01)  # below Envoy's 50 ms minimum
    with pytest.raises(ParamError, match="victim"):
        LAB.run(0, victim="resnet")
    with pytest.raises(ParamError, match="^parameter tokens_per_fill: 500 is not allowed with max_tokens=100"):
        LAB.run(0, tokens_per_fill=500)  # a rule, refused before any training


def test_the_largest_seed_runs():
    r = LAB.run(seed=2**32 - 1, victim="logreg", max_queries=100_000)
    assert r.metrics["baseline"]["extraction_reached"] == 1.0


def _valid_settings():
    """Every choice, bool and a numeric draw for every other parameter; curves capped at 100k queries."""
    fields = {}
    for p in LAB.params:
        if p.choices is not None:
            fields[p.name] = st.sampled_from(p.choices)
        elif p.kind is bool:
            fields[p.name] = st.booleans()
        elif p.name == "max_queries":
            fields[p.name] = st.just(100_000)
        elif p.kind is int:
            fields[p.name] = st.integers(p.low, p.high)
        else:
            fields[p.name] = st.floats(p.low, p.high, allow_nan=False, allow_infinity=False)
    return st.fixed_dictionaries(fields)


@settings(max_examples=6, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(_valid_settings())
def test_any_valid_setting_runs_with_every_metric_finite_or_explained(values):
    try:
        r = LAB.run(0, **values)
    except ParamError as e:
        text = str(e)
        assert "\n" not in text and text.startswith("parameter ")
        assert any(f"parameter {p.name}:" in text for p in LAB.params)
        return
    for arm, metrics in r.metrics.items():
        for key, v in metrics.items():
            assert math.isfinite(v) or r.reasons[arm].get(key), f"{arm}.{key} is {v} with no reason"


_DUMP = "import json; from labs import get_lab; r = get_lab('q15').run(seed=0); print(json.dumps(r.metrics))"


def test_a_fresh_build_and_a_cached_read_are_bit_identical(default, tmp_path):
    """A new process on an empty cache computes everything again: same floats to the last bit,
    and a second process reading that new cache gets them too."""
    env = {**os.environ, "ARCHLAB_CACHE": str(tmp_path / "fresh")}
    out = subprocess.run([sys.executable, "-c", _DUMP], env=env, capture_output=True, text=True, check=True,
                         timeout=300)
    fresh = out.stdout.strip()  # JSON text: floats at full precision (repr), NaN compared as text
    assert fresh == json.dumps(default.metrics)
    again = subprocess.run([sys.executable, "-c", _DUMP], env=env, capture_output=True, text=True, check=True,
                           timeout=300)
    assert again.stdout.strip() == fresh


def test_per_key_rate_limit_region_is_pinned():
    # 1M queries at 100 per minute per key take 166.7 h on one key, just under a week; more keys only shorten it
    from labs import get_lab
    from labs.claims import SweepRunner, check_claim

    lab = get_lab("q15")
    v = check_claim(lab.question.claim("q15.rate_limit_keys"), SweepRunner(lab, 0, lab.validate({})))
    assert v.verdict == "fails"
    hours = {c["attacker_keys"]: c["measured"] for c in v.grid}
    assert 160 < hours[1] < 168 and hours[10] < hours[1] / 5
    assert v.control["vanishes"] is True
