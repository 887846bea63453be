"""Q15 lab: extraction curves, defences' costs, validator rates; closed forms where they exist.

The first run of a setting trains the attacker's copies (10-40 s, cached under
the user's cache folder); later runs of the same setting read the cache.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from labs.contract import ParamError
from labs.q15_model_theft_defence import EXTRACTION_ARMS, LAB, _threshold
from sim.token_bucket import TokenBucket


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
        assert np.all(d.answered <= d.queries)
        assert np.all(np.diff(d.answered) >= 0)
    assert (df[df.arm == "baseline"].answered == df[df.arm == "baseline"].queries).all()


def test_labels_only_and_rounding_keep_honest_accuracy(default):
    m = default.metrics
    for arm in ("labels_only", "rounding", "validator", "rate_limit"):
        assert m[arm]["honest_accuracy_pct"] == m["baseline"]["honest_accuracy_pct"]
        assert m[arm]["utility_loss_pct"] == 0.0
    # labels only: the confidence is always 1, so calibration error equals the error rate
    assert m["labels_only"]["ece_pct"] == pytest.approx(100 - m["baseline"]["honest_accuracy_pct"])
    # noise flattens the probabilities: calibration gets worse
    assert m["noise"]["ece_pct"] > m["baseline"]["ece_pct"]


def test_rate_limit_changes_time_not_queries(default):
    m, p = default.metrics, default.params
    assert m["rate_limit"]["extraction_queries"] == m["baseline"]["extraction_queries"]
    n = m["rate_limit"]["extraction_queries"]
    per_key = math.ceil(n / p["attacker_keys"])
    fills = max(0, math.ceil((per_key - p["max_tokens"]) / min(p["tokens_per_fill"], p["max_tokens"])))
    expected_s = max(fills * p["fill_interval"], n / p["attacker_rps"])
    assert m["rate_limit"]["extraction_time_h"] * 3600 == pytest.approx(expected_s)
    assert m["baseline"]["extraction_time_h"] * 3600 == pytest.approx(n / p["attacker_rps"])
    # 1M queries at 100 per minute on one key: 9999 refills of a minute
    assert m["pattern"]["million_queries_time_h"] == pytest.approx(9_999 * 60 / 3600)
    assert m["comparison"]["rate_limit_time_slowdown_x"] == pytest.approx(
        m["rate_limit"]["extraction_time_h"] / m["baseline"]["extraction_time_h"])


def test_validator_measurements(default):
    m = default.metrics["pattern"]
    assert m["out_of_range_detection_pct"] == 100.0  # the schema check catches every malformed row
    assert m["ood_noise_detection_pct"] > 95
    assert m["false_positive_pct"] < 5  # calibrated at 1% on held-out training digits
    assert default.metrics["validator"]["adversarial_detection_pct"] == m["adversarial_detection_pct"]
    assert default.metrics["baseline"]["adversarial_detection_pct"] == 0.0
    # what gets through: fooled and not flagged, never more than without the validator
    assert m["adversarial_success_pct"] <= default.metrics["baseline"]["adversarial_success_pct"]
    lo, hi = default.intervals["pattern"]["adversarial_detection_pct"]
    assert lo <= m["adversarial_detection_pct"] <= hi


def test_rate_limit_and_traffic_settings_recompute_nothing():
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
    r = LAB.run(0, noise_scale=0.0)
    m = r.metrics
    assert m["noise"]["extraction_queries"] == m["baseline"]["extraction_queries"]
    assert m["noise"]["utility_loss_pct"] == 0.0
    assert m["noise"]["ece_pct"] == m["baseline"]["ece_pct"]


def test_more_noise_costs_more_utility(default):
    loud = LAB.run(0, noise_scale=0.5)
    assert loud.metrics["comparison"]["utility_loss_pct"] > default.metrics["comparison"]["utility_loss_pct"]
    assert loud.metrics["noise"]["brier"] > default.metrics["noise"]["brier"]


def test_threshold_reports_budget_plus_one_when_never_reached():
    curve = {"queries": [10, 100, 1000], "accuracy": [0.2, 0.5, 0.7], "fidelity": [0.2, 0.5, 0.7], "n_eval": 450}
    value, reached, (lo, hi) = _threshold(curve, "accuracy", 0.8, 1000)
    assert value == 1001 and not reached and hi == 1001
    curve["accuracy"] = [0.2, 0.79, 0.95]
    value, reached, (lo, hi) = _threshold(curve, "accuracy", 0.8, 1000)
    assert reached and 100 < value < 1000 and lo <= value <= hi


def test_bad_choices_are_refused_with_the_parameter_named():
    with pytest.raises(ParamError, match="fill_interval"):
        LAB.run(0, fill_interval=0.01)  # below Envoy's 50 ms minimum
    with pytest.raises(ParamError, match="victim"):
        LAB.run(0, victim="resnet")


def test_token_bucket_in_the_lab_is_envoys(default):
    p = default.params
    b = TokenBucket(p["max_tokens"], p["tokens_per_fill"], p["fill_interval"])
    assert b.sustained_rate_per_s * 60 == pytest.approx(100.0)  # the seed's 50-100 queries/min per user


def test_threshold_band_widens_with_the_replicates_spread():
    curve = {"queries": [10, 100, 1000], "accuracy": [0.2, 0.79, 0.95], "fidelity": [0.2, 0.79, 0.95],
             "n_eval": 450}
    _, _, (lo0, hi0) = _threshold(curve, "accuracy", 0.8, 1000)
    curve.update(replicates=8, accuracy_sd=[0.0, 0.1, 0.1])
    value, _, (lo, hi) = _threshold(curve, "accuracy", 0.8, 1000)
    assert lo < lo0 and hi >= hi0 and lo <= value <= hi


_DUMP = "import json; from labs import get_lab; r = get_lab('q15').run(seed=0); print(json.dumps(r.metrics))"


def test_a_fresh_build_and_a_cached_read_are_bit_identical(default, tmp_path):
    """The session's cache was built by conftest in another call; a new process on an empty
    cache computes everything again: same floats to the last bit."""
    env = {**os.environ, "ARCHLAB_CACHE": str(tmp_path / "fresh")}
    out = subprocess.run([sys.executable, "-c", _DUMP], env=env, capture_output=True, text=True, check=True,
                         timeout=300)
    fresh = out.stdout.strip()  # JSON text: floats at full precision (repr), NaN compared as text
    assert fresh == json.dumps(default.metrics)
    again = subprocess.run([sys.executable, "-c", _DUMP], env=env, capture_output=True, text=True, check=True,
                           timeout=300)
    assert again.stdout.strip() == fresh  # and a second process reading that new cache
