"""The five steps of a small ML workflow, run for real and timed: the saga lab's service times.

``STEPS`` are prepare_data (draw a stratified subset of scikit-learn's digits and
standardise it), train (a ``LogisticRegression`` on that subset), evaluate (test-set
accuracy), register (pickle the model, hash it, store it in a dict registry) and deploy
(unpickle it from the registry and warm it up on a batch). ``measure_steps`` runs the
whole workflow ``repeats`` times with different subsets and records each step's wall
time, plus the cost of one durable-log append (a JSON line written and ``os.fsync``-ed
to a file, and the same line without fsync). Training really happens, so a re-executed
or retried training step costs what training costs on this machine.

The measurement is kept in the disk cache (``sim.cache``) keyed by its arguments and the
bytes of this file, so only the first run on a machine pays; ``reference_steps`` reads the
committed measurement ``data/profiles/saga_steps.json`` (``python -m sim.ml_pipeline
--write`` regenerates it), which every machine shares so runs are reproducible.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from .cache import DiskCache

STEPS = ("prepare_data", "train", "evaluate", "register", "deploy")
CACHE = DiskCache("saga_steps", code=[__file__])
REFERENCE = Path(__file__).resolve().parent.parent / "data" / "profiles" / "saga_steps.json"


def _digits():
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


def run_workflow_once(seed: int, train_rows: int = 600) -> tuple[dict[str, float], float]:
    """Run the five steps once for real; (seconds per step, test accuracy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = _digits()
    times: dict[str, float] = {}
    registry: dict[str, bytes] = {}

    t = time.perf_counter()  # prepare_data: a stratified subset, scaled, held as an artifact
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, train_size=train_rows, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(X_tr)
    artifact = io.BytesIO()
    np.save(artifact, scaler.transform(X_tr).astype(np.float32))
    times["prepare_data"] = time.perf_counter() - t

    t = time.perf_counter()  # train
    artifact.seek(0)
    model = LogisticRegression(max_iter=300, random_state=seed).fit(np.load(artifact), y_tr)
    times["train"] = time.perf_counter() - t

    t = time.perf_counter()  # evaluate
    accuracy = float(np.mean(model.predict(scaler.transform(X_te)) == y_te))
    times["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()  # register: serialise, fingerprint, store
    blob = pickle.dumps((scaler, model), protocol=pickle.HIGHEST_PROTOCOL)
    registry[hashlib.sha256(blob).hexdigest()] = blob
    times["register"] = time.perf_counter() - t

    t = time.perf_counter()  # deploy: load from the registry and warm up
    served_scaler, served = pickle.loads(next(iter(registry.values())))
    served.predict(served_scaler.transform(X_te[:32]))
    times["deploy"] = time.perf_counter() - t
    return times, accuracy


def time_log_appends(n: int = 40) -> dict[str, list[float]]:
    """Seconds per durable-log append: a JSON line written then fsync-ed, and written without fsync."""
    out: dict[str, list[float]] = {"fsync": [], "memory": []}
    fd, path = tempfile.mkstemp(prefix="saga-log-")
    try:
        for k in range(n):
            line = json.dumps({"workflow": k, "event": "step_completed", "step": "train"}).encode() + b"\n"
            t = time.perf_counter()
            os.write(fd, line)
            os.fsync(fd)
            out["fsync"].append(time.perf_counter() - t)
            t = time.perf_counter()
            os.write(fd, line)
            out["memory"].append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    return out


def measure(repeats: int = 15, train_rows: int = 600) -> dict:
    """A fresh measurement (no cache): {"steps": {step: [s, ...]}, "log_append": {...}, "accuracy": [...]}."""
    steps: dict[str, list[float]] = {s: [] for s in STEPS}
    accuracy = []
    run_workflow_once(0, train_rows)  # warm-up: imports, first-call costs
    for r in range(repeats):
        times, acc = run_workflow_once(r + 1, train_rows)
        for s in STEPS:
            steps[s].append(times[s])
        accuracy.append(acc)
    return {"steps": steps, "log_append": time_log_appends(), "accuracy": accuracy,
            "repeats": repeats, "train_rows": train_rows}


@functools.lru_cache(maxsize=4)
def measure_steps(repeats: int = 15, train_rows: int = 600) -> dict:
    """This machine's measurement, from the disk cache once measured (fixed within a process)."""
    key = {"repeats": repeats, "train_rows": train_rows, "python": platform.python_version()}
    got = CACHE.get_json("steps", key)
    if got is None or set(got.get("steps", {})) != set(STEPS):
        got = measure(repeats, train_rows)
        CACHE.put_json("steps", key, got)
    return got


@functools.lru_cache(maxsize=1)
def reference_steps() -> dict:
    """The committed measurement (``data/profiles/saga_steps.json``), the same on every machine."""
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def quantile_times(samples, u: np.ndarray) -> np.ndarray:
    """Times at quantiles ``u`` of the measured samples (linear interpolation): common random numbers."""
    x = np.sort(np.asarray(samples, dtype=float))
    u = np.asarray(u, dtype=float)
    return np.interp(u * (x.size - 1), np.arange(x.size), x)


if __name__ == "__main__":  # python -m sim.ml_pipeline [--write]
    import sys

    got = measure()
    got["provenance"] = {"python": platform.python_version(), "machine": platform.machine(),
                         "loadavg_1m": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d"),
                         "generated_by": "python -m sim.ml_pipeline --write"}
    if "--write" in sys.argv:
        REFERENCE.write_text(json.dumps(got, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({s: float(np.median(v)) for s, v in got["steps"].items()}, indent=1))
