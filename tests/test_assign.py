"""Student notebooks: ``archlab assign``: placeholders between nbgrader markers, no outputs, no checks.

The instructor's key (the committed, executed notebook) must stay as it is.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from faces.assign import BEGIN, END, is_maintainer_check, student_copy
from faces.notebooks import SCORE_TAG, SOLUTION_TAG, notebook_path
from labs.registry import built_ids, get_lab

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "faces.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _tags(cell):
    return cell.metadata.get("tags", [])


def test_assign_q08_writes_a_student_copy(tmp_path):
    key_before = notebook_path("q08").read_bytes()
    out = _cli("assign", "q08", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path.parent == tmp_path and path.name == notebook_path("q08").name
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    assert notebook_path("q08").read_bytes() == key_before  # the instructor's key is untouched

    lab = get_lab("q08")
    solutions = [c for c in nb.cells if SOLUTION_TAG in _tags(c)]
    assert len(solutions) == len(lab.exercises)
    for cell in solutions:
        assert cell.outputs == [] and cell.execution_count is None
        src = cell.source
        assert BEGIN in src and END in src and src.index(BEGIN) < src.index(END)
        assert "lab.run(seed=SEED," not in src.replace("#     changed = lab.run(seed=SEED,", "")
        meta = cell.metadata["nbgrader"]
        assert meta["solution"] is True and meta["grade"] is False and meta["grade_id"] == cell.id
        assert not cell.metadata.get("jupyter", {}).get("source_hidden")
    for cell in nb.cells:  # headline and every other output stripped: the learner predicts first
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
            assert not is_maintainer_check(cell)
    ids = [c.id for c in nb.cells]
    assert len(ids) == len(set(ids))
    # each exercise keeps its score cell, right after the solution, naming the watched metric
    for k, ex in enumerate(lab.exercises):
        cell = nb.cells[nb.cells.index(solutions[k]) + 1]
        assert SCORE_TAG in _tags(cell) and "score_prediction(prediction, changed" in cell.source
        assert repr(ex.watch[1]) in cell.source
    assert "Student copy" in nb.cells[1].source
    assert any("Removed from the student copy" in c.source for c in nb.cells if c.cell_type == "markdown")


def test_instructor_key_keeps_solutions_and_checks():
    key = nbformat.read(str(notebook_path("q08")), as_version=4)
    solutions = [c for c in key.cells if SOLUTION_TAG in _tags(c)]
    assert solutions and all(c.outputs for c in solutions)
    assert sum(is_maintainer_check(c) for c in key.cells) >= len(get_lab("q08").question.claims)
    student = student_copy(key)
    assert sum(is_maintainer_check(c) for c in student.cells) == 0
    assert all(c.outputs for c in key.cells if SOLUTION_TAG in _tags(c))  # the copy is a new object


def test_assign_all(tmp_path):
    out = _cli("assign", "--all", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    written = sorted(Path(p).name for p in out.stdout.split())
    assert written == sorted(notebook_path(i).name for i in built_ids())
    for name in written:
        nbformat.validate(nbformat.read(str(tmp_path / name), as_version=4))


@pytest.mark.parametrize("args", [["assign", "--out", "x"], ["assign", "q08", "--all", "--out", "x"],
                                  ["assign", "q99", "--out", "x"]])
def test_assign_bad_usage(args, tmp_path):
    out = _cli(*[a if a != "x" else str(tmp_path / "x") for a in args])
    assert out.returncode == 2 and out.stdout == "" and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_score_cell_rates_a_prediction_against_the_interval():
    from labs.workshop import score_number, score_prediction

    lab = get_lab("q08")
    ex = lab.exercises[0]
    arm, metric = ex.watch
    run = lab.run(0, **ex.changes)
    value = run.metrics[arm][metric]
    text = score_prediction(value * 4, run, arm, metric)
    assert score_number(value * 4, value, run.interval(arm, metric)).sentence() in text and "too high" in text
    assert "write your guess" in score_prediction(None, run, arm, metric)
    assert "No run yet" in score_prediction(1.0, None, arm, metric)


def test_student_copy_runs_and_scores_a_learners_prediction(tmp_path):
    """A learner fills in one prediction and one solution; the score cell rates it against the run."""
    from faces.assign import assign
    from faces.notebooks import execute
    from labs.workshop import score_prediction

    lab = get_lab("q08")
    ex = lab.exercises[0]
    arm, metric = ex.watch
    run = lab.run(0, **ex.changes)
    guess = run.metrics[arm][metric] * 3
    nb = nbformat.read(str(assign("q08", tmp_path)), as_version=4)
    first = next(c for c in nb.cells if SOLUTION_TAG in _tags(c))
    k = nb.cells.index(first)
    nb.cells[k - 1].source = f"prediction = {guess!r}"
    args = ", ".join(f"{n}={v!r}" for n, v in ex.changes.items())
    first.source = first.source.replace("changed = None", f"changed = lab.run(seed=SEED, {args})")
    execute(nb, notebook_path("q08").parent)
    printed = "".join(o.get("text", "") for o in nb.cells[k + 1].outputs)
    assert printed.strip() == score_prediction(guess, run, arm, metric, nb.cells[k + 1].source.split("'")[-2])
    assert "3× too high" in printed
