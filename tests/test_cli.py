"""The command line contract of DESIGN.md, driven as a user would (subprocess)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from labs.catalog import EVIDENCE
from labs.claims import VERDICTS


def archlab(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "faces.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_list_json_has_30_questions_and_marks_built():
    r = archlab("list", "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [q["id"] for q in rows] == [f"q{n:02d}" for n in range(1, 31)]
    assert {"id", "topic", "difficulty", "title", "built"} <= set(rows[0])
    assert next(q for q in rows if q["id"] == "q08")["built"] is True


def test_show_json_lists_params_and_metrics():
    r = archlab("show", "q08", "--format", "json")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert any(p["name"] == "failure_rate_threshold" for p in obj["params"])
    assert all({"key", "name", "formula", "target"} <= set(m) for m in obj["metrics"])


def test_run_json_contract_and_byte_identical_reruns():
    runs = [archlab("run", "q08", "--format", "json", "--seed", "3") for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    objs = [json.loads(r.stdout) for r in runs]
    assert set(objs[0]) == {"lab", "seed", "params", "metrics", "targets", "claims", "elapsed_s"}
    assert objs[0]["lab"] == "q08" and objs[0]["seed"] == 3
    for c in objs[0]["claims"]:
        assert set(c) == {"id", "text", "verdict", "evidence", "region", "detail"}
        assert c["verdict"] in VERDICTS and c["evidence"] in EVIDENCE and c["region"] is None
    strip = [r.stdout.splitlines() for r in runs]
    strip = [[line for line in s if '"elapsed_s"' not in line] for s in strip]
    assert strip[0] == strip[1]


@pytest.mark.parametrize("args, needle", [
    (["run", "q08", "--set", "failure_rate_threshold=150"], "failure_rate_threshold"),
    (["run", "q08", "--set", "rate_rps=abc"], "rate_rps"),
    (["run", "q08", "--set", "no_such=1"], "no_such"),
    (["run", "q08", "--set", "novalue"], "NAME=VALUE"),
    (["run", "q08", "--set", "outage_mode=flaky"], "outage_mode"),
    (["run", "q99"], "q99"),
    (["run", "q08", "--seed", "-1"], "seed"),
    (["sweep", "q08", "--vary", "rate_rps"], "--vary"),
    (["sweep", "q08", "--vary", "rate_rps=1,9999"], "rate_rps"),
    (["frobnicate"], "frobnicate"),
    (["run", "q08", "--set", "replicas=nan"], "replicas"),
    (["run", "q08", "--set", "replicas=inf"], "replicas"),
    (["run", "q08", "--set", "replicas=1e400"], "replicas"),
    (["run", "q08", "--set", "client_timeout_s=-inf"], "client_timeout_s"),
    (["sweep", "q11", "--vary", "max_batch_size=inf"], "max_batch_size"),
    (["run", "q08", "--set", "client_timeout_s=\u0663"], "client_timeout_s"),
    (["run", "q\u0660\u0668"], "q01 ... q30"),
    (["run", "q08", "--seed", "4294967296"], "seed"),
    (["run", "q08", "--seed", "18446744073709551616"], "seed"),
    (["run", "q08", "--set", "outage_start_s=300"], "outage_start_s"),
    (["sweep", "q08", "--vary", "outage_start_s=10,300"], "outage_start_s"),
])
def test_bad_input_exits_2_with_one_line(args, needle):
    r = archlab(*args)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0]
    assert "Traceback" not in r.stderr


def test_out_of_range_message_names_the_range():
    r = archlab("run", "q08", "--set", "failure_rate_threshold=150")
    assert "[1, 100]" in r.stderr


def test_sweep_csv_with_replications_and_progress():
    r = archlab("sweep", "q08", "--vary", "client_timeout_s=1,30", "--reps", "2", "--jobs", "2",
                "--set", "requests=1000", "--set", "outage_start_s=10", "--set", "outage_duration_s=20",
                timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "client_timeout_s,arm,metric,mean,ci_low,ci_high,reps"
    assert any(line.startswith("1.0,pattern,p99_ms,") for line in lines)
    assert "4/4" in r.stderr


def test_check_json_gives_regions():
    r = archlab("check", "q08", "--format", "json", timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    verdicts = {c["id"]: c for c in report[0]["claims"]}
    assert all(c["verdict"] in VERDICTS and c["evidence"] in EVIDENCE for c in verdicts.values())
    opens = verdicts["q08.opens_on_half_errors"]
    assert opens["verdict"] == "conditional" and opens["region"] == "holds only when client_timeout_s ≤ 5"
    cells = {cell["client_timeout_s"]: cell["verdict"] for cell in opens["sweep"]}
    assert cells[1.0] == cells[5.0] == "holds" and cells[10.0] == cells[30.0] == "fails"
    assert opens["control"]["setting"] == {"outage_mode": "none"} and opens["control"]["vanishes"] is True


def test_two_parameter_sweep():
    r = archlab("sweep", "q08", "--vary", "client_timeout_s=1,5", "--vary", "outage_mode=hang,error",
                "--set", "requests=1000", "--set", "outage_start_s=10", "--set", "outage_duration_s=20",
                "--format", "json", timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert {(x["client_timeout_s"], x["outage_mode"]) for x in rows} == {(1.0, "hang"), (1.0, "error"),
                                                                         (5.0, "hang"), (5.0, "error")}
