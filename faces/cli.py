"""``archlab``: the labs from the command line, for scripts and CI.

Commands and JSON shapes follow DESIGN.md ("The command line contract").
Bad input exits with status 2 and one line on stderr, never a traceback and
never anything on stdout.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time

from labs.catalog import CatalogError, load_catalog
from labs.contract import json_number
from labs.measure import fmt_number
from labs.params import SEED, ParamError, question_id
from labs.registry import built_ids, get_lab
from labs.sweeps import BackendError


class UsageError(Exception):
    """Bad command-line input: reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage over several lines
        raise UsageError(message)


def _seed_arg(text: str) -> int:
    try:
        return SEED.parse(text)
    except ParamError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parse_sets(lab, pairs) -> dict:
    values = {}
    for item in pairs or []:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--set expects NAME=VALUE, got {item!r}")
        values[name.strip()] = text
    return lab.parse(values)


def _emit(obj, fmt: str):
    if fmt == "json":
        print(json.dumps(obj, indent=2, sort_keys=False, allow_nan=False))


def _cell(c) -> str:
    return fmt_number(c)


def _table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[_cell(c) for c in r] for r in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------ commands
def cmd_list(args):
    built = set(built_ids())
    cat = load_catalog()
    rows = [{"id": q.id, "topic": cat.topic_name(q.topic) if hasattr(cat, "topic_name") else q.topic,
             "difficulty": q.difficulty, "title": q.title, "built": q.id in built} for q in cat.questions]
    if args.format == "json":
        _emit(rows, "json")
    else:
        print(_table([[r["id"], r["topic"], r["difficulty"], r["title"], "yes" if r["built"] else "-"]
                      for r in rows], ["id", "topic", "difficulty", "title", "lab"]))


def cmd_show(args):
    q = load_catalog().get(_qid(args.lab))
    built = q.id in built_ids()
    params = [p.to_dict() for p in get_lab(q.id).params] if built else []
    metrics = [{"key": m.key, "name": m.name, "formula": m.formula, "target": m.target} for m in q.metrics]
    claims = [{"id": c.id, "text": c.text, "metric": c.metric, "arm": c.arm} for c in q.claims]
    obj = {"id": q.id, "title": q.title, "difficulty": q.difficulty, "summary": q.summary, "built": built,
           "params": params, "metrics": metrics, "claims": claims}
    if args.format == "json":
        _emit(obj, "json")
        return
    print(f"{q.id}  {q.title}  ({q.difficulty})\n\n{q.summary}\n")
    if built:
        print(_table([[p["name"], p["default"], _range(p), p["unit"], p["help"]] for p in params],
                     ["param", "default", "allowed", "unit", "help"]) + "\n")
    else:
        print("(lab not built yet)\n")
    print(_table([[m["key"], m["formula"], m["target"]] for m in metrics], ["metric", "formula", "target"]))


def _range(p: dict) -> str:
    if "choices" in p:
        return "|".join(str(c) for c in p["choices"])
    return f"[{p['low']}, {p['high']}]"


def _qid(text: str) -> str:
    return question_id(text)


def cmd_run(args):
    lab = get_lab(_qid(args.lab))
    params = _parse_sets(lab, args.set)
    result = lab.run(seed=args.seed, **params)
    if args.format == "json":
        _emit(result.to_dict(), "json")
        return
    print(f"{lab.id}  {lab.title}   seed={result.seed}   {result.elapsed_s:.2f} s")
    keys = sorted({k for m in result.metrics.values() for k in m})
    arms = list(result.metrics)
    print(_table([[k] + [result.metrics[a].get(k) for a in arms] + [result.targets.get(k, "")] for k in keys],
                 ["metric"] + arms + ["target"]))
    print()
    for v in result.claims:
        print(f"[{v.verdict} · {v.evidence}] {v.id}: {v.detail}")


def _engine_args(args) -> None:
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    if args.reps < 1:
        raise UsageError(f"--reps must be >= 1, got {args.reps}")
    if args.scheduler and args.backend != "dask":
        raise UsageError("--scheduler needs --backend dask")


def _backend(args):
    """The joblib backend for the command (a Dask LocalCluster is started here and stopped after)."""
    from labs.sweeps import backend_config

    return backend_config(args.backend, args.scheduler, args.jobs, timeout_s=args.scheduler_timeout)


def check_labs(ids: list[str], args, label: str = "check") -> list[dict]:
    """Every claim's verdict per lab (``check_many``: all the labs' runs in one pool), with progress on stderr.

    ``elapsed_s`` is the whole check's wall time (the labs' runs interleave); ``run_s`` the lab's own runs.
    """
    from labs.contract import check_many
    from labs.sweeps import Progress

    t0 = time.perf_counter()
    labs = [get_lab(qid) for qid in ids]
    checked = check_many(labs, seed=args.seed, jobs=args.jobs, reps=args.reps,
                         cache=False if args.no_cache else None,
                         task_progress=Progress(f"{label} {' '.join(ids)}", every_s=args.progress_every or 0.5))
    elapsed = round(time.perf_counter() - t0, 3)
    return [{"lab": lab.id, "reps": args.reps, "claims": [v.to_dict(full=True) for v in verdicts],
             "elapsed_s": elapsed} for lab, verdicts in zip(labs, checked)]


def cmd_check(args):
    ids = [_qid(x) for x in args.labs] if args.labs else built_ids()
    for qid in ids:
        get_lab(qid)  # unknown labs exit 2 before any cluster starts
    _engine_args(args)
    with _backend(args):
        report = check_labs(ids, args)
    if args.format == "json":
        _emit(report, "json")
    else:
        for r in report:
            for c in r["claims"]:
                print(f"{r['lab']}  [{c['verdict']} · {c['evidence']}] {c['id']}: {c['detail']}")


def cmd_sweep(args):
    from labs.sweeps import Progress, sweep

    lab = get_lab(_qid(args.lab))
    base = _parse_sets(lab, args.set)
    if len(args.vary) > 2:
        raise UsageError("--vary can be given at most twice (a two-parameter grid)")
    vary = {}
    for item in args.vary:
        name, sep, values_text = item.partition("=")
        if not sep or not values_text:
            raise UsageError(f"--vary expects NAME=V1,V2,..., got {item!r}")
        vary[name.strip()] = [lab.param(name.strip()).parse(v) for v in values_text.split(",")]
    _engine_args(args)
    with _backend(args):
        rows = sweep(lab.id, base, vary, reps=args.reps, jobs=args.jobs, seed=args.seed,
                     cache=False if args.no_cache else None, verdicts=args.format == "json",
                     progress=Progress(f"sweep {lab.id}", every_s=args.progress_every))
    if args.format == "json":
        _emit({"lab": lab.id, "vary": list(vary), "params": base, "reps": args.reps, "rows": rows}, "json")
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=[*vary, "arm", "metric", "mean", "ci_low", "ci_high", "reps"],
                           lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        sys.stdout.write(buf.getvalue())


def cmd_report(args):
    from faces.report import write_report

    ids = [_qid(x) for x in args.labs] if args.labs else built_ids()
    for qid in ids:
        get_lab(qid)
    _engine_args(args)
    with _backend(args):
        report = check_labs(ids, args, label="report")
    page = write_report(report, args.out, seed=args.seed)
    print(page)


def cmd_bench(args):
    from labs import bench

    if args.customers < 1000 or args.rounds < 1:
        raise UsageError("bench needs --customers >= 1000 and --rounds >= 1")
    print(bench.report(bench.run(customers=args.customers, rounds=args.rounds)))


def cmd_assign(args):
    from faces.assign import assign

    if bool(args.all) == bool(args.labs):
        raise UsageError("assign needs lab ids (assign q08 --out DIR) or --all, not both")
    ids = built_ids() if args.all else [get_lab(_qid(x)).id for x in args.labs]
    for qid in ids:
        print(assign(qid, args.out))


def cmd_drill(args):
    from faces.drill import cli_drill

    qid = _qid(args.lab)
    load_catalog().get(qid)
    regions = not args.quick or args.mode == "choice"  # choices come from where each claim fails
    return cli_drill(qid, mode=args.mode, regions=regions, seed=args.seed, save=not args.no_save)


def cmd_progress(args):
    from faces.progress import Progress

    with Progress() as p:
        if args.action == "export":
            sys.stdout.write(p.export(args.format) + ("" if args.format == "csv" else "\n"))
        else:
            cat = load_catalog()
            states = p.states()
            print(_table([[q.id, q.title, states.get(q.id, "not tried"), p.due(q.id) or ""] for q in cat],
                         ["id", "title", "state", "next review"]))
            for c in p.calibration():
                print(f"{c['concept']}: {c['inside']}/{c['n']} inside the interval"
                      + (f"; on average {c['bias_factor']:.2g}x {c['direction']}" if c["bias_factor"] else ""))
def cmd_room(args):
    from faces.room import RoomError, RoomStore, room_servers

    try:
        store = RoomStore()
        if args.action == "create":
            if not args.code:
                raise UsageError("room create needs a lab id: archlab room create q08 [--exercise N]")
            room, secret = store.create(_qid(args.code), exercise=None if args.exercise is None else args.exercise - 1,
                                        title=args.title or "", ttl_h=args.ttl_h)
            base = args.base_url.rstrip("/")
            obj = {"code": room.code, "lab": room.qid, "round": room.round, "expires": room.expires.isoformat(),
                   "join": f"{base}/room?room={room.code}",
                   "instructor": f"{base}/room?room={room.code}&key={secret}",
                   "presenter": f"{base}/room?room={room.code}&key={secret}&view=present"}
            if room_servers():  # one explorer process per core: one join link per part of the room
                obj["joins"] = [f"{b}/room?room={room.code}" for b in room_servers()]
            if args.format == "json":
                _emit(obj, "json")
            else:
                print(f"room {room.code} on {room.qid} (expires {room.expires:%Y-%m-%d %H:%M} UTC)")
                for k, link in enumerate(obj.get("joins", [obj["join"]])):
                    print(f"participants{f' (part {k + 1})' if 'joins' in obj else ''}: {link}")
                print(f"instructor (keep it private, shown once): {obj['instructor']}")
                print(f"presenter: {obj['presenter']}")
            return 0
        if not args.code:
            raise UsageError("room export needs a room code: archlab room export CODE --format csv")
        if args.format == "json":
            _emit(store.rows(args.code), "json")
        else:
            sys.stdout.write(store.export_csv(args.code, trusted=True))
    except RoomError as e:
        raise UsageError(str(e)) from None
    return 0


def cmd_handout(args):
    from faces.handout import write_handout

    lab = get_lab(_qid(args.lab))
    files = write_handout(lab.id, args.out, answer_key=args.answer_key, base_url=args.base_url, seed=args.seed,
                          pdf=not args.no_pdf)
    for f in files:
        print(f)
    if not args.no_pdf and not any(f.suffix == ".pdf" for f in files):
        print("archlab: no PDF written (needs chromium at /usr/bin/chromium and playwright); print the HTML "
              "from a browser instead", file=sys.stderr)


def cmd_warm(args):
    from faces import runs

    ids = [get_lab(_qid(x)).id for x in args.labs] if args.labs else built_ids()
    t0 = time.perf_counter()
    done = runs.warm(ids, seed=args.seed, log=lambda line: print(line, file=sys.stderr, flush=True))
    ran = sum(not d["cached"] for d in done)
    print(f"warm: {len(done)} settings of {len(ids)} lab(s), {ran} run now, {len(done) - ran} already cached, "
          f"{time.perf_counter() - t0:.1f} s")


def _engine_options(s) -> None:
    """Options of the commands that run the sweep engine (check, sweep, report)."""
    from labs.sweeps import BACKENDS

    s.add_argument("--reps", type=int, default=1, help="replications per setting (mean and t interval)")
    s.add_argument("--jobs", type=int, default=1, help="worker processes (joblib; Dask workers of a local cluster)")
    s.add_argument("--backend", choices=BACKENDS, default="loky",
                   help="joblib backend: loky (this machine) or dask (a LocalCluster, or --scheduler)")
    s.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://host:8786")
    s.add_argument("--scheduler-timeout", type=float, default=5.0, help=argparse.SUPPRESS)
    s.add_argument("--seed", type=_seed_arg, default=0)
    s.add_argument("--no-cache", action="store_true",
                   help="run every task again (neither read nor write the replication cache)")
    s.add_argument("--progress-every", type=float, default=0.0, help=argparse.SUPPRESS)


def cmd_calibrate(args):
    from labs import calibration as cal

    try:
        loads = [float(x) for x in args.loads.split(",")] if args.loads else cal.DEFAULT_LOADS
        report = cal.calibrate(args.lab, loads, args.reps, args.requests, args.seed, port=args.port,
                               log=lambda s: print(s, file=sys.stderr, flush=True))
    except (ValueError, cal.CalibrationError) as e:
        raise UsageError(str(e)) from None
    except KeyboardInterrupt:
        print("archlab: interrupted; server and load generator stopped", file=sys.stderr)
        return 130
    cal.write_report(report, args.out or cal.REPORT_DIR / f"{args.lab}.json")
    if args.format == "json":
        _emit(report, "json")
    else:
        print(_table(cal.table_rows(report), cal.TABLE_HEADER))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="archlab", description="ArchLab: simulate AI/ML architecture patterns and check claims.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("list", help="the 30 questions and which labs are built")
    s.add_argument("--format", choices=["json", "table"], default="table")
    s.set_defaults(func=cmd_list)
    s = sub.add_parser("show", help="a question's parameters and metrics")
    s.add_argument("lab")
    s.add_argument("--format", choices=["json", "table"], default="table")
    s.set_defaults(func=cmd_show)
    s = sub.add_parser("run", help="run a lab once")
    s.add_argument("lab")
    s.add_argument("--set", action="append", metavar="NAME=VALUE")
    s.add_argument("--seed", type=_seed_arg, default=0)
    s.add_argument("--format", choices=["json", "table"], default="table")
    s.set_defaults(func=cmd_run)
    s = sub.add_parser("check", help="every claim's verdict with the region where it holds")
    s.add_argument("labs", nargs="*")
    _engine_options(s)
    s.add_argument("--format", choices=["json", "table"], default="table")
    s.set_defaults(func=cmd_check)
    s = sub.add_parser("sweep", help="vary one or two parameters, with replications")
    s.add_argument("lab")
    s.add_argument("--vary", required=True, action="append", metavar="NAME=V1,V2,...")
    s.add_argument("--set", action="append", metavar="NAME=VALUE")
    _engine_options(s)
    s.add_argument("--format", choices=["json", "csv"], default="csv")
    s.set_defaults(func=cmd_sweep)
    s = sub.add_parser("assign", help="student notebooks (nbgrader markers, no outputs)")
    s.add_argument("labs", nargs="*")
    s.add_argument("--all", action="store_true", help="every built lab")
    s.add_argument("--out", required=True, metavar="DIR")
    s.set_defaults(func=cmd_assign)
    s = sub.add_parser("drill", help="interview drill in the terminal (answers read from stdin)")
    s.add_argument("lab")
    s.add_argument("--mode", choices=["open", "choice"], default="open",
                   help="state each claim's verdict (open) or pick where it holds (choice)")
    s.add_argument("--quick", action="store_true",
                   help="judge verdicts at the defaults only (no sweep; ignored with --mode choice)")
    s.add_argument("--no-save", action="store_true", help="do not record the drill in the progress store")
    s.add_argument("--seed", type=_seed_arg, default=0)
    s.set_defaults(func=cmd_drill)
    s = sub.add_parser("progress", help="your predictions, drills, calibration and reviews")
    s.add_argument("action", choices=["show", "export"], nargs="?", default="show")
    s.add_argument("--format", choices=["json", "csv"], default="json")
    s.set_defaults(func=cmd_progress)
    s = sub.add_parser("report", help="the claim scoreboard: one static HTML page (+ report.json)")
    s.add_argument("labs", nargs="*")
    s.add_argument("--out", required=True, metavar="DIR")
    _engine_options(s)
    s.set_defaults(func=cmd_report)
    s = sub.add_parser("bench", help="simulator overhead: sim components vs bare SimPy")
    s.add_argument("--customers", type=int, default=50_000)
    s.add_argument("--rounds", type=int, default=5)
    s.set_defaults(func=cmd_bench)
    s = sub.add_parser("room", help="workshop rooms: create one, export its answers")
    s.add_argument("action", choices=["create", "export"])
    s.add_argument("code", nargs="?", help="create: the lab id (q08); export: the room code")
    s.add_argument("--exercise", type=int, help="create: start at exercise N (1-based) instead of the defaults")
    s.add_argument("--title", help="create: a session title")
    s.add_argument("--ttl-h", type=float, default=12.0, help="create: hours until the code expires")
    s.add_argument("--base-url", default="http://localhost:8501", help="create: where the explorer is served")
    s.add_argument("--format", choices=["csv", "json", "table"], default=None)
    s.set_defaults(func=cmd_room)
    s = sub.add_parser("handout", help="a printable handout (and answer key + instructor guide)")
    s.add_argument("lab")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--answer-key", "--key", dest="answer_key", action="store_true",
                   help="also the answer key (measured values, verdicts, regions) and the instructor guide")
    s.add_argument("--base-url", default="http://localhost:8501", help="the explorer's address in links and QR codes")
    s.add_argument("--no-pdf", action="store_true", help="HTML only (a PDF needs chromium)")
    s.add_argument("--seed", type=_seed_arg, default=0)
    s.set_defaults(func=cmd_handout)
    s = sub.add_parser("warm", help="run each lab's defaults and exercise settings into the explorer's cache")
    s.add_argument("labs", nargs="*", help="lab ids (default: every built lab)")
    s.add_argument("--seed", type=_seed_arg, default=0)
    s.set_defaults(func=cmd_warm)
    s = sub.add_parser("calibrate", help="the simulator against a real server on 127.0.0.1")
    s.add_argument("lab")
    s.add_argument("--loads", help="fractions of the unbatched capacity, e.g. 0.3,0.5,0.7,0.85")
    s.add_argument("--reps", type=int, default=2)
    s.add_argument("--requests", type=int, default=1500)
    s.add_argument("--seed", type=_seed_arg, default=0)
    s.add_argument("--port", type=int, default=0, help="server port on 127.0.0.1 (0: a free one)")
    s.add_argument("--out", help="report path (default data/calibration/<lab>.json)")
    s.add_argument("--format", choices=["json", "table"], default="table")
    s.set_defaults(func=cmd_calibrate)
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args) or 0
    except (UsageError, ParamError, CatalogError, BackendError) as exc:
        msg = " ".join(str(exc).split())
        print(f"archlab: error: {msg}", file=sys.stderr)
        return 2
    except KeyError as exc:  # catalogue lookups
        print(f"archlab: error: {' '.join(str(exc).strip(chr(39)).split())}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # the progress store (ProgressError): one line, nothing lost
        if type(exc).__name__ != "ProgressError":
            raise
        print(f"archlab: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
