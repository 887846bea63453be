"""The real serving harness and the calibration report: it starts, serves, measures, stops.

Runs a real server on 127.0.0.1 for a few seconds. Asserts shape and sanity, never a
tolerance between real and simulated latencies (the machine is shared and noisy).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labs import calibration as cal

ROOT = Path(__file__).resolve().parent.parent


def _children(pid: int) -> set[int]:
    """Live direct children of ``pid`` (from /proc), zombies excluded."""
    kids = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" in cmd:  # multiprocessing's helper: lives as long as this process, by design
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.add(int(d.name))
    return kids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to see child processes")
def test_short_calibration_serves_measures_and_stops(tmp_path):
    before = _children(os.getpid())
    logs = []
    rep = cal.calibrate("q11", loads=(0.3,), reps=1, requests=200, modes=("no_batching",), log=logs.append)
    time.sleep(0.2)
    assert _children(os.getpid()) <= before, "a server or generator process outlived the calibration"
    assert not [c for c in mp.active_children() if "Loky" not in type(c).__name__]  # joblib keeps its own pool
    assert rep["meta"]["cpu"] and rep["meta"]["versions"]["torch"] and rep["meta"]["loadavg_start"]
    (row,) = rep["rows"]
    assert row["mode"] == "no_batching" and row["load"] == 0.3
    assert row["diagnostics"]["completed"] == 200 and row["diagnostics"]["abandoned"] == 0
    assert row["real_latency_summary"]["n"] == 200
    svc_ms = rep["profiles"]["no_batching"]["p50_us"]["1"] / 1e3
    for k in ("p50", "p95", "p99"):
        assert row["real"][k]["estimate"] > svc_ms  # a request costs at least one model call
    assert row["real"]["p50"]["estimate"] <= row["real"]["p99"]["estimate"]
    for name in ("model", "model+overhead"):
        p = row["predictions"][name]
        assert 0 <= p["ks_distance"] <= 1
        for k in ("p50", "p99"):
            assert p[k]["estimate"] > 0 and p[k]["verdict"] in {"equivalent", "different", "underpowered"}
    # the measured overhead is kept raw, and the overhead prediction is never below the model-only one
    assert len(rep["probe"]["per_request_overhead_us"]) == rep["probe"]["requests"] > 0
    assert row["predictions"]["model+overhead"]["p50"]["estimate"] >= row["predictions"]["model"]["p50"]["estimate"]
    path = cal.write_report(rep, tmp_path / "q11.json")
    again = json.loads(path.read_text())
    assert again["rows"][0]["mode"] == "no_batching" and "facet" in again["chart"]
    assert cal.summary_lines(again)[0].startswith("Calibrated ")
    assert any("server up" in line for line in logs)


def test_server_that_cannot_start_exits_2_with_one_line(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, "-m", "faces.cli", "calibrate", "q11", "--port", str(port),
                               "--loads", "0.3", "--reps", "1", "--requests", "100", "--out",
                               str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120,
                              cwd=ROOT, env=env)
    finally:
        taken.close()
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("archlab:")]
    assert len(lines) == 1 and "127.0.0.1" in lines[0] and "did not start" in lines[0]
    assert not (tmp_path / "r.json").exists()


def test_tost_verdicts():
    import numpy as np

    rng = np.random.default_rng(0)
    real = [rng.exponential(1.0, 4000) for _ in range(4)]
    same = [rng.exponential(1.0, 4000) for _ in range(4)]
    far = [x * 2 for x in same]
    assert cal.tost(real, same, 50, 0.10, 4)["verdict"] == "equivalent"
    assert cal.tost(real, far, 50, 0.10, 4)["verdict"] == "different"
    small = [rng.exponential(1.0, 60)]
    t = cal.tost(small, [rng.exponential(1.0, 60)], 99, 0.20, 1)
    assert t["verdict"] == "underpowered" and t["reps_to_decide"] > 1


def test_unknown_lab_and_bad_loads_are_refused():
    with pytest.raises(cal.CalibrationError):
        cal.calibrate("q08")
    with pytest.raises(cal.CalibrationError):
        cal.calibrate("q11", loads=(2.0,))


def test_last_report_is_none_or_complete():
    rep = cal.last_report("q11")
    if rep is not None:
        assert {"meta", "rows", "probe", "chart"} <= set(rep)
        assert cal.summary_lines(rep)
    assert cal.last_report("q99") is None
