"""Student copies of the lab notebooks: ``archlab assign q08 --out DIR`` (or ``--all``).

The committed, executed notebook in ``notebooks/`` stays the instructor's key. The
student copy is derived from it with nbformat: every output is stripped (the
headline and the solutions must be predicted, not read); each solution cell's code
is replaced by a placeholder between nbgrader's ``### BEGIN SOLUTION`` /
``### END SOLUTION`` markers and carries nbgrader cell metadata (``solution: true``),
so an instructor can hand it to nbgrader; the maintainers' assert cells (the
"Checks" section) are removed and a marked note says so. Each exercise's score
cell stays: it scores the learner's prediction against the changed run's interval.
The copy is validated as nbformat v4 before it is written.
"""
from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from nbformat.v4 import new_markdown_cell

from faces.notebooks import ASSERT_VERDICT, CPU_CHECK, INTERVAL_MARK, SECTIONS, SOLUTION_TAG, notebook_path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
NBGRADER_SCHEMA = 3
PLACEHOLDER = """# Rerun the lab with this exercise's changes, on the same seed, and keep the run in `changed`:
#     changed = lab.run(seed=SEED, <name>=<value>, ...)
# then compare `changed.metrics[arm][metric]` with `result.metrics[arm][metric]`.
{begin}
# YOUR CODE HERE
changed = None
{end}"""
STUDENT_NOTE = """> **Student copy.** Outputs are stripped: run the cells yourself. Write each exercise's prediction
> before you run anything after it; the cell after each exercise scores your prediction against the
> run's 95% interval. Solution cells hold a placeholder between nbgrader's solution markers. The
> maintainers' checks were removed from this copy (the instructor's key keeps them)."""
REMOVED_NOTE = """{heading}

*Removed from the student copy: the maintainers' assert cells ({n} cells) that check the lab's verdicts
live in the instructor's key.*"""


def _nbgrader(cell_id: str, solution: bool) -> dict:
    return {"grade": False, "grade_id": cell_id, "locked": not solution, "schema_version": NBGRADER_SCHEMA,
            "solution": solution, "task": False}


def is_maintainer_check(cell) -> bool:
    src = cell.get("source", "")
    return cell.cell_type == "code" and bool(ASSERT_VERDICT.search(src) or INTERVAL_MARK in src
                                             or CPU_CHECK.search(src) or src.lstrip().startswith("def cpu_check")
                                             or "assert math.isfinite(value)" in src)


def student_copy(nb):
    """The student version of an instructor notebook (a new object; ``nb`` is untouched)."""
    nb = copy.deepcopy(nb)
    cells, removed = [], 0
    for cell in nb.cells:
        if is_maintainer_check(cell):
            removed += 1
            continue
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            tags = cell.metadata.get("tags", [])
            if SOLUTION_TAG in tags:
                cell.source = PLACEHOLDER.format(begin=BEGIN, end=END)
                cell.metadata.pop("jupyter", None)  # the placeholder is meant to be seen
                cell.metadata["nbgrader"] = _nbgrader(cell.id, True)
        cells.append(cell)
    out = []
    for cell in cells:
        if cell.cell_type == "markdown" and cell.source.startswith(SECTIONS["checks"]):
            cell.source = REMOVED_NOTE.format(heading=SECTIONS["checks"], n=removed)
            cell.metadata["archlab"] = {"student_copy": "maintainer checks removed"}
        out.append(cell)
    note = new_markdown_cell(STUDENT_NOTE, id=f"{nb.metadata.get('archlab', {}).get('lab', 'lab')}-student-note")
    out.insert(1 if out and out[0].cell_type == "markdown" else 0, note)
    nb.cells = out
    nb.metadata.setdefault("archlab", {})["copy"] = "student"
    nbformat.validate(nb)
    return nb


def assign(lab_id: str, out_dir: str | Path) -> Path:
    """Write the student copy of one lab's notebook into ``out_dir``; returns its path."""
    src = notebook_path(lab_id)
    if not src.is_file():
        raise FileNotFoundError(f"{lab_id}: no notebook at {src}; generate it with python -m faces.notebooks {lab_id}")
    nb = student_copy(nbformat.read(str(src), as_version=4))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / src.name
    nbformat.write(nb, str(path))
    return path
