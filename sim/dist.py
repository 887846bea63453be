"""Service-time and latency distributions, all in seconds.

Each distribution draws with an explicit numpy Generator (see ``sim.rng``) so
that the caller decides which named stream feeds it. ``sample(rng, n)`` returns
an array of ``n`` draws (vectorised: draw a whole run's worth at once and index
it per request, which is both fast and gives common random numbers);
``sample(rng)`` returns one float. ``mean`` and ``scv`` (squared coefficient
of variation) are exact, so analytic formulas (Pollaczek-Khinchine) can use them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


class Distribution:
    mean: float

    def sample(self, rng: np.random.Generator, n: int | None = None):
        raise NotImplementedError

    @property
    def variance(self) -> float:
        raise NotImplementedError

    @property
    def scv(self) -> float:
        """Squared coefficient of variation, Var/mean^2."""
        return self.variance / self.mean**2 if self.mean else 0.0

    def scaled(self, factor: float) -> "Distribution":
        """The same shape with every draw multiplied by ``factor``."""
        return Scaled(self, factor)


def _positive(name, value):
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class Exponential(Distribution):
    mean: float

    def __post_init__(self):
        _positive("mean", self.mean)

    def sample(self, rng, n=None):
        return rng.exponential(self.mean, n)

    @property
    def variance(self):
        return self.mean**2


@dataclass(frozen=True)
class Deterministic(Distribution):
    value: float

    def __post_init__(self):
        if not self.value >= 0:  # also rejects NaN
            raise ValueError(f"value must be >= 0, got {self.value!r}")

    @property
    def mean(self):
        return self.value

    def sample(self, rng, n=None):
        return float(self.value) if n is None else np.full(n, float(self.value))

    @property
    def variance(self):
        return 0.0


@dataclass(frozen=True)
class Uniform(Distribution):
    low: float
    high: float

    def __post_init__(self):
        if not 0 <= self.low <= self.high:
            raise ValueError(f"need 0 <= low <= high, got low={self.low!r} high={self.high!r}")

    @property
    def mean(self):
        return (self.low + self.high) / 2

    def sample(self, rng, n=None):
        return rng.uniform(self.low, self.high, n)

    @property
    def variance(self):
        return (self.high - self.low) ** 2 / 12


@dataclass(frozen=True)
class Lognormal(Distribution):
    """Parameterised by its mean and its coefficient of variation (std/mean)."""

    mean: float
    cv: float = 1.0

    def __post_init__(self):
        _positive("mean", self.mean)
        _positive("cv", self.cv)

    @property
    def _mu_sigma(self):
        s2 = np.log1p(self.cv**2)
        return np.log(self.mean) - s2 / 2, np.sqrt(s2)

    def sample(self, rng, n=None):
        mu, sigma = self._mu_sigma
        return rng.lognormal(mu, sigma, n)

    def quantile(self, q: float) -> float:
        """The exact q-quantile (0 < q < 1): exp(mu + sigma * Phi^-1(q))."""
        from scipy.special import ndtri  # scipy.special only: scipy.stats costs ~0.5 s to import

        mu, sigma = self._mu_sigma
        return float(np.exp(mu + sigma * ndtri(q)))

    @property
    def variance(self):
        return (self.cv * self.mean) ** 2


@dataclass(frozen=True, eq=False)
class Empirical(Distribution):
    """Resamples measured values (e.g. timed inference calls) with replacement."""

    samples: np.ndarray = field(repr=False)

    def __init__(self, samples: Sequence[float]):
        arr = np.asarray(samples, dtype=float).ravel()
        if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError("Empirical needs at least one finite, non-negative sample")
        object.__setattr__(self, "samples", arr)

    @property
    def mean(self):
        return float(self.samples.mean())

    def sample(self, rng, n=None):
        idx = rng.integers(0, self.samples.size, n)
        return float(self.samples[idx]) if n is None else self.samples[idx]

    @property
    def variance(self):
        return float(self.samples.var())

    def quantile(self, q):
        return float(np.quantile(self.samples, q))

    def rescaled(self, mean: float) -> "Empirical":
        """The same measured shape with every value multiplied so the mean is ``mean``.

        Used to keep a real model's measured variability (its tail, its pauses)
        while setting the mean service time as a parameter. The samples' mean must be > 0.
        """
        _positive("mean", mean)
        m = self.samples.mean()
        if not m > 0:
            raise ValueError("cannot rescale samples whose mean is 0")
        return Empirical(self.samples / m * mean)


@dataclass(frozen=True, eq=False)
class Mixture(Distribution):
    """Draws from ``components[k]`` with probability ``weights[k]``."""

    components: tuple
    weights: tuple

    def __init__(self, components, weights):
        w = np.asarray(weights, dtype=float)
        if len(components) != len(w) or len(w) == 0 or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("Mixture needs one non-negative weight per component")
        object.__setattr__(self, "components", tuple(components))
        object.__setattr__(self, "weights", tuple(w / w.sum()))

    @property
    def mean(self):
        return float(sum(w * c.mean for c, w in zip(self.components, self.weights)))

    def sample(self, rng, n=None):
        if n is None:
            k = rng.choice(len(self.components), p=self.weights)
            return float(self.components[k].sample(rng))
        ks = rng.choice(len(self.components), size=n, p=self.weights)
        out = np.empty(n)
        for k, comp in enumerate(self.components):
            mask = ks == k
            if mask.any():
                out[mask] = comp.sample(rng, int(mask.sum()))
        return out

    @property
    def variance(self):
        second = sum(w * (c.variance + c.mean**2) for c, w in zip(self.components, self.weights))
        return float(second - self.mean**2)


@dataclass(frozen=True, eq=False)
class Scaled(Distribution):
    base: Distribution
    factor: float

    @property
    def mean(self):
        return self.base.mean * self.factor

    def sample(self, rng, n=None):
        return self.base.sample(rng, n) * self.factor

    @property
    def variance(self):
        return self.base.variance * self.factor**2


@dataclass(frozen=True, eq=False)
class Zipf(Distribution):
    """A finite Zipf law over ranks 0..n-1: P(k) proportional to (k + 1)^-s (s = 0 is uniform).

    Used for skewed user activity (a few users send most requests). ``sample``
    inverts the cumulative weights with one uniform per draw, so a run's draws
    are a prefix of a longer run's on the same Generator.
    """

    n: int
    s: float = 1.0
    weights: np.ndarray = field(init=False, repr=False)
    _cdf: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        if int(self.n) != self.n or self.n < 1:
            raise ValueError(f"n must be a positive integer, got {self.n!r}")
        if not self.s >= 0:
            raise ValueError(f"s must be >= 0, got {self.s!r}")
        w = np.arange(1, int(self.n) + 1, dtype=float) ** (-float(self.s))
        w /= w.sum()
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "_cdf", np.cumsum(w))

    def sample(self, rng, n=None):
        u = rng.random(n)
        k = np.minimum(np.searchsorted(self._cdf, u, side="right"), self.n - 1)
        return int(k) if n is None else k

    @property
    def mean(self):
        return float(np.dot(np.arange(self.n), self.weights))

    @property
    def variance(self):
        k = np.arange(self.n)
        return float(np.dot(k * k, self.weights) - self.mean ** 2)
