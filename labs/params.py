"""Parameters, typed settings and cross-parameter rules: every refusal is made here, once.

A lab declares ``Param``s and ``Rule``s; ``Lab.settings`` turns raw values from any
face (command line, URL, widget, notebook) into a frozen ``Settings`` read as
attributes (``p.client_timeout_s``), or raises ``ParamError`` with one line naming
the parameter and what it accepts. Text input is ASCII only: digits of other
scripts, non-finite numbers and values out of range are refused alike.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np


class ParamError(ValueError):
    """A value a lab refuses; the message is one line naming the parameter and its range."""


def fmt_value(x) -> str:
    """A setting as people type it: 30, 0.5, 1e+06, hang."""
    if isinstance(x, (float, np.floating)):
        return f"{float(x):g}"
    return str(x)


@dataclass(frozen=True)
class Param:
    """One tunable input: default, allowed range or choices, unit, one-line help.

    ``key=True`` marks the few knobs that sweeps, exercises and the explorer's
    first screen show; the others sit behind "more settings".
    """

    name: str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    unit: str = ""
    help: str = ""
    step: float | None = None
    key: bool = False

    def __post_init__(self):
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        self.validate(self.default)  # an invalid default is a bug: fail at import

    @property
    def kind(self) -> type:
        return type(self.default)

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.kind is bool:
            return "true or false"
        lo = "-inf" if self.low is None else fmt_value(self.low)
        hi = "inf" if self.high is None else fmt_value(self.high)
        kind = "an integer" if self.kind is int else "a number"
        return f"{kind} in [{lo}, {hi}]" + (f" {self.unit}" if self.unit else "")

    def refuse(self, value, expected: str | None = None) -> ParamError:
        shown = fmt_value(value) if isinstance(value, (int, float, np.number)) else repr(value)
        return ParamError(f"parameter {self.name}: {shown} is not allowed; expected {expected or self.allowed()}")

    def validate(self, value):
        """Coerce ``value`` to the parameter's type and check it; raise ParamError if not allowed."""
        if self.choices is not None:
            if isinstance(value, (bool, np.bool_)) != isinstance(self.default, bool) or value not in self.choices:
                raise self.refuse(value)
            return self.choices[self.choices.index(value)]
        if self.kind is bool:
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise self.refuse(value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self.refuse(value)
        if isinstance(value, (float, np.floating)) and not math.isfinite(value):
            raise self.refuse(value)
        if self.kind is int:
            if float(value) != int(value):
                raise self.refuse(value)
            value = int(value)
        else:
            value = float(value)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise self.refuse(value)
        return value

    def parse(self, text: str):
        """Read a value from text (command line, URL query) and validate it."""
        text = str(text).strip()
        if not text.isascii():
            raise self.refuse(text, f"{self.allowed()}, written with ASCII characters")
        if self.choices is not None:
            match = [c for c in self.choices if str(c).lower() == text.lower()]
            return self.validate(match[0]) if match else _raise(self.refuse(text))
        if self.kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise self.refuse(text)
            return lowered in ("true", "1", "yes")
        try:
            number = float(text)
        except ValueError:
            raise self.refuse(text) from None
        if self.kind is int and math.isfinite(number) and number.is_integer():
            number = int(number)
        return self.validate(number)

    def to_dict(self) -> dict:
        d = {"name": self.name, "default": self.default, "unit": self.unit, "help": self.help,
             "type": self.kind.__name__, "key": self.key}
        if self.choices is not None:
            d["choices"] = list(self.choices)
        else:
            d["low"], d["high"] = self.low, self.high
        return d


def _raise(exc: Exception):
    raise exc


SEED = Param("seed", 0, 0, 2**32 - 1, help="random seed; the same seed gives the same run")


def check_seed(seed) -> int:
    """The one seed check (text goes through ``SEED.parse``); labs derive library seeds with SeedSequence."""
    return SEED.validate(seed)


_QID_TEXT = re.compile(r"^q?0*([1-9]|[12][0-9]|30)$", re.ASCII)


def question_id(text) -> str:
    """'q8', 'Q08', '8' -> 'q08'; anything else (other scripts' digits included) -> ParamError."""
    m = _QID_TEXT.match(str(text).strip().lower())
    if not m:
        raise ParamError(f"lab {str(text)!r} is not a question id; expected q01 ... q30")
    return "q%02d" % int(m.group(1))


class Settings(Mapping):
    """A validated, frozen parameter setting, read as attributes: ``p.client_timeout_s``.

    Reading a name the lab did not declare raises AttributeError, so a typo in a lab
    fails the first time its default runs (the common test runs every default).
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}; declared: {', '.join(self._values)}") from None

    def __setattr__(self, name, value):
        raise AttributeError("Settings are frozen; use replace(**changes)")

    def __getitem__(self, name: str):
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"

    def __hash__(self):
        return hash(tuple(sorted(self._values.items())))

    def replace(self, **changes) -> "Settings":
        return Settings({**self._values, **changes})

    def pick(self, names) -> tuple:
        """The values of ``names`` as a hashable key (a part's cache key)."""
        return tuple((n, self._values[n]) for n in names)


@dataclass(frozen=True)
class Rule:
    """A cross-parameter rule, checked after each value is valid and before any simulation.

    ``expect`` reads the settings and returns None when they are allowed, or the text
    of what ``param`` would have to be (e.g. "< 250 s, inside the window requests /
    rate_rps"). The refusal names ``param``, its value and the others the rule reads.
    """

    param: str
    reads: tuple[str, ...]
    expect: Callable[[Settings], str | None]

    def check(self, p: Settings) -> None:
        text = self.expect(p)
        if text:
            others = [n for n in self.reads if n != self.param]
            given = f" with {', '.join(f'{n}={fmt_value(p[n])}' for n in others)}" if others else ""
            raise ParamError(f"parameter {self.param}: {fmt_value(p[self.param])} is not allowed{given}; "
                             f"expected {text}")
