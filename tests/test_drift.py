"""sim.drift against Evidently's documented PSI/KS semantics (REFERENCES.md §12, §27) and hand computations."""
import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from sim import drift as D


def test_evidently_defaults():
    assert D.PSI_THRESHOLD == 0.1  # Evidently psi default_threshold
    assert D.KS_THRESHOLD == 0.05  # Evidently ks: drift if p <= 0.05
    assert D.EMPTY_BIN == 0.0001
    assert D.NUMERIC_UNIQUE == 20
    assert D.DRIFT_SHARE == 0.5


def test_psi_matches_a_hand_computed_case():
    # two categories: reference 50/50, current 25/75
    ref = np.array([0] * 50 + [1] * 50)
    cur = np.array([0] * 25 + [1] * 75)
    hand = (0.5 - 0.25) * math.log(0.5 / 0.25) + (0.5 - 0.75) * math.log(0.5 / 0.75)
    assert D.psi(ref, cur) == pytest.approx(hand, abs=1e-12)
    assert hand == pytest.approx(0.2747, abs=1e-4)
    assert D.psi_test(ref, cur) == (pytest.approx(hand), True)
    assert D.psi_test(ref, cur, threshold=0.3)[1] is False


def test_psi_is_symmetric_and_zero_for_equal_samples():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=500), rng.normal(0.3, 1, size=400)
    assert D.psi(a, a) == pytest.approx(0.0, abs=1e-12)
    # swapping roles changes only which sample's count fixes Sturges' edges over the union: same edges
    assert D.psi(a, b) == pytest.approx(D.psi(b, a), rel=1e-12)


def test_an_empty_bin_becomes_one_ten_thousandth_without_renormalising():
    ref = np.zeros(100)
    cur = np.array([0.0] * 90 + [1.0] * 10)
    r, c = D.binned_percents(ref, cur)
    assert list(r) == [1.0, 0.0001] and list(c) == [0.9, 0.1]
    assert r.sum() > 1  # Evidently does not renormalise after filling
    hand = (1 - 0.9) * math.log(1 / 0.9) + (0.0001 - 0.1) * math.log(0.0001 / 0.1)
    assert D.psi(ref, cur) == pytest.approx(hand, rel=1e-12)


def test_empty_bin_uses_min_nonzero_over_a_million_when_that_is_at_most_one_ten_thousandth():
    ref = np.array([0.0] * 19999 + [1.0])  # value 1 has share 0.00005 <= 0.0001
    cur = np.array([0.0] * 50 + [2.0] * 50)
    r, c = D.binned_percents(ref, cur)
    assert r == pytest.approx([0.99995, 0.00005, 0.00005 / 1e6], rel=1e-12)
    assert c == pytest.approx([0.5, 0.0001, 0.5], rel=1e-12)  # current's own minimum (0.5) is large


def test_more_than_twenty_unique_reference_values_get_equal_width_sturges_bins_over_both_samples():
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=1000), rng.normal(2, 1, size=1000)
    r, c = D.binned_percents(ref, cur)
    assert len(r) == 12  # ceil(log2(2000) + 1): §27's 12 bins for 2,000 rows
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    assert np.allclose(np.diff(edges), np.diff(edges)[0])  # equal width, not quantiles
    hist = np.histogram(ref, edges)[0] / 1000
    assert np.allclose(r[hist > 0], hist[hist > 0])
    # exactly 20 unique reference values: one bin per value instead
    ref20 = np.arange(20.0).repeat(5)
    cur20 = np.arange(0.0, 40.0, 2.0).repeat(5)
    r20, _ = D.binned_percents(ref20, cur20)
    assert len(r20) == len(np.union1d(ref20, cur20)) == 30
    ref21 = np.arange(21.0).repeat(5)
    assert len(D.binned_percents(ref21, cur20)[0]) == math.ceil(math.log2(len(ref21) + len(cur20)) + 1)


def test_categorical_features_always_get_one_bin_per_value():
    ref = np.arange(50.0)
    assert len(D.binned_percents(ref, ref + 25, feature_type="cat")[0]) == 75


def test_ks_is_scipy_two_sided_with_p_at_most_005():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=300), rng.normal(0.4, 1, size=300)
    p, drifted = D.ks_test(a, b)
    assert p == ks_2samp(a, b).pvalue and drifted is (p <= 0.05) is True
    p2, drifted2 = D.ks_test(a, a[::-1])
    assert p2 == pytest.approx(1.0) and drifted2 is False


def _random_pixels(rng, n, shift=0):
    X = rng.binomial(16, rng.uniform(0.0, 0.6, 64), size=(n, 64)).astype(float)
    X[:, :3] = 0.0  # constant columns
    X[:5, 3] = 16.0  # a rare value (5 of n)
    return np.clip(X + shift * (rng.random((n, 64)) < 0.3), 0, 16)


@pytest.mark.parametrize("n_ref,n_cur,shift", [(800, 400, 0), (20000, 300, 1), (150, 150, 3)])
def test_vectorised_psi_from_counts_equals_evidently_psi_per_feature(n_ref, n_cur, shift):
    rng = np.random.default_rng(n_ref + shift)
    ref, cur = _random_pixels(rng, n_ref), _random_pixels(rng, n_cur, shift)
    fast = D.psi_from_counts(D.value_counts(ref), D.value_counts(cur))
    slow = np.array([D.psi(ref[:, j], cur[:, j]) for j in range(64)])
    assert np.allclose(fast, slow, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shift", [0, 1, 4])
def test_ks_drifted_features_equals_scipy_on_every_column(shift):
    rng = np.random.default_rng(10 + shift)
    ref, cur = _random_pixels(rng, 600), _random_pixels(rng, 300, shift)
    p_all = D.ks_pvalues(ref, cur)
    first, count = D.ks_drifted_features(ref, cur)
    assert count == int(np.sum(p_all <= 0.05))
    assert first == pytest.approx(p_all.min(), rel=1e-9)
    assert D.ks_statistics_from_counts(D.value_counts(ref), D.value_counts(cur)) == pytest.approx(
        [ks_2samp(ref[:, j], cur[:, j]).statistic for j in range(64)])


def _stream(kind, **kw):
    cfg = D.DriftConfig(weeks=10, rows_per_week=200, drift_kind=kind, drift_start_week=3, **kw)
    return cfg, D.make_stream(cfg, np.random.SeedSequence(5))


def test_concept_drift_moves_labels_but_not_inputs_and_covariate_the_reverse():
    _, none = _stream("none")
    _, concept = _stream("concept", swap_per_week=0.1)
    _, cov = _stream("covariate", shift_per_week=1.0)
    for w in range(0, 11):
        assert np.array_equal(concept["score"][w][0], none["score"][w][0])
        assert np.array_equal(cov["score"][w][1], none["score"][w][1])
    for w in range(0, 4):  # nothing drifts up to drift_start_week
        assert np.array_equal(cov["score"][w][0], none["score"][w][0])
        assert np.array_equal(concept["score"][w][1], none["score"][w][1])
    late = 10
    assert np.mean(concept["score"][late][1] != none["score"][late][1]) > 0.05
    moved = np.abs(cov["score"][late][0] - none["score"][late][0]).sum(axis=0)
    assert set(np.flatnonzero(moved)) <= set(D.BAND[:8]) and moved[D.BAND[0]] > 0
    swapped = concept["score"][late][1] != none["score"][late][1]
    assert set(none["score"][late][1][swapped]) <= {1, 3, 7, 8}


def test_policies_follow_their_rules():
    assert D.run_policy("never", 6) == [0] * 6
    assert D.run_policy("scheduled", 7, every=3) == [0, 0, 0, 3, 3, 3, 6]
    fired = D.run_policy("triggered", 6, trigger=lambda s, t: t - s >= 2)
    assert fired == [0, 0, 2, 2, 4, 4]
    assert D.run_policy("scheduled", 4, every=4) == [0, 0, 0, 0]  # no retrain after the last week
    assert list(D.staleness_days([0, 0, 2])) == [3.5, 10.5, 3.5]
