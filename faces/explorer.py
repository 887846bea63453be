"""Helpers for the Streamlit explorer (``app.py``) that need no Streamlit.

The explorer is a renderer: metrics, intervals and verdicts come from
``Lab.run``/``Lab.check``. This module only turns the contract's objects into
what a page shows: which widget a ``Param`` becomes, which URL settings are
refused (with the contract's own message), how a number and its confidence
band read, how far a learner's prediction was from the run, and the home
page's topics x questions map. Everything here is a pure function, so it is
tested without a browser.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from labs.catalog import Catalog, Question
from labs.claims import VERDICTS, Verdict
from labs.measure import fmt_number
from labs.params import SEED, Param, ParamError, fmt_value

__all__ = ["SEED", "fmt_number", "VERDICTS"]
# Material icons ship with Streamlit's frontend, so they render without an emoji font (headless chromium has none).
VERDICT_ICON = {"holds": ":material/check_circle:", "fails": ":material/cancel:",
                "conditional": ":material/contrast:", "inconclusive": ":material/help:",
                "not_measured": ":material/block:"}
VERDICT_COLOUR = {"holds": "green", "fails": "red", "conditional": "orange", "inconclusive": "violet",
                  "not_measured": "gray"}
EVIDENCE_TEXT = {
    "measured": "measured: real code or a real model ran",
    "simulated": "simulated: the model's dynamics decided it",
    "assumed": "assumed: an input decided it",
    "setting": "setting: a configuration echoed back, not a finding",
}
DIFFICULTY_ICON = {"foundational": "●○○", "intermediate": "●●○", "advanced": "●●●"}
_MAX_SLIDER_STEPS = 2000  # more positions than this and a slider is too coarse to aim with
_MAX_SLIDER_RATIO = 1000  # high / low beyond this spans decades: a typed number reads better


# --------------------------------------------------------------------------- widgets
@dataclass(frozen=True)
class WidgetSpec:
    """How one Param is shown: kind is slider, number, select or checkbox."""

    kind: str
    label: str
    help: str
    value: Any
    min: float | int | None = None
    max: float | int | None = None
    step: float | int | None = None
    format: str | None = None
    options: tuple = ()


def _nice_step(p: Param) -> float:
    """A float step fine enough for the range, the low bound and the default (a power of ten)."""
    candidates = []
    if p.low is not None and p.high is not None and p.high > p.low:
        candidates.append(10 ** math.floor(math.log10((p.high - p.low) / 100)))
    if p.low not in (None, 0):
        candidates.append(10 ** math.floor(math.log10(abs(p.low))))
    if p.default != 0:
        candidates.append(10 ** math.floor(math.log10(abs(p.default))) / 10)
    return min(candidates) if candidates else 0.01


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step))) if step < 1 else 0


def widget_spec(p: Param) -> WidgetSpec:
    """The widget a parameter becomes, with its range and step, all taken from the Param."""
    unit = f" ({p.unit})" if p.unit and p.unit != p.name else ""
    label = f"{p.name}{unit}"
    help_text = f"{p.help}. Allowed: {p.allowed()}." if p.help else f"Allowed: {p.allowed()}."
    if p.choices is not None:
        return WidgetSpec("select", label, help_text, p.default, options=p.choices)
    if p.kind is bool:
        return WidgetSpec("checkbox", label, help_text, p.default)
    if p.kind is int:
        step = int(p.step) if p.step else 1
        fmt = None
    else:
        step = float(p.step) if p.step else float(_nice_step(p))
        fmt = f"%.{_decimals(step)}f"
    lo, hi = p.low, p.high
    kind = "number"
    if lo is not None and hi is not None:
        steps = (hi - lo) / step
        ratio = hi / max(lo, step) if lo >= 0 else 0
        if steps <= _MAX_SLIDER_STEPS and ratio <= _MAX_SLIDER_RATIO:
            kind = "slider"
    cast = int if p.kind is int else float
    return WidgetSpec(kind, label, help_text, cast(p.default),
                      min=None if lo is None else cast(lo), max=None if hi is None else cast(hi),
                      step=step, format=fmt)


def refined_value(p: Param, current) -> int:
    """The request budget of a refine run: four times the current one, never above the Param's high."""
    value = int(current) * 4
    if p.high is not None:
        value = min(value, int(p.high))
    return value


# --------------------------------------------------------------------------- URL settings
@dataclass(frozen=True)
class UrlReading:
    """What a page's query string asks for: accepted values and one message per refused setting."""

    values: dict
    problems: dict  # name -> message


def read_query(params: Sequence[Param], query: Mapping[str, str], extra: Sequence[Param] = (SEED,)) -> UrlReading:
    """Validate URL settings with the contract's ``Param.parse``.

    A refused value falls back to the parameter's default; an unknown name is
    reported and ignored. Messages name the parameter and what it accepts.
    """
    known = {p.name: p for p in (*params, *extra)}
    values, problems = {}, {}
    for name, text in query.items():
        p = known.get(name)
        if p is None:
            problems[name] = (f"The link sets `{name}`, which this lab does not have, so it is ignored. "
                              f"Settings here: {', '.join(f'`{n}`' for n in known)}.")
            continue
        try:
            values[name] = p.parse(text)
        except ParamError as e:
            values[name] = p.default
            problems[name] = f"{e}. Using the default, {p.default}, instead."
    return UrlReading(values, problems)


def params_key(values: Mapping[str, Any]) -> tuple:
    """A hashable, order-free key for a parameter setting (for caches and session state)."""
    return tuple(sorted(values.items()))


def query_string(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """The query string that reproduces a setting: only values that differ from the default."""
    parts = [f"{k}={_url_text(v)}" for k, v in values.items() if defaults.get(k) != v]
    return "?" + "&".join(parts) if parts else ""


def _url_text(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# --------------------------------------------------------------------------- numbers
def fmt_with_ci(v, interval: tuple | None, unit: str = "") -> str:
    """'312 ms (95% CI 280–350)', or just the value when the run has no interval for it."""
    text = fmt_number(v, unit)
    if interval is None or text == "n/a":
        return text
    lo, hi = interval
    if lo is None or hi is None or not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        return text
    return f"{text} (95% CI {fmt_number(lo)}–{fmt_number(hi)})"


def is_percentile(metric_key: str) -> bool:
    """p50_ms, p99_open_ms, ...: metrics that deserve a confidence band."""
    head = metric_key.split("_", 1)[0]
    return len(head) > 1 and head[0] == "p" and head[1:].isdigit()


def metric_unit(q: Question, key: str) -> str:
    """A metric's unit: the catalogue's when it lists the metric, else read off the key's suffix."""
    try:
        return q.metric(key).unit
    except KeyError:
        return unit_from_key(key)


def unit_from_key(metric_key: str) -> str:
    """A unit read off a metric key's suffix (p99_ms -> ms) for metrics outside the catalogue."""
    for suffix, unit in (("_ms", "ms"), ("_s", "s"), ("_pct", "%"), ("_rps", "req/s"), ("_x", "×")):
        if metric_key.endswith(suffix):
            return unit
    return ""


def met_text(met) -> str:
    return {True: "met", False: "not met"}.get(met, "no numeric target")


def metric_rows(table: pd.DataFrame, units: Mapping[str, str]) -> pd.DataFrame:
    """The contract's metric table made readable: value with its band next to the target."""
    rows = []
    for r in table.itertuples(index=False):
        iv = None if pd.isna(r.ci_low) or pd.isna(r.ci_high) else (r.ci_low, r.ci_high)
        shown = fmt_with_ci(r.measured, iv, units.get(r.key, ""))
        if iv is None and is_percentile(r.key) and shown != "n/a":
            shown += " (no CI: too few requests)"
        rows.append({"metric": r.metric, "arm": r.arm, "measured": shown,
                     "target": f"{r.target} ({met_text(r.met)})" if r.target else met_text(r.met)})
    return pd.DataFrame(rows, columns=["metric", "arm", "measured", "target"])  # narrow enough for a projector


_KEY_WORDS = {"pct": "%", "x": "×", "ms": "ms", "s": "s", "min": "min", "rps": "req/s", "eps": "events/s"}


def plain_name(metric_key: str) -> str:
    """A metric key read as words for people: ``throughput_gain_x`` -> "throughput gain", ``p99_ms`` -> "P99"."""
    words = metric_key.split("_")
    if len(words) > 1 and words[-1] in _KEY_WORDS:
        words = words[:-1]
    words = [w.upper() if len(w) > 1 and w[0] == "p" and w[1:].isdigit() else w for w in words]
    return " ".join(words)


def all_measurements(metrics: Mapping[str, Mapping[str, float]],
                     intervals: Mapping[str, Mapping[str, tuple]]) -> pd.DataFrame:
    """Every number a run measured, per arm, with its interval when the run gives one."""
    rows = []
    for arm, values in metrics.items():
        for key, v in values.items():
            rows.append({"arm": arm, "metric": key, "value": fmt_with_ci(v, intervals.get(arm, {}).get(key))})
    return pd.DataFrame(rows, columns=["arm", "metric", "value"])


# --------------------------------------------------------------------------- predict first
@dataclass(frozen=True)
class PredictionCheck:
    predicted: float
    measured: float
    difference: float  # predicted - measured
    relative: float | None  # difference / |measured|; None when measured is 0 or not finite
    inside_ci: bool | None  # None when the run has no interval for the headline
    interval: tuple | None = None

    def sentence(self, unit: str = "") -> str:
        if not math.isfinite(self.measured):
            return f"You predicted {fmt_number(self.predicted, unit)}; this run has no value for it."
        direction = "high" if self.difference > 0 else "low"
        p, m = self.predicted, self.measured
        if self.difference == 0:
            off = "exactly right"
        elif p > 0 and m > 0:
            factor = max(p / m, m / p)
            off = (f"{factor:.3g}× too {direction}" if factor >= 1.1 else
                   f"within {max(1, round(100 * (factor - 1)))}% ({direction})")
        else:
            off = f"{fmt_number(abs(self.difference), unit)} too {direction}"
        text = (f"You predicted {fmt_number(p, unit)}; the run measured {fmt_number(m, unit)}: {off}.")
        if self.interval is not None:
            lo, hi = self.interval
            where = "inside" if self.inside_ci else "outside"
            text += (f" The 95% interval is {fmt_number(lo)}–{fmt_number(hi, unit)}; your guess is {where} it"
                     + (": as good as this run can tell." if self.inside_ci else "."))
        return text


def check_prediction(predicted: float, measured: float, interval: tuple | None) -> PredictionCheck:
    predicted, measured = float(predicted), float(measured)
    diff = predicted - measured
    rel = diff / abs(measured) if math.isfinite(measured) and measured != 0 else None
    inside, iv = None, None
    if interval is not None and all(x is not None and math.isfinite(float(x)) for x in interval):
        iv = (float(interval[0]), float(interval[1]))
        inside = bool(iv[0] <= predicted <= iv[1])
    return PredictionCheck(predicted, measured, diff, rel, inside, iv)


# --------------------------------------------------------------------------- claims and the home map
def verdict_counts(claims: Iterable[Verdict]) -> dict[str, int]:
    counts = {k: 0 for k in VERDICTS}
    for v in claims:
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    return counts


def glance(counts: Mapping[str, int] | None) -> str:
    """':green[holds 3] :red[fails 2]' (Streamlit markdown) from verdict counts; empty when there are none."""
    if not counts:
        return ""
    return " ".join(f":{VERDICT_COLOUR[k]}[{k} {n}]" for k, n in counts.items() if n and k in VERDICT_COLOUR)


def home_map(catalog: Catalog, built: Iterable[str],
             verdicts: Mapping[str, Mapping[str, int] | str] | None = None) -> pd.DataFrame:
    """Topics x questions: one row per topic, one column per slot (1..5), a dict per cell.

    ``verdicts`` maps a built lab's id to its verdict counts from the default run
    (or to an error message if that run failed).
    """
    built = set(built)
    verdicts = verdicts or {}
    rows = {}
    for topic, questions in catalog.by_topic().items():
        cells = []
        for q in sorted(questions, key=lambda q: q.number):
            v = verdicts.get(q.id)
            cells.append({"id": q.id, "number": q.number, "title": q.title, "difficulty": q.difficulty,
                          "built": q.id in built,
                          "glance": v if isinstance(v, str) else glance(v) if q.id in built else ""})
        rows[topic.name] = cells
    width = max(len(c) for c in rows.values())
    return pd.DataFrame.from_dict(rows, orient="index", columns=[f"{k + 1}" for k in range(width)])


def page_title(q: Question) -> str:
    return f"Q{q.number:02d} · {q.title}"


# --------------------------------------------------------------------------- regime maps
def regime_map(grid: Sequence[Mapping[str, Any]], title: str = ""):
    """An Altair heat map of a claim's sweep (one cell per setting, coloured by its verdict) and its height in px.

    Drawn by the browser (Vega-Lite), so it costs the server nothing to repaint.
    """
    import altair as alt

    names = [k for k in grid[0] if k not in ("verdict", "measured", "low", "high", "reason")]
    rows = [{**{n: fmt_value(c[n]) for n in names}, "verdict": c["verdict"].replace("_", " "),
             "measured": fmt_number(c["measured"]) if c["measured"] is not None else "—"} for c in grid]
    palette = {"green": "#2e7d32", "red": "#c62828", "orange": "#ef6c00", "violet": "#6a1b9a", "gray": "#9e9e9e"}
    present = {c["verdict"] for c in grid}
    shown = [v for v in (*VERDICTS, "skipped") if v in present]
    order = [v.replace("_", " ") for v in shown]
    colours = [palette[VERDICT_COLOUR[v]] if v in VERDICT_COLOUR else "#e0e0e0" for v in shown]
    x_sort = [fmt_value(v) for v in dict.fromkeys(c[names[0]] for c in grid)]
    enc = {"x": alt.X(f"{names[0]}:O", sort=x_sort, title=names[0]),
           "color": alt.Color("verdict:N", scale=alt.Scale(domain=order, range=colours), title="verdict"),
           "tooltip": [f"{n}:N" for n in names] + ["verdict:N", "measured:N"]}
    if len(names) > 1:
        y_sort = [fmt_value(v) for v in dict.fromkeys(c[names[1]] for c in grid)]
        enc["y"] = alt.Y(f"{names[1]}:O", sort=y_sort, title=names[1])
    base = alt.Chart(pd.DataFrame(rows), title=title)
    cells = base.mark_rect(stroke="white").encode(**enc)
    text = base.mark_text(fontSize=11).encode(**{k: v for k, v in enc.items() if k in ("x", "y")},
                                               text="measured:N")
    n_rows = len(y_sort) if len(names) > 1 else 1
    chart = (cells + text).properties(height=34 * n_rows)
    return chart, max(34 * n_rows, 22 * len(shown)) + 90  # Streamlit needs the height of a layered chart


# --------------------------------------------------------------------------- a lab's plots
def plot_payload(plot) -> tuple[str, Any]:
    """("vega", spec dict) for an Altair chart (the browser draws it), ("png", bytes) for a matplotlib figure."""
    if hasattr(plot, "to_dict") and type(plot).__module__.startswith("altair"):
        return "vega", plot.to_dict()
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plot.savefig(buf, format="png", dpi=110)  # figures use constrained layout: no second "tight" pass
    plt.close(plot)
    return "png", buf.getvalue()
