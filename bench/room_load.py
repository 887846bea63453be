"""How many workshop participants one machine serves: a bounded, scripted load on the explorer over loopback.

    python bench/room_load.py --participants 10,20,30 [--lab q08] [--servers 2] [--url http://127.0.0.1:8501]

Each simulated participant is one Streamlit session speaking the browser's own protocol (protobuf
``BackMsg``/``ForwardMsg`` over the ``/_stcore/stream`` websocket): it opens the lab's page (at the
defaults, or at a setting of its own), waits for the page to finish, then all participants press
"Skip prediction" at the same moment and each one times its press until the server reports the run
finished (``script_finished``) with the headline drawn. That is the time a participant waits for an
answer; the browser's own drawing is not included. Three scenarios:

* ``room``: N participants join one workshop room by its link (``/room?room=CODE``), send their
  predictions at the same moment (time until each page is back: the room's interactive budget),
  then the instructor reveals and each participant's live fragment polls every 2 s, as the
  browser's timer would, until the headline is drawn (time from the reveal, poll included);
* ``cached``: everyone at a setting the server has already run (the defaults, warmed first), the
  case of a room moving through its exercises after ``archlab warm``;
* ``same-new``: everyone at one setting no one has run yet (an exercise the instructor did not warm);
* ``new``: everyone at a different setting no one has run yet (``client_timeout_s`` spread over its
  range, with a fresh seed), the worst case of a room exploring on its own.

``--servers 2`` starts two explorer processes sharing one data and cache folder and sends participant k to
server k mod 2 (the README's set-up for rooms over about 20: one process per core).
Without ``--url`` it starts ``streamlit run app.py`` with the workshop options (``WORKSHOP_OPTIONS``;
``--plain`` for Streamlit's defaults) on a free loopback port with a fresh cache and data folder
(removed afterwards); with ``--url``, set ``ARCHLAB_DATA`` to the server's, so both share ``rooms.db``. Everything is bounded (``--timeout`` per phase). Prints, per
scenario and room size, the median, P95 and maximum wait, how many were answered within the 1 s
budget, the server's CPU time per action and its resident memory; and the machine's load average, since it is shared.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUDGET_S = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Session:
    """One participant: a websocket session of the explorer."""

    def __init__(self, url: str, page: str, query: str):
        self.url, self.page, self.query = url, page, query
        self.ws = None
        self.page_hash = ""
        self.widgets: dict[str, str] = {}  # label -> widget id
        self.metrics: list[str] = []
        self.fragment = ""

    async def connect(self):
        from websockets.asyncio.client import connect

        ws_url = self.url.replace("http://", "ws://") + "/_stcore/stream"
        self.ws = await connect(ws_url, subprotocols=["streamlit"], max_size=None, open_timeout=60,
                                ping_interval=None)

    async def rerun(self, widget_states=None) -> float:
        """Send a rerun (page load or widget event); wait for the run to finish; the seconds it took."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = BackMsg()
        cs = msg.rerun_script
        cs.query_string = self.query
        cs.page_script_hash = self.page_hash
        cs.page_name = self.page
        if widget_states:
            cs.widget_states.widgets.extend(widget_states)
        self.metrics = []
        t0 = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        while True:
            fm = ForwardMsg()
            fm.ParseFromString(await self.ws.recv())
            kind = fm.WhichOneof("type")
            if kind == "auto_rerun":
                self.fragment = fm.auto_rerun.fragment_id
            elif kind == "navigation":  # the page this session is on, as the browser would name it next time
                self.page_hash = fm.navigation.page_script_hash or self.page_hash
            elif kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                el = fm.delta.new_element
                et = el.WhichOneof("type")
                body = getattr(el, et) if et else None
                if et == "metric":
                    self.metrics.append(body.body)
                    self.metric_at = time.perf_counter() - t0
                elif body is not None and hasattr(body, "id") and hasattr(body, "label") and body.id:
                    self.widgets[body.label] = body.id
            elif kind == "script_finished":
                status = ForwardMsg.ScriptFinishedStatus.Name(fm.script_finished)
                if status in ("FINISHED_SUCCESSFULLY", "FINISHED_EARLY_FOR_RERUN", "FINISHED_FRAGMENT_RUN_SUCCESSFULLY"):
                    if status == "FINISHED_EARLY_FOR_RERUN":
                        continue
                    return time.perf_counter() - t0
                raise RuntimeError(f"script finished with {status}")

    async def click(self, label: str, **values) -> float:
        """Press the button ``label``, sending ``values`` ({label: value}) for other widgets (a form)."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        states = [WidgetState(id=self.widgets[label], trigger_value=True)]
        for name, v in values.items():
            w = WidgetState(id=self.widgets[name])
            if isinstance(v, str):
                w.string_value = v
            else:
                w.double_value = float(v)
            states.append(w)
        return await self.rerun(states)

    async def poll_until_metric(self, every_s: float, deadline_s: float) -> float:
        self.metrics = []
        """Rerun the page's live fragment every ``every_s`` (as the browser's timer does) until a headline shows."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < deadline_s:
            await asyncio.sleep(every_s)
            await self.rerun_fragment()
            if self.metrics:
                return self.metric_at - t0
        raise asyncio.TimeoutError

    async def rerun_fragment(self):
        """One tick of the live fragment's timer; when the fragment asks for a whole-page rerun, wait for it too."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = BackMsg()
        cs = msg.rerun_script
        cs.query_string, cs.page_script_hash, cs.page_name = self.query, self.page_hash, self.page
        cs.fragment_id, cs.is_auto_rerun = self.fragment, True
        await self.ws.send(msg.SerializeToString())
        finished = False
        while True:
            try:
                raw = await (asyncio.wait_for(self.ws.recv(), 0.5) if finished else self.ws.recv())
            except asyncio.TimeoutError:
                return  # nothing more after the fragment's run: no whole-page rerun followed
            fm = ForwardMsg()
            fm.ParseFromString(raw)
            kind = fm.WhichOneof("type")
            if kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                if fm.delta.new_element.WhichOneof("type") == "metric":
                    self.metrics.append(fm.delta.new_element.metric.body)
                    self.metric_at = time.perf_counter()
            elif kind == "auto_rerun":
                self.fragment = fm.auto_rerun.fragment_id or self.fragment
            elif kind == "script_finished":
                status = ForwardMsg.ScriptFinishedStatus.Name(fm.script_finished)
                if status == "FINISHED_SUCCESSFULLY":
                    return
                finished = status != "FINISHED_EARLY_FOR_RERUN"

    async def close(self):
        if self.ws is not None:
            await self.ws.close()


async def room_round(urls: list[str], page: str, queries: list[str], timeout: float) -> dict:
    sessions = [Session(urls[k % len(urls)], page, q) for k, q in enumerate(queries)]

    async def load(s):
        await s.connect()
        return await s.rerun()

    try:
        loads = await asyncio.wait_for(asyncio.gather(*(load(s) for s in sessions)), timeout)
        c0 = cpu_s(SERVER_PIDS)
        waits = await asyncio.wait_for(asyncio.gather(*(s.click("Skip prediction") for s in sessions)), timeout)
        cpu_ms = 1000 * (cpu_s(SERVER_PIDS) - c0) / len(sessions)
        firsts = [s.metric_at for s in sessions if s.metrics]
        answered = sum(bool(s.metrics) for s in sessions)
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    return {"loads": loads, "waits": waits, "answered": answered, "headlines": [s.metrics[:1] for s in sessions],
            "cpu_ms": cpu_ms, "headline_at": firsts}


async def workshop_room(urls: list[str], lab_id: str, n: int, timeout: float) -> dict:
    """N participants join one room by its link, send their predictions at once, then the instructor reveals."""
    from faces.room import RoomStore

    store = RoomStore()
    room, secret = store.create(lab_id)
    sessions = [Session(urls[k % len(urls)], "room", f"room={room.code}") for k in range(n)]

    async def join(k, s):
        await s.connect()
        await s.rerun()
        await s.click("Join", **{"Your name (only the instructor sees it)": f"p{k}"})
        return s

    try:
        await asyncio.wait_for(asyncio.gather(*(join(k, s) for k, s in enumerate(sessions))), timeout)
        label = next(w for w in sessions[0].widgets if w.startswith(room.arm + " · "))
        c0 = cpu_s(SERVER_PIDS)
        sends = await asyncio.wait_for(asyncio.gather(
            *(s.click("Send to the room", **{label: 100.0 * (k + 1)}) for k, s in enumerate(sessions))), timeout)
        c1 = cpu_s(SERVER_PIDS)
        got = store.summary(room.code, secret)["predictions"]
        store.reveal(room.code, secret)
        reveals = await asyncio.wait_for(asyncio.gather(
            *(s.poll_until_metric(POLL_S, timeout) for s in sessions)), timeout)
        c2 = cpu_s(SERVER_PIDS)
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    return {"waits": sends, "reveals": reveals, "stored": len(got), "answered": n,
            "cpu_send_ms": 1000 * (c1 - c0) / n, "cpu_reveal_ms": 1000 * (c2 - c1) / n}


POLL_S = 2.0
SERVER_PIDS: list[int] = []


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1)))))
    return xs[k]


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the server processes have used so far."""
    if not pids:
        return float("nan")
    try:
        import psutil

        return sum(t.user + t.system for t in (psutil.Process(pid).cpu_times() for pid in pids))
    except Exception:
        return float("nan")


def rss_mb(pids: list[int]) -> float:
    """Resident memory of the largest server process (with its children)."""
    try:
        import psutil

        return max((p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))) / 2**20
                   for p in map(psutil.Process, pids))
    except Exception:
        return float("nan")


#: The workshop server's options (README, "Workshops"): no source-file watcher walking every loaded module and
#: no forced full garbage collection after each script run; together they were most of a room page's CPU.
WORKSHOP_OPTIONS = ["--server.fileWatcherType", "none", "--runner.postScriptGC", "false"]


def start_server(port: int, env: dict, options=()) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false", *options], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the explorer did not start within 90 s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--participants", default="10,20,30", help="room sizes to try, e.g. 10,20,30")
    ap.add_argument("--lab", default="q08")
    ap.add_argument("--knob", default="client_timeout_s", help="the parameter each 'new' participant sets")
    ap.add_argument("--scenarios", default="room,cached,new", help="room, cached, same-new and/or new")
    ap.add_argument("--url", help="running explorers, comma-separated (default: start --servers on free loopback ports)")
    ap.add_argument("--servers", type=int, default=1,
                    help="explorer processes to start, sharing one data folder (participant k uses server k mod S)")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per phase before giving up")
    ap.add_argument("--plain", action="store_true",
                    help="start the explorer with Streamlit's default options instead of the workshop ones")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.participants.split(",")]
    from labs.registry import get_lab

    lab = get_lab(args.lab)
    knob = lab.param(args.knob)
    tmp, procs = None, []
    urls = args.url.split(",") if args.url else []
    if not urls:
        tmp = tempfile.mkdtemp(prefix="archlab-load-")
        env = {**os.environ, "ARCHLAB_CACHE": f"{tmp}/cache", "ARCHLAB_DATA": f"{tmp}/data", "PYTHONPATH": str(ROOT)}
        os.environ["ARCHLAB_DATA"] = env["ARCHLAB_DATA"]  # the rooms file this script and the servers share
        for _ in range(max(1, args.servers)):
            port = _free_port()
            procs.append(start_server(port, env, () if args.plain else WORKSHOP_OPTIONS))
            urls.append(f"http://127.0.0.1:{port}")
        SERVER_PIDS[:] = [p.pid for p in procs]
    url = urls
    print(f"explorer {', '.join(urls)} ({'default options' if args.plain or args.url else ' '.join(WORKSHOP_OPTIONS)}); "
          f"lab {lab.id}; load average {os.getloadavg()} (1, 5, 15 min) on {os.cpu_count()} cores")
    rows = []
    try:
        for u in urls:  # warm each server: imports, the default run, its plots
            asyncio.run(room_round([u], lab.id, [""], args.timeout))
        rng = random.Random(time.time_ns())
        for scenario in args.scenarios.split(","):
            for n in sizes:
                if scenario == "room":
                    t0 = time.perf_counter()
                    try:
                        out = asyncio.run(workshop_room(url, lab.id, n, args.timeout))
                    except asyncio.TimeoutError:
                        print(f"room   n={n:3d}: not finished within {args.timeout:.0f} s")
                        continue
                    w, r = out["waits"], out["reveals"]
                    row = {"scenario": "room", "n": n, "median_s": statistics.median(w), "p95_s": pct(w, 95),
                           "max_s": max(w), "within_1s": sum(x <= BUDGET_S for x in w), "stored": out["stored"],
                           "reveal_median_s": statistics.median(r), "reveal_p95_s": pct(r, 95),
                           "rss_mb": rss_mb(SERVER_PIDS), "loadavg": os.getloadavg()[0]}
                    rows.append(row)
                    print(f"room   n={n:3d}: send prediction median {row['median_s']:.2f} s, P95 {row['p95_s']:.2f} s, "
                          f"max {row['max_s']:.2f} s; {row['within_1s']}/{n} within 1 s; stored {row['stored']}/{n}; "
                          f"reveal->headline (polled every {POLL_S:g} s) median {row['reveal_median_s']:.2f} s, "
                          f"P95 {row['reveal_p95_s']:.2f} s; server CPU per send {out['cpu_send_ms']:.0f} ms, per reveal "
                          f"{out['cpu_reveal_ms']:.0f} ms; server RSS {row['rss_mb']:.0f} MB; load {row['loadavg']:.1f}",
                          flush=True)
                    continue
                if scenario == "cached":
                    queries = [""] * n
                elif scenario == "same-new":  # the whole room at one setting nobody has run (an unwarmed exercise)
                    seed = rng.randrange(1, 10**6)
                    queries = [f"{knob.name}={float(knob.low) + (float(knob.high) - float(knob.low)) / 3:g}&seed={seed}"] * n
                else:  # a setting of its own per participant, not run before (fresh seed per round)
                    seed = rng.randrange(1, 10**6)
                    lo, hi = float(knob.low), float(knob.high)
                    values = [round(lo + (hi - lo) * (k + 1) / (n + 1), 3) for k in range(n)]
                    queries = [f"{knob.name}={v:g}&seed={seed}" for v in values]
                t0 = time.perf_counter()
                try:
                    out = asyncio.run(room_round(url, lab.id, queries, args.timeout))
                except asyncio.TimeoutError:
                    print(f"{scenario:6s} n={n:3d}: not finished within {args.timeout:.0f} s")
                    continue
                w = out["waits"]
                row = {"scenario": scenario, "n": n, "median_s": statistics.median(w), "p95_s": pct(w, 95),
                       "max_s": max(w), "within_1s": sum(x <= BUDGET_S for x in w), "answered": out["answered"],
                       "load_median_s": statistics.median(out["loads"]), "wall_s": time.perf_counter() - t0,
                       "rss_mb": rss_mb(SERVER_PIDS), "loadavg": os.getloadavg()[0]}
                rows.append(row)
                print(f"{scenario:6s} n={n:3d}: wait median {row['median_s']:.2f} s, P95 {row['p95_s']:.2f} s, "
                      f"max {row['max_s']:.2f} s; {row['within_1s']}/{n} within 1 s; "
                      f"headline shown {row['answered']}/{n}; "
                      f"headline drawn after median {statistics.median(out['headline_at']):.2f} s, "
                      f"P95 {pct(out['headline_at'], 95):.2f} s; server CPU per answer {out['cpu_ms']:.0f} ms; "
                      f"server RSS {row['rss_mb']:.0f} MB; load {row['loadavg']:.1f}", flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
