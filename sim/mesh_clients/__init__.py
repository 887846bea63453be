"""Two real callers of a model service: one doing mTLS, retries, budget and telemetry in code, one behind a sidecar.

``cross_cutting_lines`` counts each module's logical lines (``tokenize``: lines holding code
tokens; comments, blank lines and docstrings do not count). The modules are shipped and
tested against ``sim.mtls.LoopbackServer``; their sizes are this lab's choice of how much a
service does for itself, so a lab that uses the count must call it assumed.
"""
from __future__ import annotations

import ast
import functools
import io
import tokenize
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = {"in_code": HERE / "in_code.py", "with_mesh": HERE / "with_mesh.py"}


def logical_lines(source: str) -> int:
    """Lines that hold a code token, docstrings (module, class, function) excluded."""
    tree = ast.parse(source)
    doc_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                doc_lines.update(range(first.lineno, first.end_lineno + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines - doc_lines)


@functools.lru_cache(maxsize=1)
def cross_cutting_lines() -> dict[str, int]:
    return {name: logical_lines(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}
