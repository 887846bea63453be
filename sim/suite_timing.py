"""Time one acceptance suite in fresh interpreters: fakes versus real adapters.

A suite of n tests costs  T = start-up + I + S + n·t  in a fresh process, with I the imports its
test module pulls in, S the one-off fixture build (0 when fixtures are rebuilt per test) and t the
time per test (pytest's session vs function fixture scope). ``measure`` starts ``python -I
suite_child.py`` once per configuration and repeat, so every sample pays its own imports (nothing
is cached in ``sys.modules``), and records: start-up (wall time of the process minus what the
child timed itself), I, S, and t for both scopes (per check: the median over rounds; per test:
the mean over the suite's checks). ``suite_seconds`` evaluates T per repeat.

The model artefacts (a scikit-learn pipeline, a PyTorch layer) are trained once per folder in a
separate process first, so training never lands in a timing. Every child is ended by the call that
started it (``subprocess.run`` with a timeout).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHILD = Path(__file__).resolve().parent / "suite_child.py"


@dataclass(frozen=True)
class SuiteConfig:
    """One way to run the suite: the source tree (base + overlays), what the test module imports, the factory."""

    variant: str
    overlays: tuple[str, ...]
    imports: str
    make: str


def _materialise(code_dir: Path, cfg: SuiteConfig, dest: Path) -> Path:
    from .structure import materialise

    return materialise(code_dir / "before" / cfg.variant, dest,
                       [code_dir / "changes" / o / cfg.variant for o in cfg.overlays])


def train_artefacts(code_dir: Path, workdir: Path, torch: bool = True) -> None:
    """model.pkl (and model.pt) in ``workdir``, trained by the fixture's own training module in a subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = _materialise(code_dir, SuiteConfig("hexagonal", ("swap_model",), "", ""), Path(tmp) / "tree")
        calls = "train_sklearn(w)" + ("; train_torch(w)" if torch else "")
        code = (f"import sys; sys.path.insert(0, {str(tree)!r}); from hexscorer.training import train_sklearn; "
                f"from hexscorer.training_torch import train_torch; w = {str(workdir)!r}; {calls}")
        subprocess.run([sys.executable, "-I", "-c", code], check=True, timeout=600, capture_output=True)


def run_once(code_dir: Path, cfg: SuiteConfig, workdir: Path, rounds: int) -> dict:
    """One fresh interpreter running the suite under ``cfg``; its timings (seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = _materialise(code_dir, cfg, Path(tmp) / "tree")
        arg = json.dumps({"tree": str(tree), "suite_dir": str(code_dir), "workdir": str(workdir),
                          "imports": cfg.imports, "make": cfg.make, "rounds": int(rounds)})
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-I", str(CHILD), arg], capture_output=True, text=True,
                              timeout=600, env=env)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"suite child failed: {proc.stderr.strip()[-400:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["startup_s"] = max(wall - out.pop("inside_s"), 0.0)
    return out


def measure(code_dir: Path, configs: dict[str, SuiteConfig], repeats: int = 5, rounds: int = 10,
            workdir: Path | None = None) -> dict:
    """``{config: [sample per repeat]}``, repeats interleaved over configurations (load drifts hit all alike)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(workdir or tmp)
        need_torch = any("torch" in c.imports for c in configs.values())
        train_artefacts(Path(code_dir), work, torch=need_torch)
        out: dict[str, list] = {name: [] for name in configs}
        for _ in range(int(repeats)):
            for name, cfg in configs.items():
                out[name].append(run_once(Path(code_dir), cfg, work, rounds))
    return out


def suite_seconds(samples: list[dict], n_tests: int, scope: str, runner_overhead_s: float = 0.0) -> np.ndarray:
    """T = start-up + overhead + I + S + n·t per repeat; S is paid once with shared fixtures, never per test."""
    if scope not in ("shared", "per_test"):
        raise ValueError(f"scope must be shared or per_test, got {scope!r}")
    return np.array([s["startup_s"] + runner_overhead_s + s["import_s"]
                     + (s["setup_s"] + n_tests * s["t_shared_s"] if scope == "shared" else n_tests * s["t_per_test_s"])
                     for s in samples])


def provenance(extra: dict | None = None) -> dict:
    """CPU model, library versions, date and load: what a stored measurement was taken on."""
    from .cache import cpu_model, library_versions

    cpu, versions = cpu_model(), dict(library_versions())
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "versions": versions, "loadavg_1m": round(os.getloadavg()[0], 2),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(extra or {})}
