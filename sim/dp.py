"""Differentially private logistic regression by output perturbation (Chaudhuri, Monteleoni & Sarwate 2011).

For L2-regularised logistic regression, objective (1/n) sum loss + (lambda/2) ||w||^2, with every
input scaled to ||x|| <= 1, the minimiser's L2 sensitivity is 2 / (n lambda); adding noise b with
density proportional to exp(-epsilon ||b|| / sensitivity) (a uniform direction, a Gamma(d, sensitivity /
epsilon) norm) makes the released weights epsilon-DP (their Algorithm 1). Multiclass is one-vs-rest,
each of the K classifiers spending epsilon / K (basic composition). The intercept is a constant input
column, so the bound covers it. Where we differ: lambda is a setting, not tuned privately.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows with a constant column appended, scaled so the largest row norm is 1 (the bound needs ||x|| <= 1)."""
    Z = np.hstack([np.asarray(X, dtype=float), np.ones((len(X), 1))])
    return Z / np.linalg.norm(Z, axis=1).max()


def fit_one_vs_rest(Z: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Non-private weights (K, d), one row per class, or one row (the positive class) for two classes.

    sklearn's C = 1 / (n lambda) gives the objective above, up to a factor n.
    """
    n, classes = len(Z), np.unique(y)
    W = []
    for k in (classes[1:] if len(classes) == 2 else classes):
        clf = LogisticRegression(C=1.0 / (n * lam), fit_intercept=False, max_iter=2000)
        clf.fit(Z, (y == k).astype(int))
        W.append(clf.coef_[0])
    return np.array(W)


def perturb(W: np.ndarray, n: int, lam: float, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """W plus per-classifier noise for an epsilon-DP release of all K classifiers together."""
    K, d = W.shape
    scale = 2.0 / (n * lam) / (epsilon / K)
    direction = rng.normal(size=(K, d))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return W + direction * rng.gamma(d, scale, size=(K, 1))


def accuracy(W: np.ndarray, Z: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of one-vs-rest weights (one row: the sign decides between two classes)."""
    scores = Z @ W.T
    pred = (scores[:, 0] > 0).astype(int) if W.shape[0] == 1 else scores.argmax(axis=1)
    return float(np.mean(pred == y))
