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


def state_timeline(states: pd.DataFrame, title: str, spans=(), span_label="outage"):
    """A step chart of a state machine over time (columns time_s, state)."""
    order = list(STATE_COLOURS)
    fig, ax = figure(title, size=(8, 2.2))
    shade(ax, spans, span_label)
    t = states["time_s"].to_numpy()
    for k in range(len(states) - 1):
        s = states["state"].iloc[k]
        ax.hlines(order.index(s) if s in order else 0, t[k], t[k + 1], colors=STATE_COLOURS.get(s, "k"), lw=6)
    ax.set_yticks(range(len(order)), order)
    ax.set_ylim(-0.6, len(order) - 0.4)
    ax.set_xlabel("time (s)")
    return fig


def close_all(figs):
    for f in figs:
        plt.close(f)


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
