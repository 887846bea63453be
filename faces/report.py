"""The claim scoreboard: ``archlab report --out DIR`` as one static HTML page and ``report.json``.

The verdicts come from ``Lab.check`` (through the sweep engine, with replications when asked);
this module only renders them. The page is self-contained: styles inline and each claim's
regime map drawn as an inline SVG grid (one cell per setting of the claim's sweep, coloured
by its verdict), so it opens from disk with no network and no JavaScript. ``report.json``
carries the same verdicts and, per claim with a sweep, the Vega-Lite spec of
``faces.explorer.regime_map`` for anyone who wants the interactive chart.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

from labs.catalog import load_catalog
from labs.measure import fmt_number
from labs.params import fmt_value

from .explorer import EVIDENCE_TEXT, regime_map

COLOURS = {"holds": "#2e7d32", "fails": "#c62828", "conditional": "#ef6c00", "inconclusive": "#6a1b9a",
           "not_measured": "#9e9e9e", "skipped": "#e0e0e0"}
_CELL_KEYS = ("verdict", "measured", "low", "high", "reason")


def _axes(grid: list[dict]) -> list[tuple[str, list]]:
    names = [k for k in grid[0] if k not in _CELL_KEYS]
    return [(n, list(dict.fromkeys(c[n] for c in grid))) for n in names]


def regime_svg(grid: list[dict]) -> str:
    """A claim's sweep grid as an inline SVG heat map (first parameter across, second down)."""
    axes = _axes(grid)
    (nx, xs) = axes[0]
    (ny, ys) = axes[1] if len(axes) > 1 else ("", [None])
    cw, ch, left, top = 74, 26, (110 if ny else 10), 34
    w, h = left + cw * len(xs) + 10, top + ch * len(ys) + 8
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
           f'aria-label="regime map over {html.escape(nx)}{" and " + html.escape(ny) if ny else ""}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="11" fill="#444">{html.escape(nx)} →</text>']
    if ny:
        out.append(f'<text x="4" y="{top - 6}" fill="#444">{html.escape(ny)} ↓</text>')
    for i, x in enumerate(xs):
        out.append(f'<text x="{left + cw * i + cw / 2}" y="{top - 6}" text-anchor="middle">'
                   f'{html.escape(fmt_value(x))}</text>')
    for j, y in enumerate(ys):
        if ny:
            out.append(f'<text x="{left - 6}" y="{top + ch * j + ch / 2 + 4}" text-anchor="end">'
                       f'{html.escape(fmt_value(y))}</text>')
        for i, x in enumerate(xs):
            cell = next((c for c in grid if c[nx] == x and (not ny or c[ny] == y)), None)
            verdict = cell["verdict"] if cell else "skipped"
            shown = fmt_number(cell["measured"]) if cell and cell.get("measured") is not None else "—"
            tip = f"{nx}={fmt_value(x)}" + (f", {ny}={fmt_value(y)}" if ny else "") + f": {verdict}, {shown}"
            fg = "#000" if verdict in ("skipped", "not_measured") else "#fff"
            out.append(f'<g><title>{html.escape(tip)}</title><rect x="{left + cw * i}" y="{top + ch * j}" '
                       f'width="{cw - 2}" height="{ch - 2}" fill="{COLOURS.get(verdict, "#e0e0e0")}"/>'
                       f'<text x="{left + cw * i + cw / 2 - 1}" y="{top + ch * j + ch / 2 + 3}" '
                       f'text-anchor="middle" fill="{fg}">{html.escape(shown)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def _vega_spec(grid: list[dict], title: str):
    try:
        chart, height = regime_map(grid, title)
        return {"spec": chart.to_dict(), "height": height}
    except Exception as e:  # a spec is a convenience; the page does not depend on it
        return {"error": f"{type(e).__name__}: {e}"}


def write_report(report: list[dict], out: str | Path, seed: int = 0) -> Path:
    """Write ``index.html`` and ``report.json`` for ``report`` (what ``archlab check --format json`` prints);
    returns the page's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cat = load_catalog()
    counts: dict[str, int] = {}
    labs = []
    for r in report:
        q = cat.get(r["lab"])
        claims = []
        for c in r["claims"]:
            counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
            entry = dict(c)
            if c.get("sweep"):
                entry["regime_map"] = _vega_spec(c["sweep"], c["id"])
            claims.append(entry)
        labs.append({"lab": r["lab"], "title": q.title, "reps": r.get("reps", 1), "elapsed_s": r.get("elapsed_s"),
                     "claims": claims})
    data = {"generated": time.strftime("%Y-%m-%d %H:%M:%S"), "seed": seed, "counts": counts, "labs": labs}
    (out / "report.json").write_text(json.dumps(data, indent=1, allow_nan=False, default=str), encoding="utf-8")
    (out / "index.html").write_text(_page(data), encoding="utf-8")
    return out / "index.html"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:.7rem;color:#fff;font-size:.85rem;font-weight:600}
.claim{border:1px solid #e4e4e4;border-radius:.4rem;padding:.6rem .9rem;margin:.7rem 0}
.muted{color:#666;font-size:.88rem} table.sum{border-collapse:collapse} table.sum td,table.sum th{padding:.2rem .7rem;
border-bottom:1px solid #eee;text-align:left} .map{margin-top:.4rem;overflow-x:auto}
details{margin-top:.3rem} .warn{color:#b71c1c}
"""


def _badge(verdict: str) -> str:
    fg = "#000" if verdict in ("not_measured", "skipped") else "#fff"
    return (f'<span class="badge" style="background:{COLOURS.get(verdict, "#9e9e9e")};color:{fg}">'
            f'{html.escape(verdict.replace("_", " "))}</span>')


def _page(data: dict) -> str:
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>ArchLab claim scoreboard</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>ArchLab claim scoreboard</h1>",
             f"<p class='muted'>Generated {e(data['generated'])} · seed {data['seed']} · "
             "every verdict from <code>archlab check</code> over the claim's sweep and control</p>",
             "<table class='sum'><tr><th>lab</th><th>title</th><th>claims</th><th>verdicts</th><th>replications</th>"
             "<th>time</th></tr>"]
    for lab in data["labs"]:
        badges = " ".join(_badge(c["verdict"]) for c in lab["claims"])
        t = f"{lab['elapsed_s']:.1f} s" if lab.get("elapsed_s") is not None else ""
        parts.append(f"<tr><td><a href='#{e(lab['lab'])}'>{e(lab['lab'])}</a></td><td>{e(lab['title'])}</td>"
                     f"<td>{len(lab['claims'])}</td><td>{badges}</td><td>{lab['reps']}</td><td>{t}</td></tr>")
    parts.append("</table><p class='muted'>"
                 + " · ".join(f"{_badge(k)} {n}" for k, n in sorted(data["counts"].items())) + "</p>")
    for lab in data["labs"]:
        parts.append(f"<h2 id='{e(lab['lab'])}'>{e(lab['lab'])} · {e(lab['title'])}</h2>")
        for c in lab["claims"]:
            parts.append("<div class='claim'>")
            parts.append(f"<div>{_badge(c['verdict'])} <strong>{e(c['text'])}</strong> "
                         f"<span class='muted'>({e(c['id'])})</span></div>")
            parts.append(f"<div class='muted'>Evidence — {e(EVIDENCE_TEXT.get(c['evidence'], c['evidence']))}</div>")
            if c.get("region"):
                parts.append(f"<div>Region: {e(c['region'])}</div>")
            if c.get("sweep"):
                parts.append(f"<div class='map'>{regime_svg(c['sweep'])}</div>")
            ctl = c.get("control")
            if ctl:
                shown = ", ".join(f"{k}={fmt_value(v)}" for k, v in ctl["setting"].items())
                said = ("vanishes there, as it should" if ctl.get("vanishes") else
                        "was skipped there" if ctl.get("vanishes") is None else
                        "<span class='warn'>survives there: it may come from another mechanism</span>")
                parts.append(f"<div class='muted'>Control ({e(shown)}): the effect {said}.</div>")
            parts.append(f"<details><summary>Detail</summary><p class='muted'>{e(c['detail'])}</p></details>")
            parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
