"""Random valid settings for a lab (Hypothesis), and the check every run must pass.

Every bound and every choice is drawn often (``st.sampled_from``), with uniform
draws in between; a run must either return with every metric finite or recorded
missing with a reason, or refuse with a one-line ParamError naming a parameter.
"""
from __future__ import annotations

import math

from hypothesis import strategies as st

from labs.contract import ParamError


def param_strategy(p, low=None, high=None):
    """Values of one Param: its bounds (or the given narrower ones) often, anything in between otherwise."""
    if p.choices is not None:
        return st.sampled_from(p.choices)
    if p.kind is bool:
        return st.booleans()
    lo = p.low if low is None else low
    hi = p.high if high is None else high
    if p.kind is int:
        return st.one_of(st.sampled_from((lo, hi)), st.integers(lo, hi))
    return st.one_of(st.sampled_from((lo, hi)), st.floats(lo, hi, allow_nan=False, allow_infinity=False))


def settings_strategy(lab, ranges: dict | None = None, fixed: dict | None = None, repair=None):
    """A dict of every parameter: ``ranges`` narrows some (name -> (low, high)), ``fixed`` pins some;
    all-min and all-max settings are drawn too. ``repair(values)`` may move a few values so that
    most draws pass the lab's rules (otherwise independent draws are mostly refused)."""
    ranges, fixed = ranges or {}, fixed or {}
    repair = repair or (lambda d: d)
    names = [p.name for p in lab.params if p.name not in fixed]

    def bound(p, which):
        if p.choices is not None:
            return p.choices[0 if which == 0 else -1]
        return ranges.get(p.name, (p.low, p.high))[which]

    each = {p.name: param_strategy(p, *ranges.get(p.name, (None, None))) for p in lab.params if p.name in names}
    extremes = [st.just({p.name: bound(p, w) for p in lab.params if p.name in names}) for w in (0, 1)]
    return st.one_of(*extremes, st.fixed_dictionaries(each)).map(lambda d: repair({**d, **fixed}))


def check_run(lab, values: dict, seed: int = 0):
    """Run ``lab``; return the Result, or None if refused with a proper one-line ParamError."""
    try:
        r = lab.run(seed, **values)
    except ParamError as err:
        text = str(err)
        assert "\n" not in text, text
        assert any(p.name in text for p in lab.params), text
        return None
    for arm, metrics in r.metrics.items():
        for key, v in metrics.items():
            if not math.isfinite(v):
                why = r.reasons.get(arm, {}).get(key)
                assert why and "\n" not in why, f"{arm} {key} is {v} without a reason"
    return r
