"""The workshop room: the store (codes, secret, answers, reveal, export), concurrent writers, the room pages
under AppTest, handouts and guides, and the ``archlab room|handout|warm`` commands."""
from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from faces import explorer as ex
from faces import room_pages, runs
from faces.handout import guide_html, handout_html, key_data, timing, write_pdfs
from faces.room import CODE_ALPHABET, CODE_LENGTH, RoomError, RoomStore, normalise_code
from labs.registry import get_lab

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    return RoomStore(tmp_path / "rooms.db")


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "faces.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


# --------------------------------------------------------------------------- the store
def test_a_room_has_a_short_code_a_secret_and_a_round(store):
    room, secret = store.create("Q08")
    assert len(room.code) == CODE_LENGTH and set(room.code) <= set(CODE_ALPHABET)
    assert room.qid == "q08" and room.round == 1 and not room.revealed
    assert room.watch == tuple(get_lab("q08").headline) and room.changes == {}
    assert store.get(room.code.lower()) == room == store.get("-".join([room.code[:3], room.code[3:]]))
    assert normalise_code(f" {room.code.lower()[:3]}-{room.code[3:]} ") == room.code
    assert secret not in store.path.read_bytes().decode("latin-1")  # only its hash is stored
    import sqlite3

    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ex1 = get_lab("q08").exercises[0]
    r2 = store.next_round(room.code, secret, 0)
    assert (r2.round, r2.changes, r2.watch, r2.exercise) == (2, ex1.changes, tuple(ex1.watch), 0)


def test_wrong_expired_and_unkeyed_rooms_are_refused_with_one_line(store):
    with pytest.raises(RoomError, match="no room 'NOPE42'"):
        store.get("NOPE42")
    room, secret = store.create("q08", ttl_h=1)
    with pytest.raises(RoomError, match="expired"):
        store.get(room.code, now=room.expires + timedelta(seconds=1))
    for bad in ("", None, secret + "x"):
        with pytest.raises(RoomError, match="not the instructor key"):
            store.reveal(room.code, bad)
        with pytest.raises(RoomError):
            store.summary(room.code, bad)
        with pytest.raises(RoomError):
            store.export_csv(room.code, bad)
    assert not store.get(room.code).revealed
    with pytest.raises(RoomError, match="exercises 1..3"):
        store.create("q08", exercise=7)
    with pytest.raises(RoomError, match="not joined"):
        store.predict(room.code, "someone", 1.0)
    with pytest.raises(RoomError, match="name"):
        store.join(room.code, "   ")


def test_answers_replace_until_the_reveal_then_are_kept(store):
    room, secret = store.create("q08")
    a, b = store.join(room.code, "Ann"), store.join(room.code, "Bo")
    store.predict(room.code, a, 100)
    store.predict(room.code, a, 250)  # changed her mind: one answer, the latest
    store.vote(room.code, a, "q08.p99_breaker", "holds")
    store.vote(room.code, b, "q08.p99_breaker", "fails")
    with pytest.raises(RoomError, match="verdict is one of"):
        store.vote(room.code, b, "q08.p99_breaker", "maybe")
    with pytest.raises(RoomError, match="finite"):
        store.predict(room.code, b, float("nan"))
    s = store.summary(room.code, secret)
    assert s["predictions"] == [250.0] and s["answered"] == ["Ann", "Bo"] and s["joined"] == 2
    assert s["votes"]["q08.p99_breaker"] == {"holds": 1, "fails": 1, "conditional": 0}
    assert store.mine(room.code, b) == {"prediction": None, "votes": {"q08.p99_breaker": "fails"}}
    store.reveal(room.code, secret)
    with pytest.raises(RoomError, match="revealed"):  # wrong first guesses are preserved
        store.predict(room.code, a, 30000)
    assert store.summary(room.code, secret)["predictions"] == [250.0]
    rows = list(csv.DictReader(io.StringIO(store.export_csv(room.code, secret))))
    assert sorted((r["name"], r["kind"], r["stated"] or r["text"]) for r in rows) == [
        ("Ann", "prediction", "250.0"), ("Ann", "verdict", "holds"), ("Bo", "verdict", "fails")]


def _writer(path: str, code: str, k: int, n: int, barrier):
    s = RoomStore(path)
    pid = s.join(code, f"p{k}")
    barrier.wait()
    for i in range(n):
        s.submit(code, pid, "drill_number", f"m{i}", stated=k * 1000 + i)
        if i % 5 == 0:
            s.predict(code, pid, k + i)  # the same answer rewritten: stays one row
    return pid


def test_several_processes_write_at_once_and_nothing_is_lost(tmp_path):
    path = tmp_path / "rooms.db"
    store = RoomStore(path)
    room, secret = store.create("q08")
    procs, n = 6, 40
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(procs)
    workers = [ctx.Process(target=_writer, args=(str(path), room.code, k, n, barrier)) for k in range(procs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    rows = list(csv.DictReader(io.StringIO(store.export_csv(room.code, secret))))
    numbers = sorted(float(r["stated"]) for r in rows if r["kind"] == "drill_number")
    assert numbers == sorted(float(k * 1000 + i) for k in range(procs) for i in range(n))
    preds = {r["name"]: float(r["stated"]) for r in rows if r["kind"] == "prediction"}
    assert preds == {f"p{k}": float(k + (n - 1) // 5 * 5) for k in range(procs)}
    assert len(store.summary(room.code, secret)["answered"]) == procs


# --------------------------------------------------------------------------- pure helpers
def test_histogram_counts_every_prediction_and_goes_log_over_decades():
    frame, log = room_pages.histogram([1, 2, 2, 3, 2.5], interval=(1.5, 2.5), measured=2)
    assert int(frame["count"].sum()) == 5 and not log
    assert frame["low"].iloc[0] == 1 and frame["high"].iloc[-1] == 3
    frame, log = room_pages.histogram([150, 3000, 30000, 200000, float("nan")], interval=(23000, 36000))
    assert int(frame["count"].sum()) == 4 and log
    frame, _ = room_pages.histogram([7, 7, 7])
    assert int(frame["count"].sum()) == 3
    assert room_pages.histogram([])[0].empty
    votes = room_pages.votes_frame({"q08.p99_breaker": {"holds": 2, "fails": 1, "conditional": 0}},
                                   get_lab("q08").question.claims)
    assert int(votes["count"].sum()) == 3 and set(votes["vote"]) == {"holds", "fails", "conditional"}


def test_a_new_setting_waits_in_line_and_says_so():
    assert runs.queue_text("Simulating…") == "Simulating…"
    held = threading.Event()
    release = threading.Event()

    def occupy():
        runs._gated(lambda: (held.set(), release.wait(10)))

    threads = [threading.Thread(target=occupy) for _ in range(runs.SLOTS + 1)]
    for t in threads:
        t.start()
    held.wait(5)
    try:
        for _ in range(100):
            if runs.queue_depth()[1] >= 1:
                break
            threading.Event().wait(0.02)
        assert runs.queue_depth() == (runs.SLOTS, 1)
        assert runs.queue_text().startswith(f"Queued: {runs.SLOTS + 1} run(s) ahead")
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert runs.queue_depth() == (0, 0)


# --------------------------------------------------------------------------- the pages (AppTest)
def open_room(query: dict) -> AppTest:
    at = AppTest.from_string(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport app\napp.main(start='room')\n",
                             default_timeout=90)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def test_room_pages_hide_the_run_until_the_instructor_reveals():
    store = RoomStore()
    room, secret = store.create("q08")
    lab = get_lab("q08")
    truth = lab.run(0)
    arm, metric = lab.headline
    shown = ex.fmt_number(truth.metrics[arm][metric], ex.metric_unit(lab.question, metric))

    at = open_room({"room": room.code})
    assert not at.exception and not at.metric
    at.text_input[0].input("Ann")
    at.button[0].click().run()
    at.number_input[0].set_value(150.0)
    at.button[0].click().run()
    assert not at.exception and not at.metric, "a participant sees no number before the reveal"
    assert any("Waiting for the instructor" in i.value for i in at.info)

    inst = open_room({"room": room.code, "key": secret})
    assert not inst.exception
    assert inst.subheader[0].value.startswith("1 prediction · 1 of 1 joined")
    assert "Ann" in "\n".join(m.value for m in inst.markdown)
    present = open_room({"room": room.code, "key": secret, "view": "present"})
    assert not present.exception and not present.metric  # the projector shows no answer before the reveal

    inst.button(key="room_reveal").click().run()
    assert store.get(room.code).revealed
    at.run()
    assert [m.value for m in at.metric] == [shown]
    assert any("150 ms is" in w.value for w in [*at.warning, *at.success])
    present.run()
    assert [m.value for m in present.metric] == [shown]

    nosy = open_room({"room": room.code, "key": "guess"})
    assert any("not the instructor key" in e.value for e in nosy.error)
    assert "Ann" not in "\n".join(m.value for m in nosy.markdown)
    lost = open_room({"room": "QQQQQQ"})
    assert any("no room 'QQQQQQ'" in e.value for e in lost.error)


def test_a_lobby_link_picks_the_lab_and_an_unknown_one_falls_back_to_the_first():
    picked = open_room({"lab": "Q23"})
    assert not picked.exception and picked.selectbox[0].value == "q23"
    other = open_room({"lab": "q99"})
    assert not other.exception and other.selectbox[0].value == other.selectbox[0].options[0].split(" · ")[0].lower()


def test_a_room_served_by_two_processes_shows_one_join_code_per_process(monkeypatch):
    room, secret = RoomStore().create("q08")
    monkeypatch.setenv("ARCHLAB_ROOM_SERVERS", "http://10.0.0.5:8501, http://10.0.0.5:8502/")
    for view in ({}, {"view": "present"}):
        at = open_room({"room": room.code, "key": secret, **view})
        assert not at.exception
        links = [c.value for c in at.code]
        assert links == [f"http://10.0.0.5:{port}/room?room={room.code}" for port in (8501, 8502)], links
        assert len(at.image) == 2  # one QR code per link (a PNG: Streamlit's HTML sanitiser drops inline SVG)
    made = subprocess.run([sys.executable, "-m", "faces.cli", "room", "create", "q08", "--format", "json"],
                          capture_output=True, text=True, env=dict(os.environ), timeout=120)
    joins = json.loads(made.stdout)["joins"]
    assert [j.split("/room?")[0] for j in joins] == ["http://10.0.0.5:8501", "http://10.0.0.5:8502"]
    monkeypatch.delenv("ARCHLAB_ROOM_SERVERS")
    one = open_room({"room": room.code, "key": secret})
    assert [c.value.split("/room?")[1] for c in one.code] == [f"room={room.code}"]


# --------------------------------------------------------------------------- handouts and guides
def test_handout_has_blank_columns_and_a_qr_code_per_exercise():
    lab = get_lab("q08")
    page = handout_html("q08", base_url="http://host.example:8501")
    assert page.count("<svg") == len(lab.exercises)
    assert page.count("☐ holds ☐ fails ☐ conditional") == len(lab.question.claims)
    assert page.count('<td class="blank"></td>') == len(lab.question.claims)
    for e in lab.exercises:
        url = "http://host.example:8501/q08" + ex.query_string(dict(lab.settings(e.changes)), lab.defaults())
        assert f'href="{url}"' in page.replace("&amp;", "&")
    for c in lab.question.claims:
        assert c.text.replace("'", "&#x27;") in page
    assert "<script" not in page


def test_answer_key_and_guide_read_the_lab():
    lab = get_lab("q08")
    key = key_data("q08")
    arm, metric = lab.headline
    truth = lab.run(0)
    page = handout_html("q08", key=key)
    value = ex.fmt_with_ci(truth.metrics[arm][metric], truth.intervals[arm][metric],
                           ex.metric_unit(lab.question, metric))
    assert value in page
    assert "my prediction" not in page
    for v in key.regions.values():
        assert f'class="{v.verdict}"' in page
    e = lab.exercises[0]
    assert key.exercises[0].metrics == lab.run(0, **e.changes).metrics
    guide = guide_html("q08", key)
    assert "Record:" in guide and "Preserve wrong initial predictions" in guide
    failing = [v for v in key.regions.values() if v.verdict in ("fails", "conditional")]
    assert guide.count("expect most of the room") == len(failing)
    slots = timing(len(lab.exercises))
    assert slots[0][0] == 0 and slots[-1][1] == 50 and all(a < b for a, b, _ in slots)
    assert all(slots[k][1] == slots[k + 1][0] for k in range(len(slots) - 1))


@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="PDFs need chromium")
def test_a_pdf_is_printed_when_chromium_is_there(tmp_path):
    page = tmp_path / "x.html"
    page.write_text(handout_html("q11"))
    (pdf,) = write_pdfs([page])
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5000


# --------------------------------------------------------------------------- the command line
def test_cli_room_create_export_and_unknown_code():
    r = cli("room", "create", "q08", "--exercise", "2", "--format", "json")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["instructor"].endswith(made["instructor"].split("key=")[1]) and "key=" not in made["join"]
    store = RoomStore()
    room = store.get(made["code"])
    assert room.exercise == 1 and room.changes == get_lab("q08").exercises[1].changes
    for name in ("Ann", "Bo", "Cy"):
        store.predict(room.code, store.join(room.code, name), len(name))
    r = cli("room", "export", made["code"].lower(), "--format", "csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert sorted(r["name"] for r in rows) == ["Ann", "Bo", "Cy"]
    r = cli("room", "export", "NOPE99", "--format", "csv")
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "NOPE99" in r.stderr
    r = cli("room", "create", "q08", "--exercise", "9")
    assert r.returncode == 2 and "exercises" in r.stderr and r.stdout == ""


def test_cli_handout_and_warm(tmp_path):
    r = cli("handout", "q08", "--out", str(tmp_path), "--no-pdf")
    assert r.returncode == 0, r.stderr
    page = tmp_path / "q08_handout.html"
    assert r.stdout.split() == [str(page)] and page.read_text().count("<svg") == len(get_lab("q08").exercises)
    r = cli("warm", "q11")
    assert r.returncode == 0, r.stderr
    n = 1 + len(get_lab("q11").exercises)
    assert re.search(rf"warm: {n} settings of 1 lab\(s\), \d+ run now", r.stdout), r.stdout
    assert f"[{n}/{n}] q11" in r.stderr
    again = runs.warm(["q11"], log=lambda line: None)  # this process reads what the command wrote
    assert [d["cached"] for d in again] == [True] * n
    lab = get_lab("q11")
    key = ex.params_key(lab.defaults())
    assert runs._load("q11", "explorer-run", runs._key("q11", key, 0)).metrics == lab.run(0).metrics
    r = cli("warm", "q99")
    assert r.returncode == 2 and r.stdout == ""


def test_a_room_member_predicting_on_the_lab_page_sends_it_to_the_room_and_waits_for_the_reveal():
    store = RoomStore()
    room, secret = store.create("q08")
    pid = store.join(room.code, "Dee")
    at = AppTest.from_string(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport app\napp.main(start='q08')\n",
                             default_timeout=90)
    at.session_state[room_pages.MEMBER] = {"code": room.code, "pid": pid, "name": "Dee"}
    at.run()
    at.number_input(key="predict_q08").set_value(4321.0).run()
    at.button(key="reveal_q08").click().run()
    assert not at.exception
    assert store.mine(room.code, pid)["prediction"] == 4321.0
    assert not at.metric and any(f"room {room.code}" in i.value for i in at.info)  # held until the reveal
    store.reveal(room.code, secret)
    at.run()
    assert [m.label for m in at.metric][:1] == ["Headline: P99"]  # the run is shown once the room is revealed
    other = AppTest.from_string(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport app\napp.main(start='q11')\n",
                                default_timeout=90)
    other.session_state[room_pages.MEMBER] = {"code": room.code, "pid": pid, "name": "Dee"}
    other.run()
    other.button(key="skip_q11").click().run()
    assert other.metric  # another lab's page is not held by a room on q08


def test_sessions_asking_for_the_same_new_setting_at_once_share_one_run(monkeypatch):
    """Thirty participants opening the same exercise at once cost one simulation, not thirty queued ones."""
    import time as _time

    calls = []

    class Slow:
        def run(self, seed, **setting):
            calls.append(setting)
            _time.sleep(0.3)
            return {"seed": seed, **setting}

    monkeypatch.setattr(runs, "get_lab", lambda lab_id: Slow())
    setting = (("nonce", _time.time_ns()),)
    out = []
    threads = [threading.Thread(target=lambda: out.append(runs.run("q08", setting, 0))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(calls) == 1 and len(out) == 6 and all(o == out[0] for o in out)
    assert runs.queue_depth() == (0, 0) and not runs._key_locks
