"""``check_lab(lab)``: the common checks every lab must pass, callable by its author.

Like scikit-learn's ``check_estimator``: one function runs the contract's checks on
a lab and returns the problems it found (an empty list is a pass). The common
test calls it for every registered lab. It runs the default setting twice (for
determinism) and validates, without running, every sweep point, control and
exercise setting.
"""
from __future__ import annotations

import itertools
import math
import re

from .params import ParamError

_SNAKE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


def _refusal_ok(e: ParamError) -> bool:
    text = str(e)
    return "\n" not in text and text.startswith(("parameter ", "unknown parameter"))


def _check_setting(lab, where: str, changes: dict, problems: list, skippable: bool) -> None:
    """A setting's values must each be valid; a cross-parameter rule may refuse it only if skippable."""
    for name, value in changes.items():
        try:
            lab.param(name).validate(value)
        except ParamError as e:
            problems.append(f"{where}: {e}")
            return
    try:
        lab.settings(changes)
    except ParamError as e:
        if not skippable:
            problems.append(f"{where}: refused by a rule: {e}")
        elif not _refusal_ok(e):
            problems.append(f"{where}: the refusal is not one line naming a parameter: {e!r}")


def check_lab(lab, determinism: bool = True) -> list[str]:
    """Every contract problem of ``lab`` as one line each; [] when it passes."""
    problems: list[str] = []
    names = {p.name for p in lab.params}
    for p in lab.params:
        if not _SNAKE.match(p.name):
            problems.append(f"param {p.name!r} is not snake_case")
        if "\n" in p.help or not p.help:
            problems.append(f"param {p.name}: help must be one non-empty line")
    try:
        lab.settings()
    except ParamError as e:
        return problems + [f"defaults are refused: {e}"]

    q = lab.question
    for c in q.claims:
        if c.evidence is None:
            problems.append(f"{c.id}: no evidence declared (measured, simulated, assumed or setting)")
        for name in c.assumed:
            if name not in names and not any(name in a for a in lab.assumptions):
                problems.append(f"{c.id}: assumed input {name!r} is neither a parameter nor named in assumptions")
        axes = [(n, list(v)) for n, v in c.sweep]
        for n, _ in axes:
            if n not in names:
                problems.append(f"{c.id}: sweeps unknown parameter {n!r}")
        if all(n in names for n, _ in axes):
            for combo in itertools.product(*[v for _, v in axes]):
                _check_setting(lab, f"{c.id} sweep point {dict(zip([n for n, _ in axes], combo))}",
                               dict(zip([n for n, _ in axes], combo)), problems, skippable=True)
        if c.control:
            _check_setting(lab, f"{c.id} control", dict(c.control), problems, skippable=False)
    for k, ex in enumerate(lab.exercises):
        _check_setting(lab, f"exercise {k + 1}", ex.changes, problems, skippable=False)
        if not ex.why.strip():
            problems.append(f"exercise {k + 1} has no `why`: the reason shown once its answer is revealed")

    result = lab.run(0)
    declared = set(lab.arm_names) - {"comparison"}  # a lab may name its comparison arm, or leave it implicit
    produced = set(result.metrics) - {"comparison"}
    if produced != declared:
        problems.append(f"arms produced {sorted(produced)} differ from arms declared {sorted(declared)}")
    for c in q.claims:
        if c.metric not in result.metrics.get(c.arm, {}):
            problems.append(f"{c.id}: metric {c.arm}.{c.metric} is not produced")
    watched = [("headline", lab.headline)] + [(f"exercise {k + 1}", ex.watch) for k, ex in enumerate(lab.exercises)]
    for where, (arm, metric) in watched:
        if metric not in result.metrics.get(arm, {}):
            problems.append(f"{where} watches {arm}.{metric}, which the lab does not produce")
    for arm, values in result.metrics.items():
        for key, v in values.items():
            if not (isinstance(v, float) and math.isfinite(v)) and not result.reasons.get(arm, {}).get(key):
                problems.append(f"{arm}.{key} is {v!r} at the defaults with no reason recorded")
    if determinism:
        again = lab.run(0).to_dict()
        first = result.to_dict()
        first.pop("elapsed_s"), again.pop("elapsed_s")
        if first != again:
            problems.append("two runs with seed 0 differ")
    return problems
