"""sim.extraction: attacker queries, ART-style output defences, the input validator, the copy, FGSM."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sim import extraction as X


@pytest.fixture(scope="module")
def digits():
    return X.digits_split()


def test_digits_split_is_the_model_layers_split(digits):
    import sim.models as M

    for a, b in zip(digits, M.digits_split()):
        np.testing.assert_array_equal(a, b)
    assert digits[1].shape == (450, 64)


# --------------------------------------------------------------------------- queries
def _stream(kind="public_mix", noise=1.0, chunk=1000, public=None):
    if public is None and kind == "public_mix":
        public = X.digits_split()[0][:20]
    return X.QueryStream(kind, lambda c: np.random.default_rng([7, c]), public, noise, chunk=chunk)


def test_queries_respect_the_schema_and_are_reproducible_by_range():
    s = _stream()
    q = s.take(0, 3500)
    assert q.dtype == np.uint8 and q.shape == (3500, 64)
    assert q.min() >= 0 and q.max() <= 16
    # any range regenerates the same rows, whatever was drawn before, in any order
    again = _stream()
    np.testing.assert_array_equal(again.take(2500, 3100), q[2500:3100])
    np.testing.assert_array_equal(again.take(999, 1001), q[999:1001])
    syn = _stream("synthetic").take(0, 5000)
    assert syn.min() == 0 and syn.max() == 16 and abs(syn.mean() - 8) < 0.1


def test_noise_free_mixups_stay_between_their_two_images():
    pub = np.array([[0.0] * 64, [16.0] * 64])
    q = _stream(noise=0.0, public=pub).take(0, 2000)
    assert np.all(q.min(axis=1) == q.max(axis=1))  # a blend of an all-0 and an all-16 image is flat
    assert set(np.unique(q[:, 0])) <= set(range(17))


def test_unknown_kind_and_missing_public_data_are_refused():
    with pytest.raises(ValueError):
        X.QueryStream("adaptive", lambda c: np.random.default_rng(c))
    with pytest.raises(ValueError):
        X.QueryStream("public_mix", lambda c: np.random.default_rng(c), None)


# --------------------------------------------------------------------------- output defences (ART semantics)
P = np.array([[0.70, 0.20, 0.10], [0.05, 0.15, 0.80], [0.3334, 0.3333, 0.3333]])


def test_class_labels_returns_one_hot_of_the_top_class_per_row():
    out = X.OutputPolicy(labels_only=True).apply(P)
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 1], [1, 0, 0]])


def test_rounded_is_numpy_around_without_renormalisation():
    out = X.OutputPolicy(decimals=1).apply(P)
    np.testing.assert_array_equal(out, np.around(P, 1))
    assert out[2].sum() == pytest.approx(0.9)  # ART does not renormalise


def test_gaussian_noise_adds_clips_and_renormalises():
    noise = np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [-10.0, -10.0, -10.0]])
    out = X.OutputPolicy(noise_scale=0.1).apply(P, noise)
    expect0 = np.array([0.8, 0.1, 0.1])
    np.testing.assert_allclose(out[0], expect0 / expect0.sum())
    np.testing.assert_allclose(out[1], P[1] / P[1].sum())
    np.testing.assert_allclose(out[2], [1 / 3] * 3)  # everything clipped to 0: uniform, not NaN
    with pytest.raises(ValueError):
        X.OutputPolicy(noise_scale=0.1).apply(P)
    assert not X.OutputPolicy(labels_only=True, noise_scale=0.5).uses_noise


def test_targets_are_renormalised_answers():
    T = X.to_targets(np.array([[0.5, 0.3, 0.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(T, [[0.625, 0.375, 0.0], [1 / 3, 1 / 3, 1 / 3]])


# --------------------------------------------------------------------------- the validator
def test_mahalanobis_matches_the_direct_formula(digits):
    from sklearn.covariance import LedoitWolf

    Xtr, Xte, ytr, _ = digits
    det = X.MahalanobisDetector().fit(Xtr)
    lw = LedoitWolf().fit(Xtr.astype(float))
    D = Xte[:50] - lw.location_
    direct = np.einsum("ij,jk,ik->i", D, lw.precision_, D)
    np.testing.assert_allclose(det.score(Xte[:50]), direct, rtol=1e-6)

    cc = X.MahalanobisDetector(class_conditional=True).fit(Xtr, ytr)
    means = np.stack([Xtr[ytr == c].mean(axis=0) for c in range(10)])
    lw2 = LedoitWolf(assume_centered=True).fit(Xtr - means[ytr])
    per_class = np.stack([np.einsum("ij,jk,ik->i", Xte[:50] - m, lw2.precision_, Xte[:50] - m) for m in means])
    np.testing.assert_allclose(cc.score(Xte[:50]), per_class.min(axis=0), rtol=1e-6)


def test_validator_threshold_hits_its_false_positive_rate_on_calibration_data(digits):
    Xtr, Xte, ytr, _ = digits
    rng = np.random.default_rng(0)
    order = rng.permutation(len(Xtr))
    cal, fit = order[:600], order[600:]
    v = X.InputValidator.calibrated(Xtr[fit], ytr[fit], Xtr[cal], fpr=0.05)
    flagged = 1 - v.accepts(Xtr[cal]).mean()
    assert flagged <= 0.05 and flagged >= 0.05 - 1 / 600 - 1e-12
    # held-out digits are flagged at about the same rate (binomial tolerance)
    fp = 1 - v.accepts(Xte).mean()
    assert fp < 0.05 + 3 * math.sqrt(0.05 * 0.95 / len(Xte))
    with pytest.raises(ValueError):
        X.InputValidator.calibrated(Xtr[fit], ytr[fit], Xtr[cal], fpr=0.0)


def test_schema_check_refuses_malformed_rows(digits):
    v = X.InputValidator(detector=None)
    good = digits[1][:4].astype(float)
    bad = good.copy()
    bad[0, 3] = 17
    bad[1, 5] = -1
    bad[2, 7] = np.nan
    bad[3, 9] = 2.5
    assert v.schema_ok(good).all()
    assert not v.schema_ok(bad).any()
    assert (v.check(bad) == X.SCHEMA).all()
    assert not v.schema_ok(np.zeros((3, 63))).any()  # wrong shape
    oor = X.out_of_range_inputs(np.random.default_rng(1), digits[1], 400)
    assert not v.schema_ok(oor).any()


def test_the_validator_flags_things_that_are_not_digits(digits):
    Xtr, Xte, ytr, _ = digits
    v = X.InputValidator.calibrated(Xtr, ytr, Xtr, fpr=0.01)
    rng = np.random.default_rng(2)
    assert (v.check(X.noise_images(rng, 300)) == X.OOD).mean() > 0.95
    patches = X.natural_patches(rng, 300)
    assert patches.shape == (300, 64) and v.schema_ok(patches).all()
    assert (v.check(patches) != X.ACCEPTED).mean() > 0.8


# --------------------------------------------------------------------------- the copy
def test_surrogate_learns_from_soft_targets_and_keeps_training():
    rng = np.random.default_rng(3)
    W = rng.normal(size=(64, 10))
    Xq = rng.integers(0, 17, (4000, 64)).astype(np.uint8)
    logits = (Xq / 16.0) @ W * 3
    T = np.exp(logits - logits.max(axis=1, keepdims=True))
    T /= T.sum(axis=1, keepdims=True)
    s = X.SoftmaxSurrogate(np.random.default_rng(0))
    assert (s.predict(Xq[:10]) == 0).all()  # untrained: all zeros
    s.train(Xq[:3000], T[:3000], 300)
    first = np.mean(s.predict(Xq[3000:]) == T[3000:].argmax(axis=1))
    s.train(Xq[:3000], T[:3000], 1500)
    second = np.mean(s.predict(Xq[3000:]) == T[3000:].argmax(axis=1))
    assert second >= first and second > 0.8


def test_surrogate_is_deterministic_for_a_seed():
    rng = np.random.default_rng(4)
    Xq = rng.integers(0, 17, (500, 64)).astype(np.uint8)
    T = X.to_targets(rng.random((500, 10)))
    a, b = X.SoftmaxSurrogate(np.random.default_rng(9)), X.SoftmaxSurrogate(np.random.default_rng(9))
    a.train(Xq, T, 200)
    b.train(Xq, T, 200)
    np.testing.assert_array_equal(a.decision(Xq), b.decision(Xq))


def test_steps_budget():
    assert X.steps_for(0) == 0
    assert X.steps_for(10) == 100
    assert X.steps_for(10_000) == math.ceil(5 * 10_000 / 256)
    assert X.steps_for(10**7) == 800


def test_queries_to_reach_interpolates_in_log_queries():
    q = [10, 100, 1000]
    assert X.queries_to_reach(q, [0.5, 0.7, 0.9], 0.8) == (pytest.approx(math.sqrt(100 * 1000)), True)
    assert X.queries_to_reach(q, [0.85, 0.9, 0.95], 0.8) == (10.0, True)
    value, reached = X.queries_to_reach(q, [0.5, 0.6, 0.7], 0.8)
    assert math.isnan(value) and not reached
    # the first crossing counts, even if the curve dips later
    assert X.queries_to_reach(q, [0.5, 0.8, 0.7], 0.8) == (100.0, True)


# --------------------------------------------------------------------------- FGSM
def test_fgsm_moves_every_pixel_by_eps_in_the_gradient_sign_and_clips():
    Xc = np.array([[0.0, 8.0, 16.0, 5.0]])
    g = np.array([[-1.0, 2.0, 3.0, 0.0]])
    np.testing.assert_array_equal(X.fgsm(Xc, g, 2), [[0.0, 10.0, 16.0, 5.0]])


def test_fgsm_minimal_uses_the_smallest_eps_that_fools():
    # a 1-D "model": predicts 1 when the first pixel exceeds 10
    predict = lambda A: (np.asarray(A)[:, 0] > 10).astype(int)  # noqa: E731
    Xc = np.array([[9.0, 0], [7.0, 0], [2.0, 0]])
    y = np.array([0, 0, 0])
    g = np.ones_like(Xc)
    adv, used = X.fgsm_minimal(Xc, y, g, predict, eps=5)
    np.testing.assert_array_equal(used, [2, 4, 5])
    np.testing.assert_array_equal(adv[:, 0], [11, 11, 7])


def test_logreg_gradient_matches_finite_differences(digits):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xtr, Xte, ytr, yte = digits
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(Xtr, ytr)
    x, y = Xte[:3].astype(float), yte[:3]
    g = X.logreg_input_gradient(pipe, x, y)

    def loss(rows):
        return -np.log(pipe.predict_proba(rows)[np.arange(len(rows)), y])

    h = 1e-4
    for j in (20, 35, 43):
        e = np.zeros_like(x)
        e[:, j] = h
        fd = (loss(x + e) - loss(x - e)) / (2 * h)
        np.testing.assert_allclose(g[:, j], fd, rtol=1e-3, atol=1e-6)


def test_torch_gradient_matches_finite_differences():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3)).double()
    x = np.random.default_rng(0).normal(size=(2, 4))
    y = np.array([0, 2])
    g = X.torch_input_gradient(net.float(), x, y)
    net = net.double()

    def loss(rows):
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(net(torch.tensor(rows)), torch.tensor(y), reduction="sum").item()

    for j in range(4):
        e = np.zeros_like(x)
        e[:, j] = 1e-5
        fd = (loss(x + e) - loss(x - e)) / 2e-5
        assert g[:, j].sum() == pytest.approx(fd, rel=1e-3, abs=1e-5)


def test_random_perturbation_is_plus_or_minus_eps():
    Xc = np.full((5, 64), 8.0)
    r = X.random_perturbation(np.random.default_rng(0), Xc, 3)
    assert set(np.unique(r)) == {5.0, 11.0}


# --------------------------------------------------------------------------- utility measures and intervals
def test_calibration_measures():
    y = np.array([0, 1, 0, 1])
    perfect = np.eye(2)[y]
    assert X.expected_calibration_error(perfect, y) == 0.0
    assert X.brier_score(perfect, y) == 0.0
    half = np.full((4, 2), 0.5)  # confidence 0.5; argmax picks class 0, right on half the rows
    assert X.expected_calibration_error(half, y) == pytest.approx(0.0)
    assert X.brier_score(half, y) == pytest.approx(0.5)
    sure_wrong = np.eye(2)[1 - y]
    assert X.expected_calibration_error(sure_wrong, y) == pytest.approx(1.0)
    assert X.brier_score(sure_wrong, y) == pytest.approx(2.0)


def test_threshold_band_brackets_the_crossing_and_widens_with_the_replicates_spread():
    q, v = [10, 100, 1000], [0.2, 0.79, 0.95]
    value, reached, (lo0, hi0) = X.threshold_band(q, v, 0.8, n_eval=450)
    assert reached and 100 < value < 1000
    assert 10 < lo0 < value < hi0 < 1000  # 0.79 +- 4 points: the upper band crosses before 100
    value2, _, (lo, hi) = X.threshold_band(q, v, 0.8, n_eval=450, sd=[0.0, 0.1, 0.1], replicates=8)
    assert value2 == value and lo < lo0 and hi >= hi0
    # a bigger evaluation set narrows the interval
    _, _, (lo_big, hi_big) = X.threshold_band(q, v, 0.8, n_eval=45_000)
    assert lo0 < lo_big and hi_big <= hi0


def test_threshold_band_of_a_curve_that_never_reaches_the_target():
    value, reached, (lo, hi) = X.threshold_band([10, 100, 1000], [0.2, 0.5, 0.7], 0.8, n_eval=450)
    assert not reached and math.isnan(value) and math.isnan(hi)
    _, _, (lo, _) = X.threshold_band([10, 100, 1000], [0.2, 0.5, 0.78], 0.8, n_eval=100)
    assert 100 < lo <= 1000  # the upper band of 0.78 on 100 items reaches 0.8


def test_chunked_rows_reads_across_chunks_and_keeps_at_most_two():
    loads = []

    def load(c):
        loads.append(c)
        return np.arange(c * 10, c * 10 + 10, dtype=float)[:, None] * np.ones((1, 3))

    store = {}
    got = X.chunked_rows(store, np.array([8, 9, 10, 25]), load, chunk=10)
    np.testing.assert_array_equal(got[:, 0], [8, 9, 10, 25])
    assert loads == [0, 1, 2] and sorted(store) == [1, 2]
    X.chunked_rows(store, np.array([11, 12]), load, chunk=10)
    assert loads == [0, 1, 2]  # chunk 1 was still held


def test_validator_report_counts_only_adversarial_images_that_fool(digits):
    _, X_test, _, y_test = digits
    X_test, y_test = X_test[:60], y_test[:60]
    right = y_test.copy()

    def predict(rows):  # right on the first 40 clean rows; anything changed is misread
        rows = np.asarray(rows, dtype=np.float32)
        same = np.all(rows == X_test, axis=1) if rows.shape == X_test.shape else np.zeros(len(rows), bool)
        out = np.where(same, right, (right + 1) % 10)
        out[40:] = (right[40:] + 1) % 10
        return out

    def check(rows):  # flags every row whose first pixel is above 8
        return np.where(np.asarray(rows)[:, 0] > 8, X.OOD, X.ACCEPTED).astype(np.int8)

    grad = np.ones_like(X_test)
    r = X.validator_report(check, predict, X_test, y_test, grad, 16, False, np.random.default_rng(0), 50)
    adv = r["adversarial"]
    assert adv["attempted"] == 40 and adv["fooled"] == 40 and adv["n"] == 40
    assert adv["flagged"] == 40 and adv["fooled_and_passed"] == 0  # +16 saturates pixel 0 at 16 > 8
    assert r["clean"]["flagged"] == int(np.sum(X_test[:, 0] > 8))
    assert r["noise_images"]["n"] == 50
