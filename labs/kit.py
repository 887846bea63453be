"""Parameters and rules that many labs share: request budget, arrival rate, an outage window.

A lab sizes its default run by a request budget (DESIGN.md: about 30k requests),
so the simulated window is ``requests / rate_rps``; an outage must fit inside it.
These helpers return ``Param``s and ``Rule``s with one wording, so every lab
refuses the same mistake with the same line.
"""
from __future__ import annotations

from .params import Param, Rule, Settings, fmt_value


def request_budget(default: int = 30_000, low: int = 1_000, high: int = 400_000) -> Param:
    return Param("requests", default, low, high, unit="requests",
                 help="request budget per arm; the simulated window is requests / rate_rps")


def arrival_rate(default: float, low: float, high: float, key: bool = True) -> Param:
    return Param("rate_rps", default, low, high, unit="req/s", help="Poisson arrival rate of callers", key=key)


def window_s(p: Settings) -> float:
    return p.requests / p.rate_rps


def outage_params(start: float = 60.0, duration: float = 120.0, modes: tuple[str, ...] = ("hang", "error", "none"),
                  default_mode: str = "hang") -> tuple[Param, ...]:
    """``outage_mode`` (``none`` is the control: the same window, nothing fails), start and length."""
    return (
        Param("outage_mode", default_mode, choices=modes, key=True,
              help="hang: no answer until the caller's timeout; error: fails fast; none: no outage (control)"),
        Param("outage_start_s", start, 0.0, 1e6, unit="s", help="when the outage begins"),
        Param("outage_duration_s", duration, 1.0, 1e6, unit="s", help="how long the outage lasts"),
    )


def _start_inside(p: Settings) -> str | None:
    w = window_s(p)
    if p.outage_start_s < w:
        return None
    return f"a time in [0, {fmt_value(w)}) s, inside the window requests / rate_rps = {fmt_value(w)} s"


def _end_inside(p: Settings) -> str | None:
    room = window_s(p) - p.outage_start_s
    if room <= 0 or p.outage_duration_s <= room:
        return None
    return (f"a length in [1, {fmt_value(room)}] s so the outage ends inside the window "
            f"(requests / rate_rps = {fmt_value(window_s(p))} s); raise requests for longer outages")


OUTAGE_RULES = (
    Rule("outage_start_s", ("outage_start_s", "requests", "rate_rps"), _start_inside),
    Rule("outage_duration_s", ("outage_duration_s", "outage_start_s", "requests", "rate_rps"), _end_inside),
)
