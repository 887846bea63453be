"""The interview drill: ``archlab drill q08`` with scripted answers, region-aware grading, and /drill.

Expected scores are computed here from the lab (``Lab.run``/``Lab.check`` and the
shared scorer in ``labs.workshop``), never written down as numbers. Progress goes
to a temporary ``ARCHLAB_DATA``.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from faces.drill import Drill, parse_number
from faces.progress import Progress
from labs.catalog import load_catalog
from labs.params import fmt_value
from labs.registry import built_ids, get_lab
from labs.workshop import score_number

ROOT = Path(__file__).resolve().parents[1]
OTHER = {"holds": "fails", "fails": "holds", "conditional": "holds"}


@pytest.fixture(scope="module")
def quick():
    return Drill("q08", regions=False)


@pytest.fixture(scope="module")
def swept():
    return Drill("q08", regions=True)


def _script(drill: Drill, headline_times: float, wrong_claim: int) -> tuple[list[str], dict]:
    """Answers for the open drill: headline off by a factor, claims right except one, exercises exact."""
    r = drill.result
    arm, metric = drill.lab.headline
    lines = ["A breaker stops calls to a failing server after enough failures.", "It answers from a cache.", ""]
    answers = {}
    for item in drill.statements("open"):
        if item.kind == "number":
            text = repr(r.metrics[arm][metric] * headline_times)
        else:
            k = [c.id for c in drill.question.claims].index(item.claim)
            truth = next(v.verdict for v in r.claims if v.id == item.claim)
            text = OTHER.get(truth, "holds") if k == wrong_claim else truth
        answers[item.key] = text
        lines.append(text)
    for item in drill.followups():
        run = drill.run_at(item.changes)
        if item.kind == "number":
            text = repr(run.metrics[item.arm][item.metric])
        else:
            text = next(v.verdict for v in run.claims if v.id == item.claim)
        answers[item.key] = text
        lines.append(text)
    return lines, answers


def test_terminal_drill_with_scripted_answers(tmp_path, quick):
    lines, answers = _script(quick, headline_times=4.0, wrong_claim=1)
    env = {**os.environ, "ARCHLAB_DATA": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "faces.cli", "drill", "q08", "--quick"], cwd=ROOT, env=env,
                         input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    q = load_catalog().get("q08")
    assert q.title in text and q.summary in text and "Timer: 3:00" in text
    # the learner commits before any run is shown: every prompt comes before the first score
    assert text.index("commit to the numbers") < text.index("== Your numbers against the lab ==")
    arm, metric = quick.lab.headline
    r = quick.result
    expected = score_number(r.metrics[arm][metric] * 4.0, r.metrics[arm][metric], r.interval(arm, metric),
                            quick.unit(metric))
    assert expected.sentence() in text and "4× too high" in text
    graded = [quick.grade(item, answers[item.key]) for item in quick.statements("open") + quick.followups()]
    for g in graded:
        assert g.text in text
    assert graded[0].item.key == "headline" and graded[0].credit == 0 and graded[0].score.direction == "high"
    assert sum(g.credit == 0 for g in graded[1:]) == 1  # exactly the claim scripted wrong
    assert all(g.credit in (1.0, None) for g in graded if g.item.changes)  # exact follow-ups are right
    assert f"Score: {Drill.total(graded):.0%} over {len(graded)} graded answers." in text
    assert "== A model answer ==" in text and "== Follow-up questions ==" in text
    with Progress(tmp_path / "progress.db") as p:  # recorded, and a review is scheduled
        assert p.state("q08") == "drilled" and p.due("q08") is not None
        assert len(p.tables()["drills"]) == 1


def test_followups_come_from_exercises_and_sweeps(quick):
    lab = quick.lab
    follow = quick.followups()
    assert [f.changes for f in follow[:len(lab.exercises)]] == [dict(e.changes) for e in lab.exercises]
    for item, ex in zip(follow, lab.exercises):
        name, value = next(iter(ex.changes.items()))
        assert f"What if {name} were" in item.prompt and (item.arm, item.metric) == tuple(ex.watch)
    swept = [f for f in follow if f.kind == "verdict"]
    assert swept and all(dict(lab.question.claim(f.claim).sweep)[next(iter(f.changes))] for f in swept)
    # graded the same way: a number ten times the changed run's value is 10x too high
    item = follow[0]
    run = quick.run_at(item.changes)
    g = quick.grade(item, str(run.metrics[item.arm][item.metric] * 10))
    assert g.credit == 0 and g.score.direction == "high" and g.score.factor == pytest.approx(10)


def test_model_answer_is_ours_and_uses_the_lab(quick):
    text = quick.model_answer()
    arm, metric = quick.lab.headline
    r = quick.result
    from labs.measure import fmt_number

    assert fmt_number(r.metrics[arm][metric]) in text
    for c in quick.question.claims:
        assert c.text not in text  # never the question's own sentences
    writeup = quick.lab.writeup()
    assert any(section in text for section in writeup.values())


def test_region_aware_verdicts_and_multiple_choice(swept):
    point = {v.id: v for v in swept.result.claims}
    conditional = [cid for cid, v in swept.regions.items() if v.verdict == "conditional"]
    assert conditional, "q08 should have a claim that holds only in a region"
    cid = conditional[0]
    item = next(i for i in swept.statements("open") if i.claim == cid)
    half = swept.grade(item, point[cid].verdict)  # right at the defaults, but not over the sweep
    assert half.credit == 0.5 and swept.regions[cid].region in half.text
    assert swept.grade(item, "conditional").credit == 1.0
    for ch in swept.statements("choice"):
        if ch.kind != "choice":
            continue
        region = swept.regions[ch.claim]
        right = ch.options[ch.correct]
        assert right == (region.region if region.grid else f"it {point[ch.claim].verdict} at these settings")
        assert len(set(ch.options)) == len(ch.options) >= 2
        failing = [c for c in (region.grid or []) if c["verdict"] == "fails"]
        for k, opt in enumerate(ch.options):
            if k == ch.correct or not opt.startswith("holds only when "):
                continue
            setting = dict(re.findall(r"(\w+) = ([^ ]+)", opt))
            assert any(all(fmt_value(c[n]) == v for n, v in setting.items()) for c in failing), opt
        assert swept.grade(ch, "abcd"[ch.correct]).credit == 1.0
        assert swept.grade(ch, "abcd"[(ch.correct + 1) % len(ch.options)]).credit == 0.0


def test_question_without_a_lab_is_drilled_ungraded(tmp_path, monkeypatch, capsys):
    """Every question has a lab today; a question whose lab is missing (withdrawn, or new in the catalogue)
    must still be drillable on its claims, ungraded. The registry is told q05 has no lab."""
    import io

    import faces.drill
    from faces import cli

    unbuilt = load_catalog().get("q05")
    monkeypatch.setattr(faces.drill, "built_ids", lambda: [i for i in built_ids() if i != unbuilt.id])
    d = Drill(unbuilt.id)
    items = d.statements()
    assert d.lab is None
    assert [i.claim for i in items] == [c.id for c in unbuilt.claims]
    assert all(d.grade(i, "holds").credit is None for i in items)
    monkeypatch.setenv("ARCHLAB_DATA", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.StringIO("my answer\n\n" + "holds\n" * len(items)))
    assert cli.main(["drill", unbuilt.id]) == 0
    out = capsys.readouterr().out
    assert "Not graded" in out and unbuilt.title in out
    with Progress(tmp_path / "progress.db") as p:
        assert p.state(unbuilt.id) == "drilled" and p.due(unbuilt.id) is None


def test_bad_question_id_is_refused():
    out = subprocess.run([sys.executable, "-m", "faces.cli", "drill", "q99"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, input="")
    assert out.returncode == 2 and out.stdout == "" and len(out.stderr.strip().splitlines()) == 1


def test_parse_number():
    assert parse_number("about 1,200 ms") == 1200 and parse_number("nothing") is None


# --------------------------------------------------------------------------- the /drill page
def test_drill_page(tmp_path, monkeypatch, quick):
    monkeypatch.setenv("ARCHLAB_DATA", str(tmp_path))
    at = AppTest.from_string(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport app\napp.main(start='drill')\n",
                             default_timeout=120)
    at.session_state["drill_regions"] = False
    at.session_state["drill_q"] = "q08"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(t.value == "Interview drill" for t in at.title)
    q = quick.question
    assert at.selectbox(key="drill_q").value == "q08" and q.summary in [m.value for m in at.markdown]
    assert any("Timer: 3:00" in i.value for i in at.info)
    arm, metric = quick.lab.headline
    measured = quick.result.metrics[arm][metric]
    at.text_area(key="drill_answer_q08").input("Breakers fail fast while the server is down.")
    at.number_input(key="drill_q08_headline").set_value(measured * 4.0)
    truth = {v.id: v.verdict for v in quick.result.claims}
    for c in q.claims:
        at.radio(key=f"drill_q08_open_{c.id}").set_value(truth[c.id])
    assert not any("against the lab" in s.value for s in at.subheader)  # nothing shown before submitting
    next(b for b in at.button if b.label == "Check my answer").click().run()
    assert not at.exception, [e.value for e in at.exception]
    expected = score_number(measured * 4.0, measured, quick.result.interval(arm, metric), quick.unit(metric))
    shown = "\n".join(m.value for m in (*at.success, *at.error, *at.warning))
    assert expected.sentence() in shown
    assert sum("right: the lab says" in s.value for s in at.success) == sum(
        truth[c.id] not in ("inconclusive", "not_measured") for c in q.claims)
    assert any(s.value == "A model answer" for s in at.subheader)
    with Progress(tmp_path / "progress.db") as p:
        assert p.state("q08") == "drilled"
