"""Structure of the committed notebooks (nbval executes them and compares the outputs).

These checks read the stored ``.ipynb`` files only; nothing here starts a kernel.
They catch a notebook that is missing, left over for a lab that no longer exists,
never executed, or stale: built from an older lab or catalogue than the one in
the tree. The fix for every failure here is ``python -m faces.notebooks [ids]``.
"""
from __future__ import annotations

import re

import nbformat
import pytest

from labs import built_ids, get_lab
from labs.catalog import load_catalog
from faces.notebooks import (ASSERT_VERDICT, NOTEBOOK_DIR, ROOT, SECTIONS, SOLUTION_TAG, build_notebook,
                            stored_expectations)

BUILT = built_ids()
REGENERATE = "regenerate with: python -m faces.notebooks {}"


def _read(lab_id: str):
    path = ROOT / load_catalog().get(lab_id).notebook
    if not path.exists():
        pytest.fail(f"{lab_id}: no notebook at {path.relative_to(ROOT)}; " + REGENERATE.format(lab_id))
    return nbformat.read(str(path), as_version=4)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _cell_with(nb, needle: str):
    cells = [c for c in _code(nb) if needle in c.source]
    assert cells, f"no code cell contains {needle!r}"
    return cells[0]


def _mimes(cell) -> set[str]:
    return {m for out in cell.get("outputs", []) for m in out.get("data", {})}


def test_every_built_lab_has_its_notebook():
    missing = [load_catalog().get(i).notebook for i in BUILT if not (ROOT / load_catalog().get(i).notebook).exists()]
    assert not missing, f"missing notebooks: {', '.join(missing)}; " + REGENERATE.format("")


def test_no_notebook_without_a_built_lab():
    expected = {(ROOT / load_catalog().get(i).notebook).resolve() for i in BUILT}
    strays = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb") if p.resolve() not in expected)
    assert not strays, (f"notebooks with no built lab (or an old file name): {', '.join(strays)}; "
                        "`python -m faces.notebooks` with no ids removes them")


@pytest.fixture(params=BUILT)
def lab_nb(request):
    return get_lab(request.param), _read(request.param)


def test_sections_in_order(lab_nb):
    lab, nb = lab_nb
    q = lab.question
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert markdown and markdown[0].startswith(f"# {q.id} · {q.title}"), "the first cell is the title"
    assert q.summary in markdown[0]
    positions = []
    for name, heading in SECTIONS.items():
        hits = [k for k, text in enumerate(markdown) if re.search(rf"^{re.escape(heading)}$", text, re.M)]
        assert hits, f"{lab.id}: no {name!r} section ({heading})"
        positions.append(hits[0])
    assert positions == sorted(positions), f"{lab.id}: sections out of order"
    claims_md = next(t for t in markdown if t.startswith(SECTIONS["claims"]))
    for claim in q.claims:
        assert f"`{claim.id}`" in claims_md and claim.text in claims_md and claim.reading in claims_md


def test_setup_run_plots_targets_verdicts_cells(lab_nb):
    lab, nb = lab_nb
    setup = _cell_with(nb, "get_lab(")
    assert f'lab = get_lab("{lab.id}")' in setup.source and re.search(r"^SEED = \d+$", setup.source, re.M)
    assert "text/html" in _mimes(_cell_with(nb, "result = lab.run(seed=SEED)")), "the metrics table is shown"
    plots = _cell_with(nb, "lab.plots(result)")
    images = [o for o in plots.outputs if "image/png" in o.get("data", {})  # a matplotlib figure
              or "vegaEmbed" in "".join(o.get("data", {}).get("text/html", ""))]  # or an Altair chart
    assert images, f"{lab.id}: the plot cell shows no chart (image/png or Vega-Lite) output"
    assert len(images) == len([o for o in plots.outputs if o.get("output_type") == "display_data"])
    assert "text/html" in _mimes(_cell_with(nb, "result.metric_table(lab.question)"))
    assert "text/html" in _mimes(_cell_with(nb, "verdict_table = pd.DataFrame("))


def test_executed_cleanly(lab_nb):
    lab, nb = lab_nb
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    counts = [c.execution_count for c in _code(nb)]
    assert counts == list(range(1, len(counts) + 1)), f"{lab.id}: not executed top to bottom in one kernel"
    for k, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{lab.id}: cell {k} stored an error"
            assert not (out.output_type == "stream" and out.name == "stderr"), \
                f"{lab.id}: cell {k} wrote to stderr (warnings carry machine-specific paths): {out.text[:200]}"
            text = out.get("text", "") + "".join(v for m, v in out.get("data", {}).items() if m.startswith("text/"))
            assert not re.search(r"\belapsed", text), f"{lab.id}: cell {k} prints a wall time, which no rerun reproduces"


def test_exercises_have_prediction_and_hidden_solution(lab_nb):
    lab, nb = lab_nb
    solutions = [k for k, c in enumerate(nb.cells) if SOLUTION_TAG in c.metadata.get("tags", [])]
    assert len(solutions) == len(lab.exercises), f"{lab.id}: one solution cell per exercise"
    for k, ex in zip(solutions, lab.exercises):
        prompt, guess, solution = nb.cells[k - 2], nb.cells[k - 1], nb.cells[k]
        assert prompt.cell_type == "markdown" and "predict, then run" in prompt.source.lower()
        assert ex.prompt in prompt.source
        assert guess.cell_type == "code" and guess.source.startswith("prediction = None")
        assert solution.cell_type == "code" and solution.metadata.get("jupyter", {}).get("source_hidden") is True
        assert "lab.run(seed=SEED, " in solution.source and all(f"{name}=" in solution.source for name in ex.changes)
        assert repr(ex.watch[1]) in solution.source and solution.outputs, f"{lab.id}: solution not executed"


def test_assert_cells_cover_every_claim(lab_nb):
    lab, nb = lab_nb
    per_cell = [[m["id"] for m in ASSERT_VERDICT.finditer(c.source)] for c in _code(nb)]
    asserted = [ids[0] for ids in per_cell if ids]
    assert all(len(ids) <= 1 for ids in per_cell), "one claim per assert cell, so nbval names the claim that flipped"
    assert sorted(asserted) == sorted(c.id for c in lab.question.claims), f"{lab.id}: assert cells vs claims"
    headline = _cell_with(nb, "lab.headline")
    assert "math.isfinite(value)" in headline.source


def test_notebook_is_up_to_date(lab_nb):
    """The stored cells are what the generator writes for the current lab and catalogue."""
    lab, nb = lab_nb
    verdicts, interval = stored_expectations(nb)
    fresh = build_notebook(lab, verdicts, interval)
    stored = [(c.cell_type, c.source, c.metadata.get("tags"), c.metadata.get("jupyter")) for c in nb.cells]
    wanted = [(c.cell_type, c.source, c.metadata.get("tags"), c.metadata.get("jupyter")) for c in fresh.cells]
    assert stored == wanted, f"{lab.id}: the notebook was built from an older lab or catalogue; " + REGENERATE.format(lab.id)
