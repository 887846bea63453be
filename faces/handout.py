"""Printable handouts, answer keys and instructor guides, generated from the question, the lab and its write-up.

``archlab handout q08 --out DIR`` writes ``q08_handout.html``: the question, the claims
table with blank *my prediction* / *my verdict* columns, and the exercises, each with a
link and a QR code (``segno``, inline SVG) to its exact setting in the explorer.
``--answer-key`` adds ``q08_answer_key.html`` (the measured values with their 95%
intervals, the verdicts and the regions where each claim holds, from ``Lab.run`` and
``Lab.check``) and ``q08_guide.html``, the instructor guide: timing for a 50-minute
slot, what to record, the predictions most people get wrong (read off the regions
where claims fail) and discussion prompts (from the write-up and the exercises).

Each page is one self-contained HTML file with print CSS (A4, no scripts, no network).
A PDF of each is printed by the chromium that Playwright drives when ``/usr/bin/chromium``
is there (no package beyond the project's own); otherwise only the HTML is written.
Nothing here computes a number: values, intervals and verdicts come from the lab.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from faces import explorer as ex
from labs.catalog import load_catalog
from labs.registry import get_lab

CHROMIUM = os.environ.get("ARCHLAB_CHROMIUM", "/usr/bin/chromium")
DEFAULT_BASE_URL = "http://localhost:8501"
SLOT_MIN = 50
CSS = """
@page { size: A4; margin: 14mm 12mm; }
body { font: 11pt/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111; max-width: 190mm; margin: auto; }
h1 { font-size: 17pt; margin: 0 0 2mm; } h2 { font-size: 13pt; margin: 6mm 0 2mm; border-bottom: 1px solid #999; }
.meta { color: #555; font-size: 9.5pt; } table { border-collapse: collapse; width: 100%; page-break-inside: auto; }
th, td { border: 1px solid #888; padding: 1.5mm 2mm; vertical-align: top; text-align: left; font-size: 10pt; }
tr { page-break-inside: avoid; } td.blank { min-width: 28mm; height: 11mm; }
.verdicts { white-space: nowrap; font-size: 9pt; } .exercise { display: flex; gap: 4mm; page-break-inside: avoid;
 border: 1px solid #bbb; padding: 2mm 3mm; margin: 2mm 0; } .exercise .qr svg { width: 30mm; height: 30mm; }
.exercise .text { flex: 1; } .line { border-bottom: 1px solid #444; height: 8mm; margin: 1mm 0 2mm; }
a { color: #0b4f9c; word-break: break-all; } code { font-size: 9.5pt; }
.holds { color: #1b5e20; } .fails { color: #b71c1c; } .conditional { color: #e65100; } .key { background: #f3f3f3; }
ol li, ul li { margin: 1mm 0; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def qr_svg(url: str) -> str:
    """A QR code of ``url`` as inline SVG (no image files, prints sharp)."""
    import segno

    return segno.make(url, error="m").svg_inline(scale=3, border=2, omitsize=True)


def qr_png(url: str, scale: int = 5) -> bytes:
    """A QR code of ``url`` as PNG bytes, for pages whose HTML is sanitised (Streamlit strips inline SVG)."""
    import io

    import segno

    buf = io.BytesIO()
    segno.make(url, error="m").save(buf, kind="png", scale=scale, border=2)
    return buf.getvalue()


def setting_link(base_url: str, lab, changes: dict) -> str:
    """The explorer URL that reproduces a setting (only values that differ from the defaults)."""
    full = dict(lab.settings(changes))
    return f"{base_url.rstrip('/')}/{lab.id}{ex.query_string(full, lab.defaults())}"


def _page(title: str, body: str) -> str:
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


@dataclass
class KeyData:
    """What the answer key and the guide read from the lab: runs at the defaults and exercises, and regions."""

    default: object  # Result at the defaults
    exercises: list = field(default_factory=list)  # Result per exercise
    regions: dict = field(default_factory=dict)  # claim id -> region Verdict


def key_data(qid: str, seed: int = 0, regions: bool = True) -> KeyData:
    from faces import runs

    lab = get_lab(qid)
    settings = runs.session_settings(lab.id)
    results = [runs.run(lab.id, s, seed) for _, s in settings]
    reg = {v.id: v for v in lab.check(seed)} if regions else {}
    return KeyData(results[0], results[1:], reg)


def _value(result, arm: str, metric: str, unit: str) -> str:
    return ex.fmt_with_ci(result.metrics.get(arm, {}).get(metric, float("nan")),
                          result.intervals.get(arm, {}).get(metric), unit)


# --------------------------------------------------------------------------- handout and answer key
def handout_html(qid: str, base_url: str = DEFAULT_BASE_URL, key: KeyData | None = None, seed: int = 0) -> str:
    """The participant's handout; with ``key`` the answer key (measured values, verdicts, regions)."""
    lab = get_lab(qid)
    q = load_catalog().get(lab.id)
    title = ex.page_title(q) + (" · answer key" if key else "")
    arm, metric = lab.headline
    unit = ex.metric_unit(q, metric)
    out = [f"<h1>{_e(title)}</h1>",
           f"<p class=\"meta\">{_e(q.topic_name)} · {_e(q.difficulty)} · ArchLab lab {lab.id} · seed {seed} · "
           f"explorer: <a href=\"{_e(setting_link(base_url, lab, {}))}\">{_e(setting_link(base_url, lab, {}))}</a></p>",
           f"<p>{_e(q.summary)}</p>", "<h2>Predict first</h2>",
           f"<p>At the lab's default settings, what will the <b>{_e(arm)}</b> arm's <code>{_e(metric)}</code> "
           f"({_e(_metric_name(q, metric))}) be?</p>"]
    if key:
        out.append(f"<p class=\"key\">Measured: <b>{_e(_value(key.default, arm, metric, unit))}</b></p>")
    else:
        out.append(f"<div class=\"line\"></div><p class=\"meta\">unit: {_e(unit or '—')}</p>")
    out.append("<h2>The claims</h2>")
    head = ["#", "claim", "metric · target"]
    head += ["measured at the defaults", "verdict", "where it holds"] if key else ["my prediction", "my verdict"]
    out.append("<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>")
    point = {v.id: v for v in key.default.claims} if key else {}
    for k, c in enumerate(q.claims, 1):
        target = _target(q, c)
        cells = [str(k), _e(c.text), f"<code>{_e(c.arm)} {_e(c.metric)}</code><br>{_e(target)}"]
        if key:
            v = point.get(c.id)
            r = key.regions.get(c.id)
            shown = r or v
            cells.append(_e(_value(key.default, c.arm, c.metric, ex.metric_unit(q, c.metric))))
            cells.append(f"<b class=\"{_e(shown.verdict)}\">{_e(shown.verdict.replace('_', ' '))}</b><br>"
                         f"<span class=\"meta\">{_e(shown.evidence)}</span>")
            cells.append(_e(r.region or r.detail) if r is not None else _e(v.detail))
        else:
            cells.append("<td class=\"blank\"></td>")
            cells.append("<span class=\"verdicts\">☐ holds ☐ fails ☐ conditional</span>")
        out.append("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    if lab.exercises:
        out.append("<h2>Exercises: change one thing, predict, then run</h2>")
    for k, e in enumerate(lab.exercises):
        url = setting_link(base_url, lab, e.changes)
        changes = ", ".join(f"<code>{_e(n)} = {_e(v)}</code>" for n, v in e.changes.items())
        a, m = e.watch
        body = (f"<p><b>{k + 1}.</b> {_e(e.prompt)}</p><p class=\"meta\">Sets {changes}; predict the "
                f"<b>{_e(a)}</b> arm's <code>{_e(m)}</code>.</p><p><a href=\"{_e(url)}\">{_e(url)}</a></p>")
        if key:
            body += (f"<p class=\"key\">Measured: <b>{_e(_value(key.exercises[k], a, m, ex.metric_unit(q, m)))}</b>"
                     f" (at the defaults: {_e(_value(key.default, a, m, ex.metric_unit(q, m)))})</p>")
        else:
            body += "<p>My prediction:</p><div class=\"line\"></div>"
        out.append(f"<div class=\"exercise\"><div class=\"qr\">{qr_svg(url)}</div><div class=\"text\">{body}</div></div>")
    out.append(f"<p class=\"meta\">Made by <code>archlab handout {lab.id}{' --answer-key' if key else ''}</code>. "
               "Verdicts: holds / fails when the 95% interval is wholly on one side of the target; conditional "
               "when it holds in part of the sweep.</p>")
    return _page(title, "\n".join(out))


def _metric_name(q, key: str) -> str:
    try:
        return q.metric(key).name
    except KeyError:
        return key


def _target(q, c) -> str:
    reading = getattr(c, "reading", "")
    return f"{reading}" if reading else f"{c.op} {c.value} {c.unit}".strip()


# --------------------------------------------------------------------------- the instructor guide
def timing(n_exercises: int, slot_min: int = SLOT_MIN) -> list[tuple[int, int, str]]:
    """(start, end, what) minutes for a slot: framing, predictions, reveal, exercises, regions, wrap-up."""
    fixed = [(5, "Frame the question: read it aloud, show the claims table; nobody opens the lab yet."),
             (5, "Predict first: everyone sends the headline number and a verdict per claim to the room "
                 "(or writes them on the handout)."),
             (5, "Reveal: project the histogram against the simulated interval; ask the people furthest out why.")]
    tail = [(7, "Where each claim holds: run 'Find where each claim holds' and read the regime maps together."),
            (3, "Wrap up: each person says the one-sentence interview answer they would now give.")]
    left = slot_min - sum(m for m, _ in fixed) - sum(m for m, _ in tail)
    blocks = list(fixed)
    if n_exercises:
        each, extra = divmod(left, n_exercises)
        for k in range(n_exercises):
            blocks.append((each + (1 if k < extra else 0),
                           f"Exercise {k + 1}: start the round, predict (1-2 min), reveal, discuss."))
    else:
        blocks.append((left, "Move one parameter at a time in the explorer; predict before each run."))
    blocks += tail
    out, t = [], 0
    for minutes, what in blocks:
        out.append((t, t + minutes, what))
        t += minutes
    return out


def wrong_predictions(qid: str, key: KeyData) -> list[str]:
    """The predictions a room most often gets wrong: claims that fail, or hold only in part of their sweep."""
    q = load_catalog().get(get_lab(qid).id)
    out = []
    for c in q.claims:
        r = key.regions.get(c.id)
        point = next((v for v in key.default.claims if v.id == c.id), None)
        shown = r or point
        if shown is None or shown.verdict not in ("fails", "conditional"):
            continue
        failing = []
        for cell in (r.grid or []) if r is not None else []:
            if cell.get("verdict") == "fails":
                failing.append(", ".join(f"{k}={cell[k]}" for k in cell
                                         if k not in ("verdict", "measured", "low", "high", "reason")))
        where = (f" It fails at {'; '.join(failing[:3])}" + ("…" if len(failing) > 3 else "") + ".") if failing else ""
        out.append(f"“{c.text}” — expect most of the room to say it holds; the lab says "
                   f"{shown.verdict.replace('_', ' ')}: {shown.region or shown.detail}.{where}")
    return out


def discussion_prompts(qid: str) -> list[str]:
    lab = get_lab(qid)
    q = lab.question
    writeup = lab.writeup()
    out = []
    for c in q.claims:
        text = writeup.get(c.id, "")
        envelope = next((p for p in text.split("\n\n") if p.startswith("**Back of the envelope.**")), "")
        envelope = envelope.replace("**Back of the envelope.**", "").strip()
        out.append(f"“{c.text}” What single setting would flip this verdict, and why?"
                   + (f" Work it out on the board first: {envelope}" if envelope else ""))
    for k, e in enumerate(lab.exercises, 1):
        changes = ", ".join(f"{n} = {v}" for n, v in e.changes.items())
        out.append(f"After exercise {k} ({changes}): which mechanism moved {e.watch[0]} {e.watch[1]}, "
                   "and would it survive in production?")
    return out


def guide_html(qid: str, key: KeyData, base_url: str = DEFAULT_BASE_URL) -> str:
    lab = get_lab(qid)
    q = lab.question
    title = f"{ex.page_title(q)} · instructor guide"
    arm, metric = lab.headline
    unit = ex.metric_unit(q, metric)
    rows = "".join(f"<tr><td>{a:02d}–{b:02d} min</td><td>{_e(w)}</td></tr>" for a, b, w in timing(len(lab.exercises)))
    record = [
        "The room code and the CSV export (archlab room export CODE --format csv) before anyone leaves.",
        f"Each round's predictions of {arm} {metric}: how many, the median, how many fell inside the 95% interval "
        f"(default run: {_value(key.default, arm, metric, unit)}).",
        "The verdict votes per claim next to the lab's verdict and region.",
        "Preserve wrong initial predictions: answers are locked at the reveal, so the export keeps what people "
        "believed before they saw the run; discuss them, do not overwrite them.",
        "Which exercise surprised the room most (the widest histogram), for next time.",
    ]
    body = [f"<h1>{_e(title)}</h1>", f"<p class=\"meta\">{_e(q.topic_name)} · {_e(q.difficulty)} · "
            f"{len(q.claims)} claims · {len(lab.exercises)} exercises · a {SLOT_MIN}-minute slot</p>",
            f"<p>{_e(q.summary)}</p>",
            "<h2>Before the session</h2><ul>"
            f"<li><code>archlab warm {lab.id}</code> on the serving machine (every setting below answers from the cache).</li>"
            f"<li><code>streamlit run app.py --server.address 0.0.0.0</code>, open <a href=\"{_e(base_url)}/room?lab={lab.id}\">"
            f"{_e(base_url)}/room?lab={lab.id}</a> (the lab is chosen) and open the room; keep the instructor link "
            f"private.</li>"
            f"<li>Print <code>archlab handout {lab.id} --out DIR</code> for participants without a laptop.</li></ul>",
            f"<h2>Timing ({SLOT_MIN} minutes)</h2><table><tbody>{rows}</tbody></table>",
            "<h2>Record:</h2><ul>" + "".join(f"<li>{_e(r)}</li>" for r in record) + "</ul>",
            "<h2>Common wrong predictions</h2><ul>"
            + ("".join(f"<li>{_e(w)}</li>" for w in wrong_predictions(lab.id, key))
               or "<li>Every claim holds across its sweep: ask instead how far each margin is from the target.</li>")
            + "</ul>",
            "<h2>Discussion prompts</h2><ol>" + "".join(f"<li>{_e(p)}</li>" for p in discussion_prompts(lab.id))
            + "</ol>",
            "<h2>Exercises and their answers</h2><ol>"]
    for k, e in enumerate(lab.exercises):
        a, m = e.watch
        body.append(f"<li>{_e(e.prompt)} <a href=\"{_e(setting_link(base_url, lab, e.changes))}\">link</a> — "
                    f"measured {_e(_value(key.exercises[k], a, m, ex.metric_unit(q, m)))}</li>")
    body.append("</ol>")
    return _page(title, "\n".join(body))


# --------------------------------------------------------------------------- files
def write_pdfs(pages: list[Path]) -> list[Path]:
    """Print each HTML page to PDF with Playwright's chromium; [] when no chromium is installed."""
    if not os.path.exists(CHROMIUM):
        return []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return []
    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            for path in pages:
                page.goto(path.resolve().as_uri())
                pdf = path.with_suffix(".pdf")
                page.pdf(path=str(pdf), format="A4", print_background=True, prefer_css_page_size=True)
                out.append(pdf)
        finally:
            browser.close()
    return out


def write_handout(qid: str, out_dir, answer_key: bool = False, base_url: str = DEFAULT_BASE_URL, seed: int = 0,
                  pdf: bool = True) -> list[Path]:
    """Write the handout (and with ``answer_key`` the key and the instructor guide); the files written."""
    lab = get_lab(qid)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pages = [out / f"{lab.id}_handout.html"]
    pages[0].write_text(handout_html(lab.id, base_url, seed=seed), encoding="utf-8")
    if answer_key:
        key = key_data(lab.id, seed)
        pages.append(out / f"{lab.id}_answer_key.html")
        pages[-1].write_text(handout_html(lab.id, base_url, key, seed), encoding="utf-8")
        pages.append(out / f"{lab.id}_guide.html")
        pages[-1].write_text(guide_html(lab.id, key, base_url), encoding="utf-8")
    return pages + (write_pdfs(pages) if pdf else [])
