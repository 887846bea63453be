"""The Lab contract: one definition of parameters, runs, results and verdicts.

The explorer, the notebooks, the command line and the tests all call
``Lab.run(seed, **params)`` and render the ``Result`` it returns; nothing
about a question is computed twice. Parameter validation lives here once, so
every face refuses bad input with the same one-line message.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd

from .catalog import ClaimSpec, Question, load_catalog


class ParamError(ValueError):
    """A parameter value a lab refuses; the message names the parameter and its range."""


@dataclass(frozen=True)
class Param:
    """One tunable input of a lab: default, allowed range or choices, unit, help."""

    name: str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    unit: str = ""
    help: str = ""
    step: float | None = None

    def __post_init__(self):
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        self.validate(self.default)  # a lab whose default is invalid is a bug: fail at import

    @property
    def kind(self) -> type:
        return type(self.default)

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.kind is bool:
            return "true or false"
        lo = "-inf" if self.low is None else _fmt(self.low)
        hi = "inf" if self.high is None else _fmt(self.high)
        kind = "an integer" if self.kind is int else "a number"
        unit = f" {self.unit}" if self.unit else ""
        return f"{kind} in [{lo}, {hi}]{unit}"

    def _refuse(self, value) -> ParamError:
        return ParamError(f"parameter {self.name}: {value!r} is not allowed; expected {self.allowed()}")

    def validate(self, value):
        """Coerce ``value`` to the parameter's type and check it; raise ParamError if not allowed."""
        kind = self.kind
        if self.choices is not None:
            if value not in self.choices:
                raise self._refuse(value)
            return value
        if kind is bool:
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise self._refuse(value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self._refuse(value)
        if kind is int:
            if float(value) != int(value):
                raise self._refuse(value)
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise self._refuse(value)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise self._refuse(value)
        return value

    def parse(self, text: str):
        """Read a value from text (command line, URL) and validate it."""
        text = str(text).strip()
        kind = self.kind
        try:
            if self.choices is not None:
                match = [c for c in self.choices if str(c) == text]
                value = match[0] if match else text
            elif kind is bool:
                lowered = text.lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value = lowered in ("true", "1", "yes")
            elif kind is int:
                f = float(text)
                value = int(f) if f.is_integer() else f
            else:
                value = float(text)
        except ValueError:
            raise self._refuse(text) from None
        return self.validate(value)

    def to_dict(self) -> dict:
        d = {"name": self.name, "default": self.default, "unit": self.unit, "help": self.help,
             "type": self.kind.__name__}
        if self.choices is not None:
            d["choices"] = list(self.choices)
        else:
            d["low"], d["high"] = self.low, self.high
        return d


def _fmt(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def fmt_number(x) -> str:
    """A measured number for people: 4 significant digits, no exponent for large values."""
    if x is None:
        return ""
    if isinstance(x, (float, np.floating)):
        if not math.isfinite(x):
            return "n/a"
        return f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:.4g}"
    return str(x)


@dataclass(frozen=True)
class Sweep:
    """The parameter whose values show where a claim holds."""

    param: str
    values: tuple

    def __init__(self, param: str, values: Sequence):
        object.__setattr__(self, "param", param)
        object.__setattr__(self, "values", tuple(values))


@dataclass(frozen=True)
class Exercise:
    """A "change this, predict, then run" step for notebooks and workshops."""

    prompt: str
    changes: dict
    watch: tuple[str, str]  # (arm, metric) to predict


@dataclass
class Verdict:
    id: str
    text: str
    verdict: str  # holds | fails | conditional
    detail: str
    metric: str
    arm: str
    measured: float | None = None
    region: str | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "verdict": self.verdict, "detail": self.detail}


@dataclass
class Outcome:
    """What a lab's ``simulate`` hands back; ``run`` turns it into a Result."""

    metrics: dict[str, dict[str, float]]
    series: dict[str, pd.DataFrame] = field(default_factory=dict)
    intervals: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    lab: str
    seed: int
    params: dict
    metrics: dict[str, dict[str, float]]
    targets: dict[str, str]
    claims: list[Verdict]
    series: dict[str, pd.DataFrame]
    intervals: dict[str, dict[str, tuple[float, float]]]
    notes: list[str]
    extras: dict[str, Any]
    elapsed_s: float

    def to_dict(self) -> dict:
        """The command line's JSON object (DESIGN.md); NaN becomes null."""
        return {
            "lab": self.lab,
            "seed": self.seed,
            "params": self.params,
            "metrics": {arm: {k: _json_number(v) for k, v in m.items()} for arm, m in self.metrics.items()},
            "targets": self.targets,
            "claims": [v.to_dict() for v in self.claims],
            "elapsed_s": round(self.elapsed_s, 4),
        }

    def metric_table(self, question: Question) -> pd.DataFrame:
        """The seed's metric table with the measured value per arm and whether it meets the target."""
        rows = []
        for spec in question.metrics:
            for arm, values in self.metrics.items():
                if spec.key in values:
                    v = values[spec.key]
                    lo_hi = self.intervals.get(arm, {}).get(spec.key)
                    rows.append({"metric": spec.name, "key": spec.key, "formula": spec.formula, "arm": arm,
                                 "measured": v, "ci_low": lo_hi[0] if lo_hi else np.nan,
                                 "ci_high": lo_hi[1] if lo_hi else np.nan, "target": spec.target,
                                 "met": spec.met(v)})
        return pd.DataFrame(rows, columns=["metric", "key", "formula", "arm", "measured", "ci_low",
                                           "ci_high", "target", "met"])


def _json_number(v):
    if v is None:
        return None
    v = float(v)
    return None if not math.isfinite(v) else v


def point_verdict(claim: ClaimSpec, metrics: dict[str, dict[str, float]]) -> Verdict:
    """Verdict of a claim at one parameter setting: holds or fails, with the measured value."""
    measured = metrics.get(claim.arm, {}).get(claim.metric)
    if measured is None:
        raise KeyError(f"{claim.id}: the lab did not measure {claim.arm}.{claim.metric}")
    ok = claim.check(measured)
    verdict = "holds" if ok else "fails"
    detail = f"measured {claim.arm} {claim.metric} = {fmt_number(float(measured))} (claim: {claim.reading})"
    return Verdict(claim.id, claim.text, verdict, detail, claim.metric, claim.arm, float(measured))


class Lab:
    """Base class of every lab; a subclass sets the class attributes and ``simulate``/``plots``."""

    id: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    arms: ClassVar[tuple[str, ...]] = ("baseline", "pattern")
    headline: ClassVar[tuple[str, str]]  # (arm, metric) a learner predicts before seeing the run
    sweeps: ClassVar[dict[str, Sweep]] = {}  # claim id -> the sweep that shows its region
    refine_param: ClassVar[str | None] = None  # the request-budget parameter "refine" scales up
    exercises: ClassVar[tuple[Exercise, ...]] = ()
    profiles: ClassVar[tuple[str, ...]] = ()  # reference latency profiles (data/profiles) the lab reads
    budget_s: ClassVar[float] = 1.0  # wall-time budget of a default run

    # ------------------------------------------------------------ catalogue
    @property
    def question(self) -> Question:
        return load_catalog().get(self.id)

    @property
    def title(self) -> str:
        return self.question.title

    @property
    def targets(self) -> dict[str, str]:
        return {m.key: m.target for m in self.question.metrics}

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ParamError(f"unknown parameter {name!r} for {self.id}; known: "
                         + ", ".join(p.name for p in self.params))

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def validate(self, values: dict) -> dict:
        """Fill defaults and validate; unknown names and bad values raise ParamError."""
        full = self.defaults()
        for name, value in values.items():
            full[name] = self.param(name).validate(value)
        return full

    def parse(self, pairs: dict[str, str]) -> dict:
        """Validate textual NAME=VALUE settings (command line, URL query)."""
        return {name: self.param(name).parse(text) for name, text in pairs.items()}

    # ------------------------------------------------------------ running
    def simulate(self, seed: int, **params) -> Outcome:
        raise NotImplementedError

    def plots(self, result: Result) -> list:
        """Matplotlib figures for a result (labs override)."""
        return []

    def prepare(self, seed: int = 0) -> None:
        """Build what the default run reads from caches (trained models, attack curves).

        Paid once per machine and seed; labs without such work keep this no-op.
        The test suite calls it once before the tests start, so timed runs are warm.
        """

    def run(self, seed: int = 0, **params) -> Result:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ParamError(f"parameter seed: {seed!r} is not allowed; expected a non-negative integer")
        p = self.validate(params)
        t0 = time.perf_counter()
        out = self.simulate(int(seed), **p)
        elapsed = time.perf_counter() - t0
        verdicts = [point_verdict(c, out.metrics) for c in self.question.claims]
        return Result(self.id, int(seed), p, out.metrics, self.targets, verdicts, out.series,
                      out.intervals, out.notes, out.extras, elapsed)

    def check(self, seed: int = 0, progress=None, **params) -> list[Verdict]:
        """Every claim's verdict over its sweep: holds, fails, or conditional with the region.

        Runs share the seed (common random numbers), so neighbouring settings differ
        only by the parameter. Runs are memoised across claims that sweep the same values.
        """
        base = self.validate(params)
        memo: dict[tuple, Result] = {}

        def run_at(setting: dict) -> Result:
            key = tuple(sorted(setting.items()))
            if key not in memo:
                memo[key] = self.run(seed, **setting)
                if progress:
                    progress(len(memo))
            return memo[key]

        at_point = run_at(base)
        verdicts = []
        for claim in self.question.claims:
            here = point_verdict(claim, at_point.metrics)
            sweep = self.sweeps.get(claim.id)
            if sweep is None:
                here.detail += "; no sweep: verdict at these settings only"
                verdicts.append(here)
                continue
            values = sorted(set(sweep.values) | {base[sweep.param]}, key=_sort_key)
            outcomes = [(v, point_verdict(claim, run_at({**base, sweep.param: v}).metrics)) for v in values]
            good = [v for v, vd in outcomes if vd.verdict == "holds"]
            if len(good) == len(values):
                verdict, region = "holds", f"holds for every {sweep.param} tried ({_fmt_values(values)})"
            elif not good:
                verdict, region = "fails", f"fails for every {sweep.param} tried ({_fmt_values(values)})"
            else:
                verdict, region = "conditional", f"holds only when {sweep.param} in {_fmt_values(good)}"
            measured = "; ".join(f"{sweep.param}={_fmt(v)}: {fmt_number(vd.measured)}" for v, vd in outcomes)
            verdicts.append(Verdict(claim.id, claim.text, verdict,
                                    f"{region} (claim: {claim.reading}; {claim.arm} {claim.metric}: {measured})",
                                    claim.metric, claim.arm, here.measured, region))
        return verdicts


def _sort_key(v):
    return (0, v) if isinstance(v, (int, float)) else (1, str(v))


def _fmt_values(values) -> str:
    return ", ".join(_fmt(v) for v in values)
