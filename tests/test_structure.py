"""sim.structure against its references: git's numstat, ast definitions, grimp reach, propagation cost."""
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from sim import structure as S

CODE = Path(__file__).resolve().parent.parent / "data" / "code" / "q01"


def _tree(root: Path, files: dict) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def two_trees(tmp_path):
    before = _tree(tmp_path / "before", {
        "pkg/a.py": "X = 1\nY = 2\n\n\ndef f():\n    return X\n",
        "pkg/gone.py": "Z = 3\n",
        "pkg/same.py": "def g():\n    return 1\n\n\ndef h():\n    return 2\n",
        "pkg/__init__.py": ""})
    after = _tree(tmp_path / "after", {
        "pkg/a.py": "X = 1\nY = 5\n\n\ndef f():\n    return X\n\n\ndef k():\n    return Y\n",
        "pkg/new.py": "W = 4\n",
        "pkg/same.py": "def h():\n    return 2\n\n\ndef g():\n    return 1\n",  # reordered, not edited
        "pkg/__init__.py": ""})
    return before, after


def test_numstat_matches_hand_counts_and_gits_own_text_output(two_trees):
    before, after = two_trees
    got = {c.path: (c.added, c.deleted) for c in S.numstat(before, after)}
    # a.py: Y edited (1+1), k added with its blank lines (4 added); gone.py deleted; new.py added;
    # same.py: git sees a reorder as lines removed and added, even though no definition changed
    assert got["pkg/a.py"] == (5, 1)
    assert got["pkg/gone.py"] == (0, 1)
    assert got["pkg/new.py"] == (1, 0)
    assert got["pkg/same.py"][0] == got["pkg/same.py"][1] > 0
    text = subprocess.run(["git", "diff", "--no-index", "--numstat", "before", "after"], cwd=before.parent,
                          capture_output=True, text=True).stdout
    plain = {}
    for line in text.splitlines():  # "{before => after}/pkg/a.py", "before/x => /dev/null", "/dev/null => after/x"
        a, d, path = line.split("\t")
        if path.startswith("{before => after}/"):
            name = path[len("{before => after}/"):]
        else:
            src, dst = path.split(" => ")
            name = (dst if dst != "/dev/null" else src).split("/", 1)[1]
        plain[name] = (int(a), int(d))
    assert plain == got


def test_changed_definitions_ignore_moves_and_count_the_union(two_trees):
    before, after = two_trees
    changed, total = S.changed_definitions(S.python_files(before), S.python_files(after))
    assert changed == {"pkg/a.py:Y", "pkg/a.py:k", "pkg/gone.py:Z", "pkg/new.py:W"}
    # before: X Y f | Z | g h ; after adds k and W: a union of 8 (the empty __init__ holds no code)
    assert total == 8
    assert "pkg/__init__.py" not in S.python_files(before)


def test_propagation_cost_on_a_hand_computed_graph():
    # c imports b, b imports a, d stands alone: reach(a)={a,b,c}, reach(b)={b,c}, reach(c)={c}, reach(d)={d}
    imports = {"a": set(), "b": {"a"}, "c": {"b"}, "d": set()}
    importers = S.importers_of(imports)
    assert S.reach(importers, "a") == {"a", "b", "c"}
    assert S.propagation_cost(importers) == pytest.approx((3 + 2 + 1 + 1) / 16)
    # a diamond: one shared module reached by everything
    diamond = S.importers_of({"core": set(), "l": {"core"}, "r": {"core"}, "top": {"l", "r"}})
    assert S.propagation_cost(diamond) == pytest.approx((4 + 2 + 2 + 1) / 16)


def test_cascade_reaches_everything_at_p1_nothing_at_p0_and_1_plus_p_on_a_pair():
    importers = S.importers_of({"a": set(), "b": {"a"}, "c": {"b"}, "d": set()})
    rng = np.random.default_rng(0)
    assert S.cascade(importers, "a", 1.0, rng) == S.reach(importers, "a")
    assert S.cascade(importers, "a", 0.0, rng) == {"a"}
    pair = S.importers_of({"a": set(), "b": {"a"}})
    sizes = [len(S.cascade(pair, "a", 0.3, rng)) for _ in range(20000)]
    assert np.mean(sizes) == pytest.approx(1.3, abs=0.015)


def test_grimp_graph_reach_is_find_downstream_modules_plus_the_module():
    root = CODE / "before" / "hexagonal"
    imports = S.import_graph(root, "hexscorer")
    importers = S.importers_of(imports)
    for module in ("hexscorer.core.ports", "hexscorer.core.scoring", "hexscorer.adapters.fakes"):
        assert S.reach(importers, module) == S.downstream(root, "hexscorer", module) | {module}
    assert imports["hexscorer.core.scoring"] == {"hexscorer.core.decision", "hexscorer.core.features",
                                                 "hexscorer.core.ports"}


def test_contract_kept_and_seeded_violation_caught():
    ini = CODE / "contracts" / "hexagonal.ini"
    assert S.lint_contracts(CODE / "before" / "hexagonal", ini).broken == 0
    with tempfile.TemporaryDirectory() as tmp:
        seeded = S.materialise(CODE / "before" / "hexagonal", Path(tmp) / "s", [CODE / "seeded" / "hexagonal"])
        report = S.lint_contracts(seeded, ini)
        assert report.broken == 1 and report.kept == 0
        swapped = S.materialise(CODE / "before" / "hexagonal", Path(tmp) / "m", [CODE / "changes" / "swap_model" / "hexagonal"])
        assert S.lint_contracts(swapped, ini).broken == 0  # the swap never touches the core


def test_on_path_forgets_the_trees_modules():
    import sys

    with S.on_path(CODE / "before" / "monolith"):
        import monoscorer.app  # noqa: F401
    assert "monoscorer.app" not in sys.modules and str(CODE) not in " ".join(sys.path)
