"""A learner's progress: predictions, drill scores, calibration per concept, and review dates.

Everything lives in one SQLite file (WAL mode), ``progress.db`` in the data folder:
``$ARCHLAB_DATA``, else ``$XDG_DATA_HOME/archlab``, else ``~/.local/share/archlab``.
Each stated number is stored with the measured value, its interval, the factor and
direction it was off and a concept read off the metric (tail latency for ``pNN_ms``,
capacity for ``*_rps`` ...), so calibration can be reported per concept. Drills
schedule reviews with the FSRS algorithm (the ``fsrs`` package). A question is
"not tried", "predicted", "drilled" or "due for review". A file that is not a
database is moved aside (never overwritten) and a locked one is left alone; both
raise ``ProgressError`` with one clear line. Exports: JSON (all tables) and CSV.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

FILE_NAME = "progress.db"
STATES = ("not tried", "predicted", "drilled", "due for review")
LOCK_TIMEOUT_S = 2.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY, ts TEXT NOT NULL, qid TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL,
    arm TEXT, metric TEXT, concept TEXT, settings TEXT, stated REAL, measured REAL, low REAL, high REAL,
    factor REAL, log_error REAL, direction TEXT, inside INTEGER, credit REAL, text TEXT);
CREATE TABLE IF NOT EXISTS drills (
    id INTEGER PRIMARY KEY, ts TEXT NOT NULL, qid TEXT NOT NULL, score REAL, graded INTEGER NOT NULL,
    items INTEGER, duration_s REAL, answer TEXT);
CREATE TABLE IF NOT EXISTS cards (qid TEXT PRIMARY KEY, card TEXT NOT NULL, due TEXT NOT NULL);
"""
_CONCEPTS = [  # (pattern on the metric key, concept), first match wins
    (r"^p50(_|$)", "typical latency"), (r"^p\d+(_|$)", "tail latency"), (r"_rps$|throughput", "capacity"),
    (r"failover", "failover time"), (r"recovery|mttr|time_to_", "reaction and recovery time"),
    (r"saving|waste", "savings"), (r"speedup|gain|_x$", "ratios between designs"),
    (r"error|availability|fallback", "reliability"), (r"cost|dollar|usd", "cost"),
    (r"queries|extraction|detection", "attack and defence effort"), (r"utili", "utilisation"),
    (r"latency|_ms$", "latency"), (r"_s$|_min$", "durations"), (r"_pct$", "shares"),
]


class ProgressError(RuntimeError):
    """The progress database cannot be used (not a database, locked, unwritable); one line."""


def data_dir() -> Path:
    """$ARCHLAB_DATA, else $XDG_DATA_HOME/archlab, else ~/.local/share/archlab."""
    if os.environ.get("ARCHLAB_DATA"):
        return Path(os.environ["ARCHLAB_DATA"]).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "archlab"


def concept_of(metric: str) -> str:
    """The concept a metric tests a learner's sense of: p99_ms -> tail latency, peak_rps -> capacity."""
    for pattern, concept in _CONCEPTS:
        if re.search(pattern, metric or ""):
            return concept
    return "other"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _num(x):
    return float(x) if x is not None and math.isfinite(float(x)) else None


def rating_for(score: float):
    """The FSRS rating of a drill score (0..1)."""
    from fsrs import Rating

    if score >= 0.85:
        return Rating.Easy
    if score >= 0.6:
        return Rating.Good
    if score >= 0.3:
        return Rating.Hard
    return Rating.Again


class Progress:
    """The store; open with ``Progress()`` (data folder) or ``Progress(path)``; close or use ``with``."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else data_dir() / FILE_NAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ProgressError(f"cannot create the progress folder {self.path.parent}: {e.strerror}") from None
        self.db = None
        try:
            self.db = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            ok = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {ok}")
            self.db.executescript(SCHEMA)
        except sqlite3.OperationalError as e:
            self._close()
            if "locked" in str(e) or "busy" in str(e):
                raise ProgressError(f"the progress database {self.path} is locked by another program; "
                                    "nothing was read or written, try again when it is closed") from None
            raise ProgressError(f"cannot open the progress database {self.path}: {e}") from None
        except sqlite3.DatabaseError as e:
            self._close()
            aside = self._move_aside()
            raise ProgressError(f"the progress database {self.path} is damaged ({e}); it was moved to {aside} "
                                "unchanged and a new one will be started next time") from None

    def _close(self):
        if self.db is not None:
            self.db.close()
            self.db = None

    def _move_aside(self) -> Path:
        stamp = _now().strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        k = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{k}")
            k += 1
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):  # keep the journal with the file it belongs to
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        return aside

    def close(self):
        self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write(self, sql: str, args=()):
        try:
            return self.db.execute(sql, args)
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise ProgressError(f"the progress database {self.path} is locked by another program; "
                                    "nothing was written, try again when it is closed") from None
            raise ProgressError(f"cannot write to the progress database {self.path}: {e}") from None

    # ---------------------------------------------------------------- recording
    def record_number(self, qid: str, score, arm: str, metric: str, kind: str = "prediction",
                      source: str = "explorer", settings: dict | None = None, when: datetime | None = None) -> None:
        """One stated number and how it scored (a ``labs.workshop.NumberScore``)."""
        iv = score.interval or (None, None)
        self._write(
            "INSERT INTO answers (ts, qid, kind, source, arm, metric, concept, settings, stated, measured, low, high,"
            " factor, log_error, direction, inside, credit) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ((when or _now()).isoformat(), qid, kind, source, arm, metric, concept_of(metric),
             json.dumps(settings or {}, sort_keys=True, default=str), score.stated, _num(score.measured),
             _num(iv[0]), _num(iv[1]), score.factor, score.log_error, score.direction,
             None if score.inside is None else int(score.inside), score.credit))

    def record_verdict(self, qid: str, claim_id: str, metric: str, vs, source: str = "drill",
                       when: datetime | None = None) -> None:
        """One stated verdict and how it scored (a ``labs.workshop.VerdictScore``)."""
        self._write("INSERT INTO answers (ts, qid, kind, source, metric, concept, credit, text) VALUES (?,?,?,?,?,?,?,?)",
                    ((when or _now()).isoformat(), qid, "verdict", source, metric, concept_of(metric),
                     vs.credit if vs.graded else None, json.dumps({"claim": claim_id, "stated": vs.stated,
                                                                   "lab": vs.actual, "region": vs.region})))

    def record_drill(self, qid: str, score: float | None, items: int, duration_s: float | None = None,
                     answer: str = "", when: datetime | None = None) -> None:
        """A finished drill; a graded one also schedules the question's next review (FSRS)."""
        when = when or _now()
        self._write("INSERT INTO drills (ts, qid, score, graded, items, duration_s, answer) VALUES (?,?,?,?,?,?,?)",
                    (when.isoformat(), qid, score, int(score is not None), items, duration_s, answer))
        if score is None:
            return
        from fsrs import Card, Scheduler

        row = self.db.execute("SELECT card FROM cards WHERE qid = ?", (qid,)).fetchone()
        card = Card.from_json(row[0]) if row else Card()
        card, _ = Scheduler(enable_fuzzing=False).review_card(card, rating_for(score), review_datetime=when)
        self._write("INSERT OR REPLACE INTO cards (qid, card, due) VALUES (?,?,?)",
                    (qid, card.to_json(), card.due.isoformat()))

    # ---------------------------------------------------------------- reading
    def state(self, qid: str, now: datetime | None = None) -> str:
        return self.states(now).get(qid, "not tried")

    def states(self, now: datetime | None = None) -> dict[str, str]:
        """Each question that has any record: predicted / drilled / due for review (others: not tried)."""
        now = (now or _now()).isoformat()
        out = {q: "predicted" for (q,) in self.db.execute("SELECT DISTINCT qid FROM answers")}
        out.update({q: "drilled" for (q,) in self.db.execute("SELECT DISTINCT qid FROM drills")})
        out.update({q: "due for review" for (q,) in self.db.execute("SELECT qid FROM cards WHERE due <= ?", (now,))})
        return out

    def due(self, qid: str) -> datetime | None:
        row = self.db.execute("SELECT due FROM cards WHERE qid = ?", (qid,)).fetchone()
        return datetime.fromisoformat(row[0]) if row else None

    def calibration(self) -> list[dict]:
        """Per concept: how many numbers, how many inside the interval, the median factor and the bias."""
        rows = self.db.execute("SELECT concept, inside, factor, log_error FROM answers WHERE stated IS NOT NULL "
                               "AND measured IS NOT NULL ORDER BY concept").fetchall()
        by: dict[str, list] = {}
        for concept, inside, factor, log_error in rows:
            by.setdefault(concept, []).append((inside, factor, log_error))
        out = []
        for concept, items in by.items():
            factors = sorted(f for _, f, _ in items if f is not None)
            logs = [e for _, _, e in items if e is not None]
            bias = sum(logs) / len(logs) if logs else None
            out.append({"concept": concept, "n": len(items), "inside": sum(bool(i) for i, _, _ in items),
                        "median_factor": factors[len(factors) // 2] if factors else None,
                        "bias_factor": 10 ** abs(bias) if bias is not None else None,
                        "direction": None if bias is None else "too high" if bias > 0 else
                        "too low" if bias < 0 else "centred"})
        return out

    def tables(self) -> dict[str, list[dict]]:
        out = {}
        for table in ("answers", "drills", "cards"):
            cur = self.db.execute(f"SELECT * FROM {table} ORDER BY rowid")
            names = [d[0] for d in cur.description]
            out[table] = [dict(zip(names, r)) for r in cur.fetchall()]
        return out

    def export(self, fmt: str = "json") -> str:
        """JSON: every table, the states and the calibration; CSV: one row per stated number or verdict."""
        tables = self.tables()
        if fmt == "json":
            return json.dumps({"path": str(self.path), **tables, "states": self.states(),
                               "calibration": self.calibration()}, indent=2, default=str)
        if fmt != "csv":
            raise ValueError(f"format {fmt!r}: expected json or csv")
        buf = io.StringIO()
        names = [d[0] for d in self.db.execute("SELECT * FROM answers LIMIT 0").description]
        w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        w.writeheader()
        w.writerows(tables["answers"])
        return buf.getvalue()


def home_marks(path: str | Path | None = None) -> dict[str, str] | str:
    """Each question's state for the home page ({qid: state}), or the one-line reason the store is unusable."""
    if not Path(path or data_dir() / FILE_NAME).exists():
        return {}  # nothing tried yet: do not create a file just to read it
    try:
        with Progress(path) as p:
            return p.states()
    except ProgressError as e:
        return str(e)


def record_prediction(qid: str, arm: str, metric: str, stated: float, measured, interval=None,
                      settings: dict | None = None, source: str = "explorer", path=None) -> str | None:
    """Store one prediction scored against its run; None, or the one-line reason it was not stored."""
    from labs.workshop import score_number

    try:
        with Progress(path) as p:
            p.record_number(qid, score_number(stated, measured, interval), arm, metric, source=source,
                            settings=settings)
    except ProgressError as e:
        return str(e)
    return None


def notebook_scorer(qid: str, path=None):
    """The notebooks' ``score_prediction``: scores as the workshop scorer does and stores each real guess."""
    from labs.workshop import score_prediction

    def score(prediction, run, arm: str, metric: str, unit: str = "") -> str:
        text = score_prediction(prediction, run, arm, metric, unit)
        if prediction is not None and run is not None:
            why = record_prediction(qid, arm, metric, prediction, run.metrics.get(arm, {}).get(metric),
                                    run.intervals.get(arm, {}).get(metric), source="notebook", path=path)
            text += f"\n(Not saved to your progress: {why})" if why else ""
        return text

    return score


def progress_page():
    """The /progress page: how far off your numbers were per concept, each question's state, exports."""
    import pandas as pd
    import streamlit as st

    st.title("Your progress")
    st.caption(f"Stored on this machine only, in {data_dir() / FILE_NAME}.")
    if not (data_dir() / FILE_NAME).exists():
        st.info("Nothing stored yet: predict on a lab page or run the interview drill.", icon=":material/info:")
        return
    try:
        with Progress() as p:
            cal, states, tables = p.calibration(), p.states(), p.tables()
            exports = {fmt: p.export(fmt) for fmt in ("json", "csv")}
    except ProgressError as e:
        st.error(str(e), icon=":material/error:")
        return
    st.subheader("Calibration per concept")
    st.markdown("For each kind of number you have stated: how many fell inside the run's 95% interval, the "
                "median factor you were off by, and which way you lean.")
    if cal:
        st.dataframe(pd.DataFrame(cal).rename(columns={"n": "numbers stated", "inside": "inside the interval",
                                                       "median_factor": "median factor off",
                                                       "bias_factor": "typical lean (factor)"}),
                     hide_index=True, width="stretch", height="content")
    else:
        st.markdown("No scored numbers yet.")
    st.subheader("Questions")
    if states:
        due = {r["qid"]: r["due"] for r in tables["cards"]}
        st.dataframe(pd.DataFrame([{"question": q, "state": s, "next review": due.get(q, "")}
                                   for q, s in sorted(states.items())]),
                     hide_index=True, width="stretch", height="content")
    c1, c2 = st.columns(2)
    c1.download_button("Export JSON", exports["json"], file_name="archlab-progress.json", mime="application/json")
    c2.download_button("Export CSV", exports["csv"], file_name="archlab-progress.csv", mime="text/csv")
