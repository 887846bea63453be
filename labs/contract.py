"""The Lab contract: what a lab declares, and the one ``run`` and ``check`` every face calls.

A lab declares params and cross-parameter rules (``labs.params``), arms with labels
and one-line glossaries, fixed assumptions, named parts (experiments cached on the
parameters they read), exercises and a headline; it implements ``simulate(seed, p)``
returning an ``Outcome`` built with ``labs.measure.Measurements``. Claims, their
evidence, sweeps and controls are data in ``data/questions.json``; ``run`` gives a
point verdict on each and ``check`` the region where each holds (``labs.claims``).
Settings are validated before the clock starts, so refusals cost no simulation.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import pandas as pd

from .catalog import Question, load_catalog
from .claims import SweepRunner, Verdict, check_claim, claim_settings, point_verdict
from .measure import Measurements, fmt_number
from .params import Param, ParamError, Rule, Settings, check_seed

__all__ = ["Arm", "Exercise", "Lab", "Outcome", "Param", "ParamError", "Result", "Rule", "Series", "Settings",
           "Verdict", "fmt_number", "WRITEUPS"]

WRITEUPS = Path(__file__).resolve().parent / "writeups"


class Arm(str):
    """An arm's name (a str, so it compares and keys like one) with a label and a one-line glossary."""

    label: str
    glossary: str

    def __new__(cls, name: str, label: str = "", glossary: str = ""):
        obj = super().__new__(cls, name)
        obj.label = label or name.replace("_", " ").capitalize()
        obj.glossary = glossary
        return obj

    def __reduce__(self):
        return (Arm, (str(self), self.label, self.glossary))


COMPARISON = Arm("comparison", "Pattern vs baseline", "ratios and savings between the two arms")


@dataclass(frozen=True)
class Exercise:
    """A "change this, predict, then run" step for notebooks, drills and workshops."""

    prompt: str
    changes: dict
    watch: tuple[str, str]  # (arm, metric) to predict
    why: str = ""  # the mechanism behind the change, shown once the answer is revealed


class Series(dict):
    """A result's series by name.

    A lab may give ``Outcome`` a zero-argument function instead of a frame for a series that costs
    time to build (a per-window time line, a grid of extra runs): it is called the first time the
    series is read and the frame kept, so sweeps and checks, which read only metrics, never pay for
    it. Iterating, copying and pickling (Streamlit's cache) see built frames.
    """

    def __getitem__(self, key):
        value = dict.__getitem__(self, key)
        if callable(value):
            value = value()
            dict.__setitem__(self, key, value)
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default

    def __iter__(self):  # overridden, so dict(s) and {**s} go through __getitem__ (built frames)
        return iter(list(dict.keys(self)))

    def values(self):
        return [self[k] for k in self]

    def items(self):
        return [(k, self[k]) for k in self]

    def __reduce__(self):
        return (Series, (dict(self.items()),))


@dataclass
class Outcome:
    """What ``simulate`` hands back: measurements (or plain metric dicts), series (a frame, or a function
    building it when first read: ``Series``), notes, extras."""

    metrics: Measurements | dict
    series: dict[str, pd.DataFrame] = field(default_factory=dict)
    intervals: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    reasons: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.metrics, Measurements):
            m = self.metrics
            self.metrics, self.intervals, self.reasons = m.metrics, m.intervals, m.reasons


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
    reasons: dict[str, dict[str, str]] = field(default_factory=dict)
    assumptions: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """The command line's JSON object (DESIGN.md); NaN becomes null."""
        return {
            "lab": self.lab,
            "seed": self.seed,
            "params": dict(self.params),
            "metrics": {arm: {k: json_number(v) for k, v in m.items()} for arm, m in self.metrics.items()},
            "targets": self.targets,
            "claims": [v.to_dict() for v in self.claims],
            "elapsed_s": round(self.elapsed_s, 4),
        }

    def interval(self, arm: str, key: str) -> tuple[float, float] | None:
        return self.intervals.get(arm, {}).get(key)

    def metric_table(self, question: Question) -> pd.DataFrame:
        """The seed's metric table with the measured value per arm and whether it meets the target."""
        rows = []
        for spec in question.metrics:
            for arm, values in self.metrics.items():
                if spec.key in values:
                    v = values[spec.key]
                    lo_hi = self.interval(arm, spec.key)
                    rows.append({"metric": spec.name, "key": spec.key, "formula": spec.formula, "arm": arm,
                                 "measured": v, "ci_low": lo_hi[0] if lo_hi else np.nan,
                                 "ci_high": lo_hi[1] if lo_hi else np.nan, "target": spec.target,
                                 "met": spec.met(v)})
        return pd.DataFrame(rows, columns=["metric", "key", "formula", "arm", "measured", "ci_low",
                                           "ci_high", "target", "met"])


def json_number(v):
    if v is None:
        return None
    v = float(v)
    return None if not math.isfinite(v) else v


class Lab:
    """Base class of every lab; a subclass sets the class attributes and ``simulate``/``plots``."""

    id: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    rules: ClassVar[tuple[Rule, ...]] = ()
    arms: ClassVar[tuple[Arm, ...]] = (Arm("baseline"), Arm("pattern"))
    assumptions: ClassVar[tuple[str, ...]] = ()
    parts: ClassVar[dict[str, tuple[str, ...]]] = {}  # part name -> the params it reads
    headline: ClassVar[tuple[str, str]]  # (arm, metric) a learner predicts before seeing the run
    refine_param: ClassVar[str | None] = None  # the request-budget parameter "refine" scales up
    exercises: ClassVar[tuple[Exercise, ...]] = ()
    profiles: ClassVar[tuple[str, ...]] = ()  # reference latency profiles (data/profiles) the lab reads
    part_cache_size: ClassVar[int] = 64

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

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(str(a) for a in self.arms)

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a == name:
                return a
        if name == "comparison":
            return COMPARISON
        raise KeyError(f"{self.id} has no arm {name!r}")

    def writeup(self) -> dict[str, str]:
        """The lab's write-up (``labs/writeups/qNN.md``) by section ("Arms", claim ids); {} while it has none."""
        path = WRITEUPS / f"{self.id}.md"
        if not path.exists():
            return {}
        sections, name = {}, None
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("## "):
                name = line[3:].strip()
                sections[name] = ""
            elif name is not None:
                sections[name] += line + "\n"
        return {k: v.strip() for k, v in sections.items()}

    # ------------------------------------------------------------ settings
    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ParamError(f"unknown parameter {name!r} for {self.id}; known: "
                         + ", ".join(p.name for p in self.params))

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def settings(self, values: dict | None = None) -> Settings:
        """Fill defaults, validate each value, then the cross-parameter rules; ParamError if refused."""
        full = self.defaults()
        for name, value in (values or {}).items():
            full[name] = self.param(name).validate(value)
        p = Settings(full)
        for rule in self.rules:
            rule.check(p)
        return p

    def validate(self, values: dict) -> dict:
        return dict(self.settings(values))

    def parse(self, pairs: dict[str, str]) -> dict:
        """Validate textual NAME=VALUE settings (command line, URL query), then the rules."""
        values = {name: self.param(name).parse(text) for name, text in pairs.items()}
        self.settings(values)
        return values

    # ------------------------------------------------------------ running
    def simulate(self, seed: int, p: Settings) -> Outcome:
        raise NotImplementedError

    def plots(self, result: Result) -> list:
        """Matplotlib figures for a result (labs override)."""
        return []

    def prepare(self, seed: int = 0) -> None:
        """Build what the default run reads from caches (trained models, attack curves); no-op by default."""

    def part(self, name: str, seed: int, p: Settings, *args):
        """Run the named part (method ``part_<name>``) on the params it declares, cached on exactly those
        (and on ``args``, hashable values the part takes besides its params, such as one replica count).

        The part sees only its declared params, so reading another one fails loudly.
        """
        reads = self.parts[name]
        key = (name, seed, p.pick(reads), *args)
        cache = self.__dict__.setdefault("_part_cache", OrderedDict())
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = getattr(self, f"part_{name}")(seed, Settings(dict(key[2])), *args)
        cache[key] = value
        while len(cache) > self.part_cache_size:
            cache.popitem(last=False)
        return value

    def run(self, seed: int = 0, **params) -> Result:
        seed = check_seed(seed)
        p = self.settings(params)
        t0 = time.perf_counter()
        out = self.simulate(seed, p)
        elapsed = time.perf_counter() - t0
        verdicts = [point_verdict(c, out.metrics, out.intervals, out.reasons) for c in self.question.claims]
        return Result(self.id, seed, dict(p), out.metrics, self.targets, verdicts, Series(out.series), out.intervals,
                      out.notes, out.extras, elapsed, out.reasons, tuple(self.assumptions))

    def check_size(self) -> int:
        """An upper bound on the runs ``check`` makes (sweep points and controls, before memoising)."""
        return 1 + sum(math.prod(len(v) for _, v in c.sweep) + bool(c.control) for c in self.question.claims)

    def check(self, seed: int = 0, progress: Callable[[int], None] | None = None, jobs: int = 1,
              reps: int = 1, task_progress: Callable[[int, int, int], None] | None = None,
              cache: bool | None = None, **params) -> list[Verdict]:
        """Every claim's verdict over its sweep and control, on common random numbers (one seed per replication).

        Runs go through the sweep engine (``labs.sweeps``): ``jobs`` > 1 runs the settings on joblib workers
        (the backend ``joblib.parallel_config`` names), finished runs come from the replication cache
        (``cache=False`` skips it); the verdicts are the same either way. ``reps`` > 1 decides each claim from
        that many replications per setting (their mean and t interval).
        """
        return check_many([self], seed, jobs, reps, task_progress, cache, progress, **params)[0]


def check_many(labs: list, seed: int = 0, jobs: int = 1, reps: int = 1,
               task_progress: Callable[[int, int, int], None] | None = None, cache: bool | None = None,
               progress: Callable[[int], None] | None = None, **params) -> list[list[Verdict]]:
    """``Lab.check`` for several labs whose runs share one pool of workers (both cores busy to the end).

    Every lab's sweep points and controls become engine tasks in one ``run_points`` call; the verdicts are
    the same as checking the labs one by one (same seeds, one setting = one task).
    """
    seed = check_seed(seed)
    if int(reps) < 1:
        raise ParamError(f"reps must be >= 1, got {reps}")
    runners, plans, tasks = [], [], []
    for lab in labs:
        runner = SweepRunner(lab, seed, dict(lab.settings(params)), progress, reps=int(reps), cache=cache)
        todo, mine = runner.plan([{}] + [s for c in lab.question.claims for s in claim_settings(c, runner.base)])
        runners.append(runner)
        plans.append((todo, len(tasks), len(tasks) + len(mine)))
        tasks += mine
    from .sweeps import run_points

    points = run_points(tasks, jobs=jobs, progress=task_progress, cache=cache) if tasks else []
    out = []
    for runner, (todo, a, b) in zip(runners, plans):
        runner.fill(todo, points[a:b])
        out.append([check_claim(c, runner) for c in runner.lab.question.claims])
    return out
