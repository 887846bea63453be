"""A sample scoring service in two styles and its test suite, run with and without the ML libraries.

``service_injected`` takes its predictor as a constructor argument (what a container injects);
``service_hardwired`` imports scikit-learn and builds its model itself. ``check_injected`` and
``check_hardwired`` test the same behaviours; each also smoke-tests every configured variant's
real artifact (``test_variant_artifact[k]``), which needs the real libraries in either style.
``run_suite`` runs one style's suite in a fresh interpreter, optionally with torch and sklearn
unimportable, and returns each test's outcome.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STYLES = ("injected", "hardwired")
MAX_VARIANTS = 12

_RUNNER = r"""
import importlib.abc, json, sys
BLOCKED = {"torch", "sklearn"} if sys.argv[1] == "1" else set()

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed here")
        return None

sys.meta_path.insert(0, Block())
import pytest

class Collect:
    def __init__(self):
        self.out = {}
    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            self.out.setdefault(report.nodeid.split("::", 1)[-1], report.outcome)
    def pytest_collectreport(self, report):
        if report.failed:
            self.out["<collection>"] = "failed"

c = Collect()
pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-o", "addopts=", "-o", "python_files=check_*.py",
             "--rootdir", sys.argv[2], sys.argv[3]], plugins=[c])
print("RESULT " + json.dumps(c.out))
"""


def run_suite(style: str, block_ml: bool, artifacts: dict, timeout_s: float = 120.0) -> dict[str, str]:
    """{test name: passed | failed | skipped} for one style's suite (a collection failure fails every test)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    env = {**os.environ, "DI_SAMPLE_SKLEARN": str(artifacts["sklearn"]), "DI_SAMPLE_TORCH": str(artifacts["torch"]),
           "PYTHONPATH": str(HERE.parent.parent), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", _RUNNER, "1" if block_ml else "0", str(HERE),
                           str(HERE / f"check_{style}.py")], capture_output=True, text=True, env=env,
                          timeout=timeout_s, cwd=str(HERE))
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"the {style} suite did not report: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(line[len("RESULT "):])
