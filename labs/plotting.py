"""Plot helpers shared by labs: one look for every lab's figures.

Labs call these from their ``plots(result)``; the explorer and the notebooks
only display the figures. The backend is left to the caller (a notebook's
inline backend, Agg on a headless machine). Matplotlib's object API is used (no pyplot state),
so figures can be made in threads and closed explicitly.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

ARM_COLOURS = {"baseline": "#c0392b", "pattern": "#2471a3", "comparison": "#7d3c98"}
EXTRA_COLOURS = ("#27ae60", "#d68910", "#5d6d7e", "#a04000", "#117a65")
STATE_COLOURS = {"CLOSED": "#27ae60", "HALF_OPEN": "#f39c12", "OPEN": "#c0392b"}


def arm_colour(arm: str, index: int = 0) -> str:
    """Fixed colours for the usual arms; further arms (variants) cycle through a second palette."""
    return ARM_COLOURS.get(arm) or EXTRA_COLOURS[index % len(EXTRA_COLOURS)]


def figure(title: str, size=(8, 3.4)):
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    return fig, ax


def shade(ax, spans, label: str = "outage"):
    """Shade time spans (start, end) on an axis; the first span carries the legend label."""
    for k, (start, end) in enumerate(spans):
        ax.axvspan(start, end, color="0.85", zorder=0, label=label if k == 0 else None)


def lines_by_arm(series: pd.DataFrame, x: str, y: str, title: str, ylabel: str, spans=(), logy=False,
                 span_label="outage"):
    """One line per arm of a long-format time series (columns x, y, arm)."""
    fig, ax = figure(title)
    shade(ax, spans, span_label)
    for k, (arm, df) in enumerate(series.groupby("arm", sort=False)):
        ax.plot(df[x], df[y], label=arm, color=arm_colour(arm, k), lw=1.4)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x.replace("_s", " (s)") if x.endswith("_s") else x)
    ax.set_ylabel(ylabel)
    ax.legend(loc="best", fontsize=8)
    return fig


def profile_comparison(table: pd.DataFrame):
    """Median call time per batch size: stored reference (solid) and this machine (dashed)."""
    fig, ax = figure("Median inference time per call: reference profile vs this machine")
    for k, (model, df) in enumerate(table.groupby("model", sort=False)):
        colour = EXTRA_COLOURS[k % len(EXTRA_COLOURS)]
        ax.plot(df["batch_size"], df["reference_p50_us"], "-o", color=colour, label=f"{model} (reference)")
        ax.plot(df["batch_size"], df["this_machine_p50_us"], "--s", color=colour, label=f"{model} (this machine)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("median per call (µs)")
    ax.legend(fontsize=8)
    return fig


def grouped_bars(table: pd.DataFrame, title: str, ylabel: str, hline: float | None = None, hline_label: str = "",
                 colours: dict | None = None, size=(8, 3.6)):
    """One group of bars per row of ``table`` (its index labels the groups), one bar per column, in order."""
    fig, ax = figure(title, size)
    x, k_cols = np.arange(len(table)), len(table.columns)
    w = 0.8 / max(k_cols, 1)
    for k, col in enumerate(table.columns):
        ax.bar(x + (k - (k_cols - 1) / 2) * w, table[col], w, label=str(col),
               color=(colours or {}).get(col) or arm_colour(str(col), k))
    if hline is not None:
        ax.axhline(hline, color="k", ls="--", lw=1, label=hline_label)
    ax.set_xticks(x, table.index, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return fig, ax


# --------------------------------------------------------------------------- browser-drawn charts (Altair)
# Labs return these from ``plots``; the explorer hands them to the browser (Vega-Lite), so a new
# setting costs the server no rendering, and JupyterLab draws them natively in the notebooks.
def _alt():
    import altair as alt

    return alt


def arm_scale(arms):
    """A colour scale that gives every arm its fixed colour, whatever subset a chart shows."""
    alt = _alt()
    arms = list(dict.fromkeys(arms))
    return alt.Scale(domain=arms, range=[arm_colour(a, k) for k, a in enumerate(arms)])


def _axis_scale(log: bool):
    alt = _alt()
    return alt.Scale(type="log") if log else alt.Scale(zero=False)


def _overlays(chart, spans=(), span_label="outage", rules=()):
    """Shaded spans [(start, end)] on x, and reference lines [("x"|"y", value, label)]."""
    alt = _alt()
    layers = []
    if spans:
        df = pd.DataFrame([{"start": a, "end": b, "what": span_label} for a, b in spans])
        layers.append(alt.Chart(df).mark_rect(opacity=0.15, color="gray").encode(
            x="start:Q", x2="end:Q", tooltip=["what:N", "start:Q", "end:Q"]))
    layers.append(chart)
    for axis, value, label in rules:
        df = pd.DataFrame([{"value": value, "what": label}])
        enc = {"x": "value:Q"} if axis == "x" else {"y": "value:Q"}
        layers.append(alt.Chart(df).mark_rule(strokeDash=[4, 3], color="#444").encode(**enc, tooltip=["what:N"]))
    return alt.layer(*layers) if len(layers) > 1 else chart


def line_chart(df: pd.DataFrame, x: str, y: str, title: str, x_title: str, y_title: str, color: str = "arm",
               log_x: bool = False, log_y: bool = False, spans=(), span_label: str = "outage", rules=(),
               points: bool = False, height: int = 260):
    """One line per value of ``color`` (an arm, usually), with optional shaded spans and reference lines."""
    alt = _alt()
    data = df[[x, y, color]].dropna()
    if log_y:
        data = data[data[y] > 0]
    scale = arm_scale(data[color]) if color == "arm" else alt.Undefined
    chart = alt.Chart(data).mark_line(point=points, strokeWidth=1.6).encode(
        x=alt.X(f"{x}:Q", title=x_title, scale=_axis_scale(log_x)),
        y=alt.Y(f"{y}:Q", title=y_title, scale=_axis_scale(log_y)),
        color=alt.Color(f"{color}:N", scale=scale, title=None),
        tooltip=[f"{color}:N", alt.Tooltip(f"{x}:Q", format=",.4~g"), alt.Tooltip(f"{y}:Q", format=",.4~g")])
    return _overlays(chart, spans, span_label, rules).properties(title=title, height=height, width="container")


def bar_chart(df: pd.DataFrame, category: str, value: str, title: str, value_title: str, color: str | None = None,
              stacked: bool = False, horizontal: bool = False, low: str | None = None, high: str | None = None,
              rules=(), height: int = 260, colours: dict | None = None):
    """Bars per ``category`` (grouped or stacked by ``color``), with optional interval whiskers."""
    alt = _alt()
    cat_enc = alt.Y(f"{category}:N", title=None, sort=None) if horizontal else \
        alt.X(f"{category}:N", title=None, sort=None, axis=alt.Axis(labelAngle=-25))
    val_enc = (alt.X if horizontal else alt.Y)(f"{value}:Q", title=value_title, stack="zero" if stacked else None)
    enc = {("y" if horizontal else "x"): cat_enc, ("x" if horizontal else "y"): val_enc,
           "tooltip": [f"{category}:N", alt.Tooltip(f"{value}:Q", format=",.4~g")]}
    if color:
        scale = alt.Scale(domain=list(colours), range=list(colours.values())) if colours else \
            (arm_scale(df[color]) if color == "arm" else alt.Undefined)
        enc["color"] = alt.Color(f"{color}:N", scale=scale, title=None, sort=None)
        enc["tooltip"].insert(1, f"{color}:N")
        if not stacked:
            enc["yOffset" if horizontal else "xOffset"] = alt.XOffset(f"{color}:N", sort=None) if not horizontal \
                else alt.YOffset(f"{color}:N", sort=None)
    chart = alt.Chart(df).mark_bar().encode(**enc)
    if low and high:
        whisk = {("y" if horizontal else "x"): cat_enc,
                 ("x" if horizontal else "y"): alt.X(f"{low}:Q") if horizontal else alt.Y(f"{low}:Q"),
                 ("x2" if horizontal else "y2"): f"{high}:Q"}
        chart = alt.layer(chart, alt.Chart(df).mark_rule(color="#222").encode(**whisk))
    return _overlays(chart, rules=[(("x" if horizontal else "y"), v, lab) for v, lab in rules]).properties(
        title=title, height=height, width="container")


def state_chart(states: pd.DataFrame, title: str, spans=(), span_label: str = "outage"):
    """A state machine over time (columns time_s, state): one coloured band per state."""
    alt = _alt()
    df = pd.DataFrame({"start": states["time_s"].iloc[:-1].to_numpy(), "end": states["time_s"].iloc[1:].to_numpy(),
                       "state": states["state"].iloc[:-1].to_numpy()})
    order = [s for s in STATE_COLOURS] + [s for s in df["state"].unique() if s not in STATE_COLOURS]
    chart = alt.Chart(df).mark_bar(height=14).encode(
        x=alt.X("start:Q", title="time (s)"), x2="end:Q", y=alt.Y("state:N", sort=order, title=None),
        color=alt.Color("state:N", scale=alt.Scale(domain=list(STATE_COLOURS), range=list(STATE_COLOURS.values())),
                        legend=None),
        tooltip=["state:N", alt.Tooltip("start:Q", format=",.1f"), alt.Tooltip("end:Q", format=",.1f")])
    return _overlays(chart, spans, span_label).properties(title=title, height=110, width="container")
