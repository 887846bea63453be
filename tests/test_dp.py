"""Output perturbation (Chaudhuri et al. 2011): the noise follows the sensitivity bound and costs accuracy as epsilon falls."""
import numpy as np
from sklearn.datasets import load_digits

from sim import dp


def test_rows_are_scaled_inside_the_unit_ball():
    Z = dp.unit_rows(np.random.default_rng(0).normal(size=(50, 4)) * 30)
    assert np.linalg.norm(Z, axis=1).max() == 1.0 and Z.shape == (50, 5)


def test_noise_norm_matches_the_gamma_of_the_mechanism():
    rng = np.random.default_rng(1)
    W = np.zeros((2, 10))
    n, lam, eps = 100, 0.1, 1.0
    norms = np.array([np.linalg.norm(dp.perturb(W, n, lam, eps, rng), axis=1) for _ in range(1500)]).ravel()
    scale = 2 / (n * lam) / (eps / 2)  # per classifier: epsilon split over K = 2
    assert abs(norms.mean() - 10 * scale) < 0.05 * 10 * scale  # Gamma(d, scale) has mean d * scale


def test_private_accuracy_rises_with_epsilon():
    X, y = load_digits(return_X_y=True)
    Z = dp.unit_rows(X)
    W = dp.fit_one_vs_rest(Z[:1200], y[:1200], lam=0.01)
    base = dp.accuracy(W, Z[1200:], y[1200:])
    rng = np.random.default_rng(2)
    acc = {e: np.mean([dp.accuracy(dp.perturb(W, 1200, 0.01, e, rng), Z[1200:], y[1200:]) for _ in range(20)])
           for e in (0.1, 1.0, 100.0)}
    assert base > 0.8 and acc[0.1] < acc[1.0] < acc[100.0] <= base + 0.02
