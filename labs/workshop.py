"""Scoring a learner's stated numbers and verdicts against a lab's run: one scorer for every face.

A stated number is read against the measured value and its 95% interval: inside
the interval is as right as the run can tell; outside, the score says by what
factor and in which direction ("4× too high; the 95% interval is 1.2–1.4 s").
A stated verdict (holds / fails / conditional) is read against the lab's verdict,
region-aware when the lab's sweep has been run: saying "holds" of a claim that
holds only in a region earns part credit. The notebooks' prediction cells, the
drill and the explorer call these functions; none of them keeps its own rule.
Only numbers, never prose, are compared; nothing here runs a simulation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .measure import fmt_number

STATED_VERDICTS = ("holds", "fails", "conditional")
CLOSE_FACTOR = 1.5  # outside the interval but within this factor: half credit
NO_INTERVAL_TOLERANCE = 0.10  # with no interval, within 10% of the value counts as inside


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(float(x))


@dataclass(frozen=True)
class NumberScore:
    """A stated number against a measured one: factor, direction, inside the interval, credit 0..1."""

    stated: float
    measured: float | None
    interval: tuple[float, float] | None
    unit: str = ""

    @property
    def measurable(self) -> bool:
        return _finite(self.measured)

    @property
    def inside(self) -> bool | None:
        if not self.measurable:
            return None
        if self.interval is not None:
            lo, hi = self.interval
            return bool(lo <= self.stated <= hi)
        m = float(self.measured)
        return abs(self.stated - m) <= NO_INTERVAL_TOLERANCE * abs(m) if m != 0 else self.stated == 0

    @property
    def direction(self) -> str:
        """'right' (inside), 'high' or 'low' (outside), 'unknown' (nothing measured)."""
        if not self.measurable:
            return "unknown"
        if self.inside:
            return "right"
        return "high" if self.stated > float(self.measured) else "low"

    @property
    def factor(self) -> float | None:
        """How many times off (>= 1) when stated and measured share a sign; None otherwise."""
        if not self.measurable:
            return None
        m, s = float(self.measured), float(self.stated)
        if m == 0 or s == 0 or (m > 0) != (s > 0):
            return None
        r = s / m
        return max(r, 1 / r)

    @property
    def log_error(self) -> float | None:
        """log10(stated / measured): positive too high, negative too low (calibration)."""
        f = self.factor
        if f is None:
            return None
        return math.log10(f) if self.stated > float(self.measured) else -math.log10(f)

    @property
    def credit(self) -> float:
        if self.inside:
            return 1.0
        f = self.factor
        return 0.5 if f is not None and f <= CLOSE_FACTOR else 0.0

    def interval_text(self) -> str:
        if self.interval is None:
            return f"the run measured {fmt_number(self.measured, self.unit)} (no interval at these settings)"
        lo, hi = self.interval
        return (f"the 95% interval is {fmt_number(lo)}–{fmt_number(hi, self.unit)} "
                f"(measured {fmt_number(self.measured, self.unit)})")

    def sentence(self) -> str:
        if not self.measurable:
            return f"{fmt_number(self.stated, self.unit)}: the run has no value for it at these settings."
        if self.inside:
            if self.interval is None:
                return f"{fmt_number(self.stated, self.unit)} is right: within 10% of {self.interval_text()}."
            return f"{fmt_number(self.stated, self.unit)} is right: inside the interval; {self.interval_text()}."
        f = self.factor
        if f is None:
            off = f"{fmt_number(abs(self.stated - float(self.measured)), self.unit)} too {self.direction}"
        elif f >= 1.95:
            off = f"{f:,.0f}× too {self.direction}" if f >= 10 else f"{f:.2g}× too {self.direction}"
        else:
            off = f"{abs(self.stated - float(self.measured)) / abs(float(self.measured)):.0%} too {self.direction}"
        return f"{fmt_number(self.stated, self.unit)} is {off}; {self.interval_text()}."


def score_number(stated: float, measured, interval=None, unit: str = "") -> NumberScore:
    iv = None
    if interval is not None and all(_finite(b) for b in interval):
        iv = (float(interval[0]), float(interval[1]))
    return NumberScore(float(stated), float(measured) if _finite(measured) else None, iv, unit)


def score_prediction(prediction, run, arm: str, metric: str, unit: str = "") -> str:
    """A notebook's prediction cell scored against a run's (arm, metric): one sentence."""
    if prediction is None:
        return "No prediction yet: write your guess in `prediction` above, then run this cell again."
    if run is None:
        return "No run yet: run the exercise (set `changed`), then run this cell again."
    s = score_number(prediction, run.metrics.get(arm, {}).get(metric), run.intervals.get(arm, {}).get(metric), unit)
    return f"Your prediction for {arm} {metric}: {s.sentence()}"


@dataclass(frozen=True)
class VerdictScore:
    """A stated verdict against the lab's, region-aware; credit 1, 0.5 (right at the defaults only) or 0."""

    stated: str
    actual: str  # the lab's verdict (region verdict when swept, point verdict otherwise)
    at_defaults: str  # the point verdict at the drilled settings
    region: str | None
    credit: float
    graded: bool = True

    def sentence(self) -> str:
        if not self.graded:
            return f"you said {self.stated}; not graded ({self.actual})."
        where = f" ({self.region})" if self.region else ""
        if self.credit == 1:
            return f"right: the lab says {self.actual}{where}."
        if self.credit > 0:
            return (f"partly right: at the drilled settings it {self.at_defaults}, but over the sweep it is "
                    f"{self.actual}{where}.")
        return f"wrong: you said {self.stated}; the lab says {self.actual}{where}."


def score_verdict(stated: str, point, region=None) -> VerdictScore:
    """``point``: the claim's Verdict from ``run``; ``region``: its Verdict from ``check`` (or None)."""
    stated = (stated or "").strip().lower()
    at = point.verdict
    actual = region.verdict if region is not None else at
    where = region.region if region is not None else None
    if actual in ("inconclusive", "not_measured"):
        return VerdictScore(stated, actual, at, where, 0.0, graded=False)
    if stated == actual:
        credit = 1.0
    elif actual == "conditional" and stated == at:
        credit = 0.5
    else:
        credit = 0.0
    return VerdictScore(stated, actual, at, where, credit)


def exercise_answer(exercise, before, after, unit: str = "") -> str:
    """An exercise's answer once revealed: the watched number at the defaults and after the change, and why."""
    arm, metric = exercise.watch

    def at(run):
        v = run.metrics.get(arm, {}).get(metric)
        iv = run.intervals.get(arm, {}).get(metric)
        text = fmt_number(v, unit) if _finite(v) else "not measured"
        if iv is not None and all(_finite(b) for b in iv):
            text += f" (95% interval {fmt_number(iv[0], unit)}–{fmt_number(iv[1], unit)})"
        return v, text

    (v0, t0), (v1, t1) = at(before), at(after)
    move = ""
    if _finite(v0) and _finite(v1) and float(v0) != 0 and float(v1) != 0 and (float(v0) > 0) == (float(v1) > 0):
        r = float(v1) / float(v0)
        move = "unchanged" if abs(r - 1) < 0.005 else f"{r:.3g}× the default" if r > 1 else f"{1 / r:.3g}× lower"
    answer = f"Answer: {arm} {metric} is {t1} after the change, against {t0} at the defaults"
    answer += f" ({move})." if move else "."
    return answer + (f" Why: {exercise.why}" if exercise.why else "")
