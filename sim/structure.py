"""Code structure measured on real source trees: diffs, definitions, import graphs, contracts.

- Line counts follow ``git diff --no-index --numstat`` (REFERENCES.md §24): one record per file,
  ``added<TAB>deleted<TAB>path``; an edited line counts once as added and once as deleted; a new
  file is all added, a removed one all deleted. We run git itself (``-z`` so paths need no
  unquoting) on two folders and strip the folder prefixes from the paths.
- A top-level definition is one statement of a module's body (function, class, assignment, import,
  docstring), keyed by the names it binds and compared by ``ast.dump`` (no line numbers), so moving
  code without editing it is no change. A changed definition is one whose dump differs, or that
  exists on one side only; the share is over the union of both sides' definitions.
- The import graph is grimp's (``build_graph``; ``find_downstream_modules`` gives a module's direct
  and indirect importers). Modules with no code (empty ``__init__``) are left out of the graph.
- Propagation cost (MacCormack, Rusnak & Baldwin 2006, REFERENCES.md §28) is the density of the
  visibility matrix: for each module, the share of modules it reaches through reverse imports,
  itself included (the matrix's diagonal), averaged over all modules. ``cascade`` is our variant:
  each importer of a changed module changes with probability ``p``, decided once per module;
  ``p = 1`` gives the module's full reach.
- Contracts are import-linter's (``forbidden`` and friends), read from an ini file and checked
  in-process on a tree put on ``sys.path`` for the duration.
"""
from __future__ import annotations

import ast
import contextlib
import shutil
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np


@dataclass(frozen=True)
class FileChange:
    path: str
    added: int
    deleted: int


def python_files(root: Path) -> dict[str, str]:
    """Every ``.py`` file under ``root`` that holds code, by posix path relative to ``root``."""
    root = Path(root)
    out = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        if text.strip():
            out[path.relative_to(root).as_posix()] = text
    return out


def materialise(base: Path, dest: Path, overlays: Iterable[Path] = ()) -> Path:
    """Copy ``base`` to ``dest`` and lay each overlay folder over it (its files replace or add)."""
    dest = Path(dest)
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    for overlay in overlays:
        shutil.copytree(overlay, dest, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    return dest


def numstat(before: Path, after: Path) -> list[FileChange]:
    """``git diff --no-index --numstat`` between two folders, paths relative to each folder."""
    before, after = Path(before).resolve(), Path(after).resolve()
    cwd = before.parent if before.parent == after.parent else Path("/")
    a, b = (str(before.relative_to(cwd)), str(after.relative_to(cwd))) if cwd != Path("/") else (str(before), str(after))
    proc = subprocess.run(["git", "-c", "core.quotepath=off", "diff", "--no-index", "--numstat", "-z", a, b],
                          cwd=cwd, capture_output=True, text=True, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    if proc.returncode not in (0, 1):  # 1 means "the folders differ"
        raise RuntimeError(f"git diff failed: {proc.stderr.strip()}")
    tokens = proc.stdout.split("\0")
    out, i = [], 0
    while i < len(tokens) - 1:
        head = tokens[i]
        if not head:
            i += 1
            continue
        added, deleted, path = head.split("\t", 2)
        if path == "":  # a rename-style record: the two paths follow
            src, dst = tokens[i + 1], tokens[i + 2]
            i += 3
        else:
            src = dst = path
            i += 1
        name = dst if dst != "/dev/null" else src
        for prefix in (b.lstrip("/") + "/", a.lstrip("/") + "/"):
            if name.lstrip("/").startswith(prefix):
                name = name.lstrip("/")[len(prefix):]
                break
        out.append(FileChange(name, 0 if added == "-" else int(added), 0 if deleted == "-" else int(deleted)))
    return sorted(out, key=lambda c: c.path)


def count_lines(files: Mapping[str, str]) -> int:
    return sum(len(text.splitlines()) for text in files.values())


def top_level_definitions(text: str) -> dict[str, str]:
    """A module's top-level statements keyed by the names they bind, valued by ``ast.dump``."""
    out: dict[str, str] = {}
    for k, node in enumerate(ast.parse(text).body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = ["import " + (a.asname or a.name) for a in node.names]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)] or [f"<statement {k}>"]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        elif k == 0 and isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant):
            names = ["__doc__"]
        else:
            names = [f"<statement {k}>"]
        for name in names:
            if isinstance(node, (ast.Import, ast.ImportFrom)):  # one key per bound name: what it is bound to
                alias = next(a for a in node.names if "import " + (a.asname or a.name) == name)
                out[name] = f"{'.' * getattr(node, 'level', 0)}{getattr(node, 'module', '') or ''}:{alias.name}"
            else:
                out[name] = ast.dump(node)
    return out


def definitions(files: Mapping[str, str]) -> dict[str, str]:
    """Every top-level definition of a tree, keyed ``path:name``."""
    return {f"{path}:{name}": dump for path, text in files.items() for name, dump in top_level_definitions(text).items()}


def changed_definitions(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[set[str], int]:
    """(changed ``path:name`` keys, size of the union) between two trees' files."""
    a, b = definitions(before), definitions(after)
    keys = set(a) | set(b)
    return {k for k in keys if a.get(k) != b.get(k)}, len(keys)


def module_of(path: str) -> str:
    parts = path[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@contextlib.contextmanager
def on_path(root: Path):
    """Put ``root`` first on ``sys.path``; packages of the same names imported from elsewhere are set
    aside meanwhile (so the tree's own copy is the one found), and modules imported from it are forgotten."""
    import importlib

    root = str(Path(root).resolve())
    names = {p.name for p in Path(root).iterdir() if p.is_dir() or p.suffix == ".py"} if Path(root).is_dir() else set()
    names = {n[:-3] if n.endswith(".py") else n for n in names}
    stashed = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in names}
    sys.path.insert(0, root)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(root)
        for k in [k for k in sys.modules if k.split(".")[0] in names]:
            del sys.modules[k]
        sys.modules.update(stashed)
        importlib.invalidate_caches()


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """``{module: modules it imports}`` inside ``package`` (grimp), over modules that hold code."""
    import grimp

    keep = {module_of(p) for p in python_files(Path(root) / package)}
    keep = {f"{package}.{m}" if m else package for m in keep}
    with on_path(root):
        graph = grimp.build_graph(package, cache_dir=None)
    return {m: {i for i in graph.find_modules_directly_imported_by(m) if i in keep} for m in sorted(keep)}


def importers_of(imports: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Reverse the graph: ``{module: modules that import it directly}``."""
    out: dict[str, set[str]] = {m: set() for m in imports}
    for m, targets in imports.items():
        for t in targets:
            out.setdefault(t, set()).add(m)
    return out


def reach(importers: Mapping[str, set[str]], module: str) -> set[str]:
    """The module and every module that imports it, directly or not (the visibility matrix's row)."""
    seen, todo = {module}, deque([module])
    while todo:
        for i in importers.get(todo.popleft(), ()):
            if i not in seen:
                seen.add(i)
                todo.append(i)
    return seen


def downstream(root: Path, package: str, module: str) -> set[str]:
    """grimp's ``find_downstream_modules`` for one module (the importers a change reaches)."""
    import grimp

    with on_path(root):
        graph = grimp.build_graph(package, cache_dir=None)
    return set(graph.find_downstream_modules(module))


def propagation_cost(importers: Mapping[str, set[str]]) -> float:
    """Mean over modules of |reach(m)| / N: the density of the visibility matrix, diagonal included."""
    n = len(importers)
    return float(np.mean([len(reach(importers, m)) / n for m in importers])) if n else float("nan")


def cascade(importers: Mapping[str, set[str]], start: str, p: float, rng: np.random.Generator) -> set[str]:
    """Modules changed when ``start`` changes and each importer of a changed module follows with probability p."""
    changed, decided, todo = {start}, {start}, deque([start])
    while todo:
        for i in sorted(importers.get(todo.popleft(), ())):
            if i in decided:
                continue
            decided.add(i)
            if rng.random() < p:
                changed.add(i)
                todo.append(i)
    return changed


@contextlib.contextmanager
def _quiet_rich(use_cases):
    """import-linter shows a spinner and a live panel on rich's console (in a notebook: as cell output);
    send both to a throw-away console for the duration."""
    import io
    import warnings

    import rich.console

    quiet = rich.console.Console(file=io.StringIO(), force_jupyter=False, force_terminal=False)
    saved = (rich._console, use_cases.console)
    rich._console, use_cases.console = quiet, quiet
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        rich._console, use_cases.console = saved


@dataclass(frozen=True)
class ContractReport:
    kept: int
    broken: int
    names: tuple[str, ...]
    broken_names: tuple[str, ...]


def lint_contracts(root: Path, config: Path) -> ContractReport:
    """Check the import-linter contracts in ``config`` against the packages under ``root``."""
    from importlinter import configuration
    from importlinter.application import use_cases

    configuration.configure()
    with on_path(root), _quiet_rich(use_cases):
        options = use_cases.read_user_options(str(config))
        use_cases._register_built_in_contract_types()
        report = use_cases.create_report(options, cache_dir=None)
    names, broken = [], []
    for contract, check in report.get_contracts_and_checks():
        names.append(contract.name)
        if not check.kept:
            broken.append(contract.name)
    return ContractReport(len(names) - len(broken), len(broken), tuple(names), tuple(broken))
