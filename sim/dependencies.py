"""Dependencies that fail and get repaired: alternating renewal processes and their closed forms.

Each ``Dependency`` alternates between up periods (mean ``mtbf``) and repair periods
(mean ``mttr``), both exponential or both Weibull with a shape ``k`` (the scale is
``mean / Gamma(1 + 1/k)``, so the means stay ``mtbf`` and ``mttr`` whatever the shape).
It starts up at time 0. This is the textbook two-state availability model the
reliability literature (and the SRE book's "availability = uptime / total time")
uses: the long-run availability of one component is ``A = MTBF / (MTBF + MTTR)``
for any distributions with those means (renewal-reward theorem); independent
components combine in series as ``prod(A_i)`` and in parallel (any one suffices) as
``1 - prod(1 - A_i)``. The helpers below give those closed forms; ``Timeline``
answers "was it up at time t" and "since when has it been down" for many times at
once (numpy, sorted intervals), and ``combine`` builds a derived up/down timeline
(e.g. "a model tier answers") from several, on the union of their change points.
Where this differs from a real fleet: failures are independent, repairs start at
once, and a dependency is wholly up or wholly down (no partial degradation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

DISTRIBUTIONS = ("exponential", "weibull")


@dataclass(frozen=True)
class Dependency:
    """One remote dependency: name, mean up time ``mtbf`` and mean repair time ``mttr`` (same unit)."""

    name: str
    mtbf: float
    mttr: float
    distribution: str = "exponential"
    shape: float = 1.0  # Weibull shape k (ignored for exponential); k < 1: early failures, k > 1: wear-out

    def __post_init__(self):
        if not (self.mtbf > 0 and self.mttr > 0 and math.isfinite(self.mtbf) and math.isfinite(self.mttr)):
            raise ValueError(f"{self.name}: mtbf and mttr must be finite and > 0, got {self.mtbf}, {self.mttr}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"{self.name}: distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}")
        if not self.shape > 0:
            raise ValueError(f"{self.name}: Weibull shape must be > 0, got {self.shape}")

    @property
    def availability(self) -> float:
        """Long-run share of time up: MTBF / (MTBF + MTTR)."""
        return self.mtbf / (self.mtbf + self.mttr)

    def _draw(self, rng: np.random.Generator, mean: float, n: int) -> np.ndarray:
        if self.distribution == "exponential":
            return rng.exponential(mean, n)
        return mean / math.gamma(1 + 1 / self.shape) * rng.weibull(self.shape, n)

    def timeline(self, rng: np.random.Generator, horizon: float) -> "Timeline":
        """Down intervals over [0, horizon): up first, then repair, up, repair, ..."""
        starts, ends, t = [], [], 0.0
        chunk = max(16, int(2 * horizon / (self.mtbf + self.mttr)) + 16)
        while t < horizon:
            up, down = self._draw(rng, self.mtbf, chunk), self._draw(rng, self.mttr, chunk)
            cycle_end = t + np.cumsum(up + down)
            s = cycle_end - down
            starts.append(s)
            ends.append(cycle_end)
            t = float(cycle_end[-1])
        s, e = np.concatenate(starts), np.concatenate(ends)
        keep = s < horizon
        return Timeline(s[keep], np.minimum(e[keep], horizon), horizon)


@dataclass(frozen=True)
class Timeline:
    """Sorted, disjoint down intervals [starts[k], ends[k]) over [0, horizon)."""

    starts: np.ndarray
    ends: np.ndarray
    horizon: float

    @classmethod
    def always_up(cls, horizon: float) -> "Timeline":
        return cls(np.empty(0), np.empty(0), horizon)

    def _index(self, t) -> np.ndarray:
        return np.searchsorted(self.starts, np.asarray(t, dtype=float), side="right") - 1

    def up_at(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        if not self.starts.size:
            return np.ones(t.shape, dtype=bool)
        k = self._index(t)
        return ~((k >= 0) & (t < self.ends[np.maximum(k, 0)]))

    def down_since(self, t) -> np.ndarray:
        """For each time: when the current down interval began (NaN while up)."""
        t = np.asarray(t, dtype=float)
        k = self._index(t)
        out = np.full(t.shape, np.nan)
        if self.starts.size:
            kk = np.maximum(k, 0)
            down = (k >= 0) & (t < self.ends[kk])
            out[down] = self.starts[kk][down]
        return out

    def downtime(self) -> float:
        return float(np.sum(self.ends - self.starts))

    def availability(self) -> float:
        """Share of [0, horizon) spent up (the time average the closed form predicts)."""
        return 1.0 - self.downtime() / self.horizon

    @property
    def failures(self) -> int:
        return int(self.starts.size)


def combine(timelines: Sequence[Timeline], rule: Callable[..., np.ndarray]) -> Timeline:
    """The timeline that is up when ``rule(*up_arrays)`` is true, e.g. ``lambda f, a, b: f & (a | b)``.

    Evaluated once per segment between consecutive change points of the inputs, so it is exact.
    """
    horizon = timelines[0].horizon
    points = np.unique(np.concatenate([[0.0]] + [np.concatenate([tl.starts, tl.ends]) for tl in timelines]))
    points = points[points < horizon]
    up = np.asarray(rule(*[tl.up_at(points) for tl in timelines]), dtype=bool)
    change = np.flatnonzero(np.diff(np.concatenate([[True], up, [True]]).astype(np.int8)))
    edges = np.append(points, horizon)[change]
    return Timeline(edges[0::2].copy(), edges[1::2].copy(), horizon)


def series(availabilities: Sequence[float]) -> float:
    """All must be up: the product of the availabilities."""
    return float(np.prod(availabilities))


def parallel(availabilities: Sequence[float]) -> float:
    """Any one suffices: one minus the product of the unavailabilities."""
    return 1.0 - float(np.prod([1.0 - a for a in availabilities]))
