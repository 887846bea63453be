"""A Monte Carlo model of paying down technical debt over mined hotspots (weeks, replications).

The model (ours; Tornhill's hotspot books argue it in words, not in a formula):

- File i keeps changing as often as it did: its share of future changes is ``r_i = rev_i / sum(rev)``.
- Defects arrive per week as a Poisson count with rate
  ``bugs_per_week x sum_i rev_i c_i(t) / sum_i rev_i c_i(0)``: in proportion to churn x complexity,
  normalised so the team starts at ``bugs_per_week``.
- Refactoring file i takes ``e_i`` dev-days (proportional to its lines, times a lognormal error of the
  estimate drawn per replication). Complexity falls linearly with the share of that effort done,
  ``c_i(t) = c_i (1 - refactor_effect x progress_i(t))``; a finished file keeps its lower complexity.
- Each week ``debt_days`` go to refactoring: ``hotspots_first`` works down the ranking (highest
  score first, one file at a time); ``even`` spreads them equally over every unfinished file (water
  filling: a finished file's share goes to the rest).
- Feature time is what is left: ``capacity - debt_days - bugs x bug_fix_days`` (never below 0). A
  change to file i costs ``1 + complexity_drag x c_i(t) / c_bar`` dev-days, ``c_bar`` the
  change-weighted mean complexity at the start; velocity is feature time / mean cost per change.

Both arms read the same uniform draws (Poisson counts by inverse CDF), so their difference is the
allocation alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import poisson


@dataclass(frozen=True)
class Codebase:
    revisions: np.ndarray
    complexity: np.ndarray
    sloc: np.ndarray

    def __post_init__(self):
        for name in ("revisions", "complexity", "sloc"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=float))

    @property
    def n(self) -> int:
        return self.revisions.size

    def flat(self) -> "Codebase":
        """Every file equally hot: the mean revisions, complexity and lines everywhere (the control)."""
        ones = np.ones(self.n)
        return Codebase(ones * self.revisions.mean(), ones * self.complexity.mean(), ones * self.sloc.mean())

    def ranking(self) -> np.ndarray:
        """File indices by score = revisions x complexity, highest first (ties keep the given order)."""
        return np.argsort(-(self.revisions * self.complexity), kind="stable")


def hotspots_first_progress(effort: np.ndarray, order: np.ndarray, spent: float) -> np.ndarray:
    """Share of each file's effort done once ``spent`` dev-days went down ``order`` (rows: replications)."""
    e = effort[:, order]
    before = np.cumsum(e, axis=1) - e
    done = np.clip((spent - before) / e, 0.0, 1.0)
    out = np.empty_like(done)
    out[:, order] = done
    return out


def even_progress(effort: np.ndarray, spent: float) -> np.ndarray:
    """Water filling: each unfinished file has received the same dev-days; ``spent`` in total per row."""
    r, n = effort.shape
    s = np.sort(effort, axis=1)
    prefix = np.concatenate([np.zeros((r, 1)), np.cumsum(s, axis=1)], axis=1)
    need = prefix[:, :-1] + s * (n - np.arange(n))  # dev-days to bring every file up to s[k]
    k = (need <= spent).sum(axis=1)
    level = np.full(r, np.inf)
    open_ = k < n
    level[open_] = (spent - prefix[open_, k[open_]]) / (n - k[open_])
    return np.minimum(effort, level[:, None]) / effort


@dataclass(frozen=True)
class DebtModel:
    weeks: int
    before_weeks: int
    capacity_days: float
    debt_days: float
    bugs_per_week: float
    bug_fix_days: float
    refactor_effect: float
    complexity_drag: float

    def run(self, code: Codebase, effort: np.ndarray, u_before: np.ndarray, u_after: np.ndarray,
            allocation: str) -> dict:
        """Weekly bugs and velocity per replication for one allocation ("hotspots_first" or "even").

        ``effort``: (replications, files) dev-days; ``u_before``/``u_after``: uniform draws
        (replications, before_weeks) and (replications, weeks) shared by the arms.
        """
        rev, c0 = code.revisions, code.complexity
        base = float(np.sum(rev * c0))
        share = rev / rev.sum()
        c_bar = float(np.sum(share * c0))
        order = code.ranking()
        r = effort.shape[0]
        bugs = np.empty((r, self.weeks))
        velocity = np.empty((r, self.weeks))
        feature = np.empty((r, self.weeks))
        progress = np.zeros_like(effort)
        for t in range(self.weeks):
            spent = self.debt_days * (t + 1)
            progress = (hotspots_first_progress(effort, order, spent) if allocation == "hotspots_first"
                        else even_progress(effort, spent))
            c = c0 * (1.0 - self.refactor_effect * progress)
            rate = self.bugs_per_week * (c @ rev) / base
            bugs[:, t] = poisson.ppf(u_after[:, t], rate)
            feature[:, t] = np.maximum(0.0, self.capacity_days - self.debt_days - bugs[:, t] * self.bug_fix_days)
            velocity[:, t] = feature[:, t] / (1.0 + self.complexity_drag * (c @ share) / c_bar)
        b0 = poisson.ppf(u_before, self.bugs_per_week)
        v0 = np.maximum(0.0, self.capacity_days - b0 * self.bug_fix_days) / (1.0 + self.complexity_drag)
        return {"bugs": bugs, "velocity": velocity, "feature_days": feature, "progress": progress,
                "bugs_before": b0, "velocity_before": v0}
