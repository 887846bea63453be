"""The sweep engine from the command line: same bytes on any backend, resumable, a static scoreboard.

Every subprocess here runs on a cache folder of its own under pytest's tmp_path (never the user's).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SWEEP = ["sweep", "q08", "--vary", "client_timeout_s=1,5,30", "--vary", "outage_mode=hang,error", "--reps", "3",
         "--set", "requests=1000", "--set", "outage_start_s=10", "--set", "outage_duration_s=20", "--format", "json"]
TOTAL = 3 * 2 * 3


def _env(cache: Path, **extra) -> dict:
    return {**os.environ, "ARCHLAB_CACHE": str(cache), **extra}


def archlab(*args, cache: Path, timeout=120, **env):
    return subprocess.run([sys.executable, "-m", "faces.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(cache, **env))


def _entries(cache: Path) -> int:
    return sum(1 for _ in cache.glob("replications-q08-*/point-*.manifest.json"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
    r = archlab(*SWEEP, "--backend", "loky", "--jobs", "1", "--no-cache", cache=tmp_path_factory.mktemp("ref"))
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert len({(x["client_timeout_s"], x["outage_mode"]) for x in rows}) == 6
    assert all(x["reps"] == 3 for x in rows)
    assert any(x["claims"] for x in rows)  # the claims' verdicts per cell
    return r.stdout


@pytest.mark.parametrize("backend,fork", [(["--backend", "loky", "--jobs", "2"], "1"),
                                          (["--backend", "loky", "--jobs", "2"], "0"),
                                          (["--backend", "dask", "--jobs", "2"], "1")],
                         ids=["forked-2", "loky-2", "dask-local-2"])
def test_sweep_is_byte_identical_on_every_backend(reference, backend, fork, tmp_path):
    if "dask" in backend:
        pytest.importorskip("distributed")
    r = archlab(*SWEEP, *backend, "--no-cache", cache=tmp_path, ARCHLAB_LOCAL_FIRST_S="0", ARCHLAB_FORK=fork)
    assert r.returncode == 0, r.stderr
    assert r.stdout == reference
    assert f"{TOTAL}/{TOTAL} tasks" in r.stderr and "left" in r.stderr  # progress with an estimate
    assert _entries(tmp_path) == 0  # --no-cache writes nothing


def test_interrupted_sweep_resumes_and_a_repeat_is_free(reference, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "faces.cli", *SWEEP, "--jobs", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    try:
        for line in proc.stderr:
            m = re.search(r"(\d+)/(\d+) tasks", line)
            if m and int(m.group(1)) >= 5:
                break
        proc.kill()
    finally:
        proc.kill()
        proc.wait(30)
        proc.stderr.close()
    done = _entries(tmp_path)
    assert 5 <= done < TOTAL, "kill came too late to test a resume"
    r = archlab(*SWEEP, "--jobs", "1", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    first = r.stderr.splitlines()[0]
    assert f"{done}/{TOTAL} tasks ({done} cached)" in first  # only the remaining tasks run
    assert r.stdout == reference  # resumed = computed in one go
    assert _entries(tmp_path) == TOTAL
    again = archlab(*SWEEP, "--jobs", "2", cache=tmp_path)
    assert again.returncode == 0 and again.stdout == reference
    assert again.stderr.strip().splitlines()[-1].startswith(f"sweep q08: {TOTAL}/{TOTAL} tasks ({TOTAL} cached)")


def test_dask_scheduler_address(reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        r = archlab(*SWEEP, "--backend", "dask", "--scheduler", c.scheduler_address, "--no-cache", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == reference


def test_report_is_one_static_page_with_local_references_only(tmp_path):
    out = tmp_path / "site"
    r = archlab("report", "q08", "--out", str(out), cache=tmp_path / "cache", timeout=300)
    assert r.returncode == 0, r.stderr
    page = (out / "index.html").read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page, flags=re.I)
    assert all(not re.match(r"^([a-z][a-z0-9+.-]*:|//)", u, flags=re.I) for u in refs), refs
    assert "<script" not in page.lower() and "@import" not in page and "url(" not in page
    assert "<svg" in page and "q08.opens_on_half_errors" in page
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    claims = {c["id"]: c for c in data["labs"][0]["claims"]}
    opens = claims["q08.opens_on_half_errors"]
    assert opens["verdict"] == "conditional" and opens["regime_map"]["spec"]["$schema"].startswith("https://")


@pytest.mark.parametrize("args, needle", [
    (["check", "q08", "--backend", "spark"], "--backend"),
    (["sweep", "q08", "--vary", "client_timeout_s=1", "--backend", "dask", "--scheduler", "tcp://127.0.0.1:9",
      "--scheduler-timeout", "1"], "scheduler"),
    (["check", "q08", "--scheduler", "tcp://127.0.0.1:9"], "--scheduler needs --backend dask"),
    (["check", "q08", "--reps", "0"], "--reps"),
    (["report", "q08", "--out", "x", "--jobs", "0"], "--jobs"),
])
def test_bad_engine_input_exits_2_with_one_line(args, needle, tmp_path):
    if "dask" in args:
        pytest.importorskip("distributed")
    r = archlab(*args, cache=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_dask_missing_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['distributed'] = None\n"
            "from faces.cli import main\n"
            "sys.exit(main(['sweep', 'q08', '--vary', 'client_timeout_s=1', '--backend', 'dask']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env(tmp_path))
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install" in lines[0] and "cluster" in lines[0]


def test_replicated_check_reports_replications_needed():
    from labs.claims import point_verdict
    from labs.registry import get_lab
    from labs.sweeps import Point, replicate

    lab = get_lab("q08")
    claim = next(c for c in lab.question.claims if c.id == "q08.error_rate_threshold")  # >= 50
    pts = [Point({"pattern": {claim.metric: x}}, {}, {}, 0.0) for x in (49.0, 52.0, 55.0)]
    p = replicate(pts)
    assert p.metrics["pattern"][claim.metric] == pytest.approx(52.0)
    lo, hi = p.intervals["pattern"][claim.metric]
    assert lo < 50 < hi
    v = point_verdict(claim, p.metrics, p.intervals, p.reasons, reps=3)
    assert v.verdict == "inconclusive" and "replications (not 3) would decide it" in v.detail
    tight = replicate([Point({"pattern": {claim.metric: x}}, {}, {}, 0.0) for x in (60.0, 60.5, 61.0)])
    assert point_verdict(claim, tight.metrics, tight.intervals, tight.reasons, reps=3).verdict == "holds"


def test_task_seeds_ignore_order_and_worker():
    from labs.sweeps import check_seeds, replication_seed

    a = replication_seed("q08", {"requests": 1000, "outage_mode": "hang"}, 2)
    assert a == replication_seed("q08", {"outage_mode": "hang", "requests": 1000}, 2)
    assert a != replication_seed("q08", {"outage_mode": "hang", "requests": 1000}, 1)
    assert check_seeds("q08", 7, {"requests": 1000}, 1) == [7]  # one replication: the seed itself, as before
    assert len(set(check_seeds("q08", 7, {"requests": 1000}, 4))) == 4


def test_replicated_claim_check_through_the_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHLAB_CACHE", str(tmp_path))
    from labs.claims import SweepRunner, check_claim
    from labs.registry import get_lab

    lab = get_lab("q08")
    claim = next(c for c in lab.question.claims if c.id == "q08.opens_on_half_errors")
    base = dict(lab.settings({"requests": 1000, "outage_start_s": 10, "outage_duration_s": 20}))
    seen = []
    runner = SweepRunner(lab, 0, base, reps=2, task_progress=lambda d, t, c: seen.append((d, t, c)))
    v = check_claim(claim, runner)
    assert v.verdict in ("holds", "fails", "conditional", "inconclusive")
    assert v.grid and all(c["low"] is not None or c["verdict"] in ("not_measured", "skipped") for c in v.grid)
    assert seen and seen[-1][0] == seen[-1][1]
    again = SweepRunner(lab, 0, base, reps=2)  # a second check of the same settings reads the cache
    assert check_claim(claim, again).to_dict(full=True) == v.to_dict(full=True)
