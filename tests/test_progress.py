"""The progress store: survives a restart, WAL, calibration per concept, FSRS reviews, bad files.

Every test uses its own temporary database; ``conftest.py`` points ``ARCHLAB_DATA``
at a temporary folder too, so nothing here touches the user's data folder.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from faces import progress as pg
from labs.registry import get_lab
from labs.workshop import score_number

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def q08_run():
    return get_lab("q08").run(0)


def _scored(run, arm, metric, times):
    v = run.metrics[arm][metric]
    return score_number(v * times, v, run.intervals.get(arm, {}).get(metric))


def test_data_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHLAB_DATA", str(tmp_path / "a"))
    assert pg.data_dir() == tmp_path / "a"
    monkeypatch.delenv("ARCHLAB_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert pg.data_dir() == tmp_path / "xdg" / "archlab"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pg.data_dir() == tmp_path / "home" / ".local" / "share" / "archlab"


def test_progress_survives_a_restart(tmp_path, q08_run):
    db = tmp_path / "p.db"
    arm, metric = get_lab("q08").headline
    with pg.Progress(db) as p:
        assert p.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        p.record_number("q08", _scored(q08_run, arm, metric, 4), arm, metric)
        assert p.state("q08") == "predicted"
        p.record_drill("q08", 0.7, 3)
    with pg.Progress(db) as again:  # a new connection, as after a restart
        assert again.state("q08") == "drilled"
        assert again.state("q11") == "not tried"
        rows = again.tables()["answers"]
        assert len(rows) == 1 and rows[0]["metric"] == metric and rows[0]["direction"] == "high"
        assert rows[0]["factor"] == pytest.approx(4.0)
        assert again.due("q08") is not None


def test_calibration_per_concept_and_direction(tmp_path, q08_run):
    lab = get_lab("q08")
    arm, metric = lab.headline
    with pg.Progress(tmp_path / "p.db") as p:
        p.record_number("q08", _scored(q08_run, arm, metric, 3), arm, metric)
        p.record_number("q08", _scored(q08_run, arm, metric, 3), arm, metric)
        p.record_number("q08", _scored(q08_run, "pattern", "recovery_time_s", 0.5), "pattern", "recovery_time_s")
        cal = {c["concept"]: c for c in p.calibration()}
    tail = cal[pg.concept_of(metric)]
    assert tail["n"] == 2 and tail["inside"] == 0 and tail["direction"] == "too high"
    assert tail["bias_factor"] == pytest.approx(3.0)
    rec = cal[pg.concept_of("recovery_time_s")]
    assert rec["direction"] == "too low" and rec["bias_factor"] == pytest.approx(2.0)


@pytest.mark.parametrize("metric, concept", [("p99_ms", "tail latency"), ("p95_ms", "tail latency"),
                                             ("peak_rps", "capacity"), ("failover_time_s", "failover time"),
                                             ("p50_ms", "typical latency")])
def test_concept_of_metric(metric, concept):
    assert pg.concept_of(metric) == concept


def test_fsrs_schedules_a_good_drill_later_than_a_bad_one(tmp_path):
    with pg.Progress(tmp_path / "p.db") as p:
        p.record_drill("q01", 1.0, 4)
        p.record_drill("q02", 0.0, 4)
        good, bad = p.due("q01"), p.due("q02")
        assert good > bad
        assert p.states(now=bad - timedelta(seconds=1))["q02"] == "drilled"
        assert p.states(now=bad + timedelta(seconds=1))["q02"] == "due for review"
        assert p.states(now=bad + timedelta(seconds=1))["q01"] == "drilled"
        p.record_drill("q03", None, 2)  # an ungraded drill schedules nothing
        assert p.due("q03") is None and p.state("q03") == "drilled"


def test_export_json_and_csv(tmp_path, q08_run):
    arm, metric = get_lab("q08").headline
    env = {**os.environ, "ARCHLAB_DATA": str(tmp_path)}
    with pg.Progress(tmp_path / pg.FILE_NAME) as p:
        p.record_number("q08", _scored(q08_run, arm, metric, 2), arm, metric)
        p.record_drill("q08", 0.5, 1)
    out = subprocess.run([sys.executable, "-m", "faces.cli", "progress", "export", "--format", "json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["states"]["q08"] == "drilled" and len(data["answers"]) == 1 and len(data["drills"]) == 1
    out = subprocess.run([sys.executable, "-m", "faces.cli", "progress", "export", "--format", "csv"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and len(lines) == 2 and "concept" in lines[0] and metric in lines[1]


def test_corrupt_file_is_kept_aside_with_one_clear_error(tmp_path):
    db = tmp_path / pg.FILE_NAME
    junk = b"this is not an SQLite database\n" * 200
    db.write_bytes(junk)
    env = {**os.environ, "ARCHLAB_DATA": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "faces.cli", "progress", "export"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged" in lines[0], out.stderr
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(pg.FILE_NAME + ".corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == junk and str(aside[0]) in lines[0]
    with pg.Progress(db) as p:  # the next start begins a new store; the old bytes stay aside
        assert p.states() == {}
    assert aside[0].read_bytes() == junk
    assert pg.home_marks(db) == {}


def test_locked_database_gives_one_clear_error_and_loses_nothing(tmp_path, q08_run):
    db = tmp_path / "p.db"
    arm, metric = get_lab("q08").headline
    with pg.Progress(db) as p:
        p.record_number("q08", _scored(q08_run, arm, metric, 2), arm, metric)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(pg.ProgressError, match="locked"):
            with pg.Progress(db) as p:
                p.record_number("q08", _scored(q08_run, arm, metric, 3), arm, metric)
        assert "locked" in pg.record_prediction("q08", arm, metric, 1.0, 2.0, path=db)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with pg.Progress(db) as p:
        assert len(p.tables()["answers"]) == 1
    assert db.exists() and not any(x.name.startswith("p.db.corrupt") for x in tmp_path.iterdir())


def test_home_marks_without_a_store_creates_nothing(tmp_path):
    assert pg.home_marks(tmp_path / "none.db") == {}
    assert not (tmp_path / "none.db").exists()


def test_explorer_records_predictions_and_home_marks_each_question(tmp_path, monkeypatch, q08_run):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("ARCHLAB_DATA", str(tmp_path))
    lab = get_lab("q08")
    arm, metric = lab.headline
    guess = q08_run.metrics[arm][metric] * 2
    at = AppTest.from_string(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport app\napp.main(start='q08')\n",
                             default_timeout=120).run()
    at.number_input(key="predict_q08").set_value(guess).run()
    at.button(key="reveal_q08").click().run()
    at.run()  # a rerun must not store the same prediction twice
    assert not at.exception, [e.value for e in at.exception]
    with pg.Progress(tmp_path / pg.FILE_NAME) as p:
        rows = p.tables()["answers"]
        assert len(rows) == 1 and rows[0]["stated"] == pytest.approx(guess)
        assert rows[0]["factor"] == pytest.approx(2.0) and rows[0]["source"] == "explorer"
        p.record_drill("q11", 0.0, 2)
    home = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not home.exception, [e.value for e in home.exception]
    captions = [c.value for c in home.caption]
    marks = pg.home_marks(tmp_path / pg.FILE_NAME)
    assert marks["q08"] == "predicted" and marks["q11"] in ("drilled", "due for review")
    for qid, state in marks.items():
        assert sum(f"you: {state}" in c for c in captions) >= 1
    assert sum("you: not tried" in c for c in captions) == 30 - len(marks)


def test_notebook_scorer_saves_real_guesses_only(tmp_path, q08_run):
    db = tmp_path / "nb.db"
    score = pg.notebook_scorer("q08", path=db)
    arm, metric = get_lab("q08").headline
    assert "No prediction yet" in score(None, q08_run, arm, metric)
    assert not db.exists(), "an empty prediction cell must not create a store"
    v = q08_run.metrics[arm][metric]
    text = score(v * 10, q08_run, arm, metric, "ms")
    assert "too high" in text
    with pg.Progress(db) as p:
        rows = p.tables()["answers"]
    assert len(rows) == 1 and rows[0]["source"] == "notebook" and rows[0]["factor"] == pytest.approx(10.0)


def test_exercise_answer_names_both_runs_and_the_reason(q08_run):
    from dataclasses import replace

    from labs.workshop import exercise_answer

    lab = get_lab("q08")
    exercise = replace(lab.exercises[0], why="because of the test's mechanism")
    changed = lab.run(0, **exercise.changes)
    arm, metric = exercise.watch
    text = exercise_answer(exercise, q08_run, changed, "ms")
    before, after = q08_run.metrics[arm][metric], changed.metrics[arm][metric]
    assert text.startswith(f"Answer: {arm} {metric} is ")
    assert text.endswith("Why: because of the test's mechanism")
    if before and after and before != after:
        r = after / before
        assert (f"{r:.3g}× the default" if r > 1 else f"{1 / r:.3g}× lower") in text
