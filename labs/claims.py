"""Verdicts: one evaluator for every claim, at a point and over a region of settings.

At one setting a claim ``holds`` or ``fails`` when its metric's 95% interval lies
wholly on one side of the target, is ``inconclusive`` when the interval straddles
it (with the sample growth that would decide it), and ``not_measured`` when the
metric does not exist there (with the lab's reason). Over a sweep of one or two
parameters the cells combine into ``holds``, ``fails`` or ``conditional`` with the
region where it holds, as text and as grid data. A control setting, where the
effect must vanish, is run too; an effect that survives it is flagged.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .catalog import ClaimSpec
from .measure import fmt_number
from .params import ParamError, fmt_value

VERDICTS = ("holds", "fails", "conditional", "inconclusive", "not_measured")


@dataclass
class Verdict:
    id: str
    text: str
    verdict: str
    evidence: str
    detail: str
    metric: str
    arm: str
    measured: float | None = None
    interval: tuple[float, float] | None = None
    region: str | None = None
    grid: list[dict] | None = None
    control: dict | None = None

    def to_dict(self, full: bool = False) -> dict:
        d = {"id": self.id, "text": self.text, "verdict": self.verdict, "evidence": self.evidence,
             "region": self.region, "detail": self.detail}
        if full:
            d["sweep"] = self.grid
            d["control"] = self.control
        return d


def _bound_check(claim: ClaimSpec, x: float) -> bool:
    return bool(claim.check(x))


def _evidence_note(claim: ClaimSpec) -> str:
    if claim.evidence == "assumed":
        return f"; decided by the assumed input {', '.join(claim.assumed)}, not by the model"
    if claim.evidence == "setting":
        return "; a configuration echoed back, not a finding"
    return ""


def _decide_with(claim: ClaimSpec, v: float, lo: float, hi: float, reps: int | None = None) -> tuple[str, str]:
    """holds/fails/inconclusive from an interval, and what would decide an inconclusive one (with ``reps``:
    the interval is a t interval across that many replications, so say how many would decide it)."""
    if claim.op == "between":
        a, b = claim.value
        if a <= lo and hi <= b:
            return "holds", ""
        if hi < a or lo > b:
            return "fails", ""
        edge = a if abs(v - a) < abs(v - b) else b
    else:
        at_lo, at_hi = _bound_check(claim, lo), _bound_check(claim, hi)
        if at_lo and at_hi:
            return "holds", ""
        if not at_lo and not at_hi:
            return "fails", ""
        edge = claim.value
    half, gap = (hi - lo) / 2, abs(v - edge)
    if gap == 0:
        return "inconclusive", "the estimate sits on the target; no sample size separates them here"
    factor = max(2, math.ceil((half / gap) ** 2))
    if reps:
        return "inconclusive", f"about {factor * reps} replications (not {reps}) would decide it"
    return "inconclusive", f"about {factor}× more requests or replications would decide it"


def point_verdict(claim: ClaimSpec, metrics: dict, intervals: dict | None = None,
                  reasons: dict | None = None, reps: int | None = None) -> Verdict:
    """The verdict of ``claim`` at one run's metrics (its interval decides when it has one).

    ``reps``: the metrics are means over that many replications and the intervals t intervals across them.
    """
    arm_metrics = metrics.get(claim.arm, {})
    if claim.metric not in arm_metrics:
        raise KeyError(f"{claim.id}: the lab did not produce {claim.arm}.{claim.metric}")
    v = arm_metrics[claim.metric]
    evidence = claim.evidence or "simulated"
    what = f"{claim.arm} {claim.metric}"
    if v is None or not math.isfinite(float(v)):
        why = (reasons or {}).get(claim.arm, {}).get(claim.metric) or "the metric does not exist at these settings"
        return Verdict(claim.id, claim.text, "not_measured", evidence, f"{what} not measured: {why}",
                       claim.metric, claim.arm, None)
    v = float(v)
    iv = (intervals or {}).get(claim.arm, {}).get(claim.metric)
    if iv is not None and all(math.isfinite(b) for b in iv):
        verdict, more = _decide_with(claim, v, *iv, reps=reps)
        over = f", mean of {reps} replications" if reps else ""
        shown = f"{fmt_number(v)} (95% CI {fmt_number(iv[0])}–{fmt_number(iv[1])}{over})"
    else:
        iv = None
        verdict, more = ("holds" if claim.check(v) else "fails"), ""
        shown = fmt_number(v)
    detail = f"measured {what} = {shown} (claim: {claim.reading})" + (f"; {more}" if more else "")
    return Verdict(claim.id, claim.text, verdict, evidence, detail + _evidence_note(claim), claim.metric,
                   claim.arm, v, iv)


# ---------------------------------------------------------------- regions
def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _one_param_region(name: str, values: list, good: list) -> str:
    """'client_timeout_s ≤ 5', '≥ 10', 'in [5, 10]', or the values themselves."""
    if len(good) == len(values):
        return f"any {name} tried"
    if all(_is_num(v) for v in values):
        idx = [values.index(g) for g in good]
        if idx == list(range(idx[0], idx[-1] + 1)):
            lo, hi = fmt_value(good[0]), fmt_value(good[-1])
            if idx[0] == 0 and len(good) > 1:
                return f"{name} ≤ {hi}"
            if idx[-1] == len(values) - 1 and len(good) > 1:
                return f"{name} ≥ {lo}"
            return f"{name} = {lo}" if len(good) == 1 else f"{name} in [{lo}, {hi}]"
    if len(good) == 1:
        return f"{name} = {fmt_value(good[0])}"
    return f"{name} in {{{', '.join(fmt_value(g) for g in good)}}}"


def region_text(axes: list[tuple[str, list]], cells: list[dict]) -> str:
    """Where a claim holds, in words, from grid cells ``{param: value, ..., "verdict": ...}``."""
    (n1, v1) = axes[0]
    if all(c["verdict"] == "holds" for c in cells):
        return "every setting tried"
    if len(axes) == 1:
        good = [v for v in v1 if any(c[n1] == v and c["verdict"] == "holds" for c in cells)]
        return _one_param_region(n1, v1, good)
    (n2, v2) = axes[1]
    parts = []
    for w in v2:
        good = [v for v in v1 if any(c[n1] == v and c[n2] == w and c["verdict"] == "holds" for c in cells)]
        if good:
            parts.append((w, _one_param_region(n1, v1, good)))
    if len(parts) == len(v2) and len({p for _, p in parts}) == 1:
        return parts[0][1]
    return "; or ".join(f"{n2} = {fmt_value(w)} and {p}" if not p.startswith("any ") else f"{n2} = {fmt_value(w)}"
                        for w, p in parts)


@dataclass
class SweepRunner:
    """Runs a lab at settings around a base, memoised, skipping settings the lab's rules forbid.

    Runs go through the sweep engine (``labs.sweeps.run_points``): the replication cache, the joblib backend
    in force and, with ``reps`` > 1, that many replications per setting (seeds from ``check_seeds``), whose
    means and t intervals the verdicts read. ``task_progress(done, total, cached)`` follows the engine's tasks;
    ``progress(n)`` the number of settings done (as before).
    """

    lab: Any
    seed: int
    base: dict
    progress: Callable[[int], None] | None = None
    memo: dict = field(default_factory=dict)
    reps: int = 1
    task_progress: Callable[[int, int, int], None] | None = None
    cache: bool | None = None

    def prefetch(self, changes_list: list[dict], jobs: int = 1) -> None:
        """Run many settings at once on joblib workers (same seeds: identical to running them one by one)."""
        from .sweeps import run_points

        todo, tasks = self.plan(changes_list)
        points = run_points(tasks, jobs=jobs, progress=self.task_progress, cache=self.cache) if tasks else []
        self.fill(todo, points)

    def plan(self, changes_list: list[dict]) -> tuple[list[tuple[tuple, dict]], list]:
        """The settings not yet run (refused ones are memoised with their reason) and their engine tasks."""
        from .sweeps import check_seeds, make_task

        todo, seen = [], set()
        for changes in changes_list:
            setting = {**self.base, **changes}
            key = tuple(sorted(setting.items()))
            if key in self.memo or key in seen:
                continue
            try:
                self.lab.settings(setting)
            except ParamError as e:
                self.memo[key] = (None, str(e))
                continue
            seen.add(key)
            todo.append((key, setting))
        seeds = check_seeds(self.lab.id, self.seed, self.base, self.reps)
        return todo, [make_task(self.lab, s, sd, r) for _, s in todo for r, sd in enumerate(seeds)]

    def fill(self, todo: list[tuple[tuple, dict]], points: list) -> None:
        """Memoise the results of ``plan``'s settings from their tasks' points (``reps`` per setting, in order)."""
        from .sweeps import replicate

        n = self.reps
        for i, (key, setting) in enumerate(todo):
            self.memo[key] = (self._result(setting, replicate(points[i * n:(i + 1) * n])), None)
            if self.progress:
                self.progress(len(self.memo))

    def _result(self, setting: dict, point):
        """A Result without series (what verdicts read) from a replicated point."""
        from .contract import Result

        reps = self.reps if self.reps > 1 else None
        verdicts = [point_verdict(c, point.metrics, point.intervals, point.reasons, reps=reps)
                    for c in self.lab.question.claims]
        return Result(self.lab.id, self.seed, dict(self.lab.settings(setting)), point.metrics, self.lab.targets,
                      verdicts, {}, point.intervals, [], {}, point.elapsed_s, point.reasons,
                      tuple(self.lab.assumptions))

    def at(self, changes: dict):
        """(result, None) or (None, reason) when a cross-parameter rule forbids the setting."""
        setting = {**self.base, **changes}
        key = tuple(sorted(setting.items()))
        if key not in self.memo:
            self.prefetch([changes])
        return self.memo[key]


def claim_settings(claim: ClaimSpec, base: dict) -> list[dict]:
    """Every setting ``check_claim`` will ask for: the sweep grid and the control."""
    axes = _axes(claim, base)
    out = [dict(zip([a for a, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]
    if claim.control:
        out.append(dict(claim.control))
    return out


def _axes(claim: ClaimSpec, base: dict) -> list[tuple[str, list]]:
    axes = []
    for name, values in claim.sweep:
        vals = list(values)
        if len(claim.sweep) == 1 and base[name] not in vals:
            vals.append(base[name])
        if all(_is_num(v) for v in vals):
            vals.sort()
        axes.append((name, vals))
    return axes


def _cell_verdict(claim: ClaimSpec, runner: SweepRunner, changes: dict) -> dict:
    res, why = runner.at(changes)
    cell = {k: v for k, v in changes.items()}
    if res is None:
        return {**cell, "verdict": "skipped", "measured": None, "low": None, "high": None, "reason": why}
    vd = next(v for v in res.claims if v.id == claim.id)
    lo, hi = vd.interval or (None, None)
    reason = vd.detail if vd.verdict in ("not_measured", "inconclusive") else None
    return {**cell, "verdict": vd.verdict, "measured": vd.measured, "low": lo, "high": hi, "reason": reason}


def check_claim(claim: ClaimSpec, runner: SweepRunner) -> Verdict:
    """The claim's verdict over its sweep (if any) and its control (if any)."""
    here_res, _ = runner.at({})
    here = next(v for v in here_res.claims if v.id == claim.id)
    if claim.sweep:
        axes = _axes(claim, runner.base)
        cells = [_cell_verdict(claim, runner, dict(zip([a for a, _ in axes], combo)))
                 for combo in itertools.product(*[v for _, v in axes])]
        counts = {k: sum(c["verdict"] == k for c in cells) for k in ("holds", "fails", "inconclusive", "not_measured")}
        if counts["holds"] and (counts["fails"] or counts["inconclusive"] or counts["not_measured"]):
            verdict, region = "conditional", "holds only when " + region_text(axes, cells)
        elif counts["holds"]:
            verdict, region = "holds", "holds for " + region_text(axes, cells)
        elif counts["fails"]:
            verdict, region = "fails", "fails everywhere tried"
        elif counts["inconclusive"]:
            verdict, region = "inconclusive", "undecided everywhere tried"
        else:
            verdict, region = "not_measured", "not measured anywhere tried"
        tried = "; ".join(_cell_text(c, [a for a, _ in axes]) for c in cells)
        detail = f"{region} (claim: {claim.reading}; {claim.arm} {claim.metric}: {tried})" + _evidence_note(claim)
        out = Verdict(claim.id, claim.text, verdict, here.evidence, detail, claim.metric, claim.arm,
                      here.measured, here.interval, region, cells)
    else:
        out = Verdict(**{**here.__dict__, "detail": here.detail + "; no sweep: verdict at these settings only"})
    if claim.control:
        out.control = _control(claim, runner, out)
    return out


def _cell_text(c: dict, names: list[str]) -> str:
    at = ", ".join(f"{n}={fmt_value(c[n])}" for n in names)
    if c["verdict"] == "skipped":
        return f"{at}: skipped ({c['reason']})"
    return f"{at}: {fmt_number(c['measured'])}"


def _control(claim: ClaimSpec, runner: SweepRunner, out: Verdict) -> dict:
    setting = dict(claim.control)
    cell = _cell_verdict(claim, runner, setting)
    if cell["verdict"] == "skipped":
        return {"setting": setting, "verdict": "skipped", "vanishes": None, "reason": cell["reason"]}
    vanishes = cell["verdict"] != "holds"
    shown = ", ".join(f"{k}={fmt_value(v)}" for k, v in setting.items())
    if not vanishes and out.verdict in ("holds", "conditional"):
        out.detail += (f"; WARNING: the effect survives its control ({shown}), so it may come from another "
                       f"mechanism than the pattern")
    return {"setting": setting, "verdict": cell["verdict"], "measured": cell["measured"], "vanishes": vanishes}
