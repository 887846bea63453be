"""Teams, feature requests and a sync cadence: how boundaries decide who must agree to a change.

Model (ours; the design-structure-matrix literature, REFERENCES.md §28, argues it in words):

- Work is split into units (code modules and data tables), each belonging to one business domain.
  A feature request starts in a home domain and touches ``units_per_feature`` units; each unit is
  in the home domain with probability ``cohesion``, else in one of the other domains at random,
  and is a table with probability ``data_share``.
- Boundaries give every unit its owners: one team, or every team (a table in a shared database, a
  type in a shared kernel). A team owns a part of the feature: the work on its units, and a review
  of ``review_days`` for every jointly owned unit another team changes.
- The home team starts its part on arrival. Any other team's part first waits for the next sync
  point (every ``sync_interval_days``, the same calendar for everyone), then queues for that team
  (a SimPy resource of ``developers`` people, first come first served). The feature is delivered
  when every part is done. Coordination time is the time from arrival until the last other team
  starts on it (0 when nobody else is involved).

Draws (arrivals, domains, unit kinds, work) come from named streams, so arms with different
boundaries see the same requests and the same work: their difference is who must agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import simpy

from .rng import Streams


@dataclass(frozen=True)
class Requests:
    arrival: np.ndarray  # days
    home: np.ndarray  # home domain per feature
    domain: np.ndarray  # features x units: domain of each touched unit
    is_table: np.ndarray  # features x units
    slot: np.ndarray  # features x units: which unit of that domain and kind
    work: np.ndarray  # features x units: days of work on that unit
    random_owner: np.ndarray  # features x units: a team drawn at random (random boundaries)


def draw_requests(streams: Streams, n: int, domains: int, units_per_feature: int, cohesion: float,
                  data_share: float, slots: int, rate_per_day: float, unit_days: float) -> Requests:
    """Every random input of the organisation model, from its own named streams."""
    arrival = np.cumsum(streams["arrivals"].exponential(1.0 / rate_per_day, n))
    home = streams["home"].integers(0, domains, n)
    k = units_per_feature
    stay = streams["cohesion"].random((n, k)) < cohesion
    other = (home[:, None] + 1 + streams["elsewhere"].integers(0, domains - 1, (n, k))) % domains
    domain = np.where(stay, home[:, None], other)
    is_table = streams["kind"].random((n, k)) < data_share
    slot = streams["slot"].integers(0, slots, (n, k))
    work = streams["work"].exponential(unit_days, (n, k))
    random_owner = streams["owners"].integers(0, domains, (n, k))
    return Requests(arrival, home, domain, is_table, slot, work, random_owner)


def owners(req: Requests, design: str, kernel_slots: int, domains: int) -> np.ndarray:
    """Owning team per touched unit, or -1 for "every team": ``contexts``, ``shared_database``,
    ``shared_kernel`` (the first ``kernel_slots`` tables of every domain are shared) or ``random``."""
    if design == "random":
        return req.random_owner.copy()
    own = req.domain.copy()
    if design == "shared_database":
        own[req.is_table] = -1
    elif design == "shared_kernel":
        own[req.is_table & (req.slot < kernel_slots)] = -1
    elif design != "contexts":
        raise ValueError(f"unknown design {design!r}")
    return own


def parts_of(own_row: np.ndarray, work_row: np.ndarray, home: int, teams: int, review_days: float) -> dict:
    """{team: days of work} for one feature: owned units' work; a joint unit's work goes to the home
    team, and every other team reviews it."""
    parts: dict[int, float] = {}
    for team, work in zip(own_row, work_row):
        if team >= 0:
            parts[int(team)] = parts.get(int(team), 0.0) + float(work)
        else:
            parts[home] = parts.get(home, 0.0) + float(work)
            for t in range(teams):
                if t != home:
                    parts[t] = parts.get(t, 0.0) + review_days
    return parts


def next_sync(t: float, interval: float) -> float:
    """The first sync point at or after t (points at 0, interval, 2·interval, ...)."""
    return math.ceil(t / interval - 1e-12) * interval


def run_org(req: Requests, own: np.ndarray, teams: int, developers: int, sync_interval_days: float,
            review_days: float) -> dict[str, np.ndarray]:
    """Deliver every feature through SimPy; per feature: lead time, coordination time, other teams involved."""
    env = simpy.Environment()
    staff = [simpy.Resource(env, capacity=developers) for _ in range(teams)]
    n = len(req.arrival)
    lead, coord = np.zeros(n), np.zeros(n)
    involved = np.zeros(n, dtype=int)

    def part(i, team, work, cross):
        if cross:
            yield env.timeout(next_sync(env.now, sync_interval_days) - env.now)
        with staff[team].request() as got:
            yield got
            if cross:
                coord[i] = max(coord[i], env.now - req.arrival[i])
            yield env.timeout(work)

    def feature(i):
        yield env.timeout(req.arrival[i])  # every feature starts at time 0 and sleeps until it arrives
        home = int(req.home[i])
        parts = parts_of(own[i], req.work[i], home, teams, review_days)
        involved[i] = sum(t != home for t in parts)
        others = [env.process(part(i, t, w, True)) for t, w in parts.items() if t != home]
        if home in parts:  # the home team's part runs in this process, beside the others
            yield from part(i, home, parts[home], False)
        if others:
            yield env.all_of(others)
        lead[i] = env.now - req.arrival[i]

    for i in range(n):
        env.process(feature(i))
    env.run()
    return {"lead_days": lead, "coordination_days": coord, "teams_involved": involved}


def paired_ratio(num, den, n_batches: int = 20, confidence: float = 0.95):
    """mean(num) / mean(den) for two series over the same requests (common random numbers), with the
    batch-means ratio-estimator interval: batch k gives (a_k, b_k); R = ā / b̄ and its standard error
    is sd(a_k − R·b_k) / (√B · b̄), t with B − 1 degrees of freedom."""
    from scipy import stats

    from .metrics import Interval

    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    size = len(a) // n_batches
    if size < 1 or len(a) != len(b):
        return Interval(float("nan"), float("nan"), float("nan"))
    ak = a[: size * n_batches].reshape(n_batches, size).mean(axis=1)
    bk = b[: size * n_batches].reshape(n_batches, size).mean(axis=1)
    if bk.mean() <= 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    r = ak.mean() / bk.mean()
    half = stats.t.ppf(0.5 + confidence / 2, n_batches - 1) * np.std(ak - r * bk, ddof=1) / (np.sqrt(n_batches) * bk.mean())
    return Interval(float(r), float(r - half), float(r + half))
