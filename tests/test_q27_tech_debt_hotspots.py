"""Q27 lab: mined inputs, model behaviour, claim regions, the flat control, a user repo, any valid setting."""
import math
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.params import ParamError
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q27")


def test_snapshot_is_this_projects_mining_with_the_score_it_names():
    r = LAB.run(0)
    h = r.series["hotspots"]
    assert (h["score"] == h["revisions"] * h["complexity"]).all() and h["rank"].is_monotonic_increasing
    assert r.metrics["pattern"]["files_scored"] == len(h) > 20
    assert r.metrics["pattern"]["hotspot_score_share_pct"] > 10  # top 10% of files hold more than 10% of the score


def test_hotspots_first_beats_even_spread_then_both_finish():
    mid = LAB.run(0, weeks=26).metrics
    assert mid["comparison"]["bug_reduction_pct"] > 0 and mid["comparison"]["velocity_gain_x"] > 1
    assert mid["pattern"]["hotspot_coverage_pct"] > mid["baseline"]["hotspot_coverage_pct"]
    done = LAB.run(0, weeks=104).metrics  # enough budget to refactor everything: focusing stops mattering
    assert abs(done["comparison"]["bug_reduction_pct"]) < abs(mid["comparison"]["bug_reduction_pct"])


def test_refactor_effect_caps_the_bug_cut():
    for effect in (0.3, 0.6):
        cut = LAB.run(0, refactor_effect=effect, weeks=104).metrics["pattern"]["bug_reduction_pct"]
        assert cut < 100 * effect + 5
    assert math.isclose(LAB.run(0, refactor_effect=0.0).metrics["comparison"]["bug_reduction_pct"], 0.0, abs_tol=1e-9)


def test_control_flat_codebase_focus_gains_nothing():
    flat = LAB.run(0, codebase="flat").metrics["comparison"]
    assert flat["bug_reduction_pct"] <= 0.5 and flat["velocity_gain_x"] <= 1.005


def test_a_user_repository_by_path_and_a_refusal(tmp_path, monkeypatch):
    r = tmp_path / "tiny"
    r.mkdir()
    run = lambda *a: subprocess.run(["git", "-C", str(r), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q"), run("config", "user.name", "T"), run("config", "user.email", "t@example.com")
    (r / "m.py").write_text("def f(x):\n    return 1 if x else 2\n")
    run("add", "-A"), run("commit", "-q", "-m", "one")
    monkeypatch.setenv("ARCHLAB_Q27_REPO", str(r))
    res = LAB.run(0, repository="path", replications=20)
    assert res.metrics["pattern"]["commits_mined"] == 1 and any("Short history" in n for n in res.notes)
    monkeypatch.setenv("ARCHLAB_Q27_REPO", str(tmp_path))
    with pytest.raises(ParamError, match="^parameter repository: .*not a git repository|^parameter repository"):
        LAB.run(0, repository="path")


@pytest.fixture(scope="module")
def verdicts():
    return {v.id: v for v in LAB.check(0)}


def test_claim_regions(verdicts):
    b = verdicts["q27.bug_reduction"]
    assert b.verdict == "fails" and b.evidence == "assumed" and b.control["vanishes"]
    assert max(c["measured"] for c in b.grid if c["weeks"] == 26) < 60
    assert all(c["verdict"] != "holds" for c in b.grid)
    after = verdicts["q27.bug_reduction_after"]
    assert after.verdict == "conditional" and after.control["vanishes"]
    assert {c["refactor_effect"] for c in after.grid if c["verdict"] == "holds"} == {0.9}
    v = verdicts["q27.velocity"]
    assert v.verdict == "fails" and v.control["vanishes"]
    gains = [c["measured"] for c in v.grid if c["complexity_drag"] == 1.0]
    assert gains == sorted(gains)  # more bugs to avoid: more gain, still short of 2x
    d = verdicts["q27.debt_ratio"]
    assert d.verdict == "conditional" and "debt_share" in d.region
    assert all(c["verdict"] == "fails" for c in d.grid if c["debt_share"] == 0.3)
    h = verdicts["q27.hotspot_coverage"]
    assert h.verdict == "conditional"
    assert all(c["verdict"] == "holds" for c in h.grid if c["debt_share"] == 0.2)
    assert any(c["verdict"] == "fails" for c in h.grid if c["debt_share"] == 0.05)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(settings_strategy(LAB, ranges={"replications": (10, 40), "weeks": (13, 60)},
                         fixed={"repository": "project_snapshot"}))
def test_any_valid_setting_runs_or_is_refused(values):
    check_run(LAB, values)


def test_path_without_environment_is_refused_in_one_line(monkeypatch):
    monkeypatch.delenv("ARCHLAB_Q27_REPO", raising=False)
    assert check_run(LAB, {"repository": "path"}) is None
