"""The one sweep engine: tasks of (lab, parameters, replication), on joblib, with a replication cache.

Every face that runs a lab at many settings comes through here: ``archlab sweep``
(``sweep``), ``archlab check`` and the explorer's region finder (``Lab.check`` ->
``labs.claims.SweepRunner`` -> ``run_points``), the notebooks (``Lab.check``) and the
scoreboard (``archlab report``).

* **Seeds.** A task's seed comes from ``SeedSequence`` over the lab id, the fixed
  parameters and the replication number (``replication_seed``), never from the order
  or the worker, so a sweep gives byte-identical numbers on any backend (loky, Dask),
  worker count and order. The values being varied share a replication's seed:
  neighbouring settings meet common random numbers.
* **Backends.** Tasks go to ``joblib.Parallel``; the backend is whatever
  ``joblib.parallel_config`` says (loky by default; ``backend_config`` below starts a
  Dask ``LocalCluster`` or joins a scheduler). On Linux, from a process with no other
  thread (the command line), local workers are forked instead of loky's fresh ones, which
  re-import the labs (seconds each). Results come back in completion order and are put
  back in task order.
* **Replication cache.** Each finished task's metrics, intervals and reasons are
  written at once to a ``sim.cache.DiskCache`` keyed by (lab, full settings, seed) and
  a digest of the lab's code (its module and the ``sim``/``labs`` sources it imports,
  plus the data files labs read), so an interrupted sweep resumes where it stopped and
  a repeated one is free. ``ARCHLAB_REPLICATION_CACHE=0`` (or ``cache=False``) turns it off.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from sim.metrics import t_interval

from .contract import json_number
from .registry import get_lab

__all__ = ["Task", "Point", "replication_seed", "check_seeds", "run_points", "replicate", "sweep",
           "Progress", "BACKENDS", "BackendError", "backend_config", "code_files", "replication_cache"]

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("loky", "dask")
#: With local workers (loky), a sweep runs in this process for up to this long before it starts workers: a
#: short sweep never pays their start-up (the results are the same either way).
LOCAL_FIRST_S = float(os.environ.get("ARCHLAB_LOCAL_FIRST_S", "3"))


# ------------------------------------------------------------------ seeds
def replication_seed(lab_id: str, fixed: dict, rep: int) -> int:
    """The seed of replication ``rep`` of ``lab_id`` with ``fixed`` parameters (order- and worker-free)."""
    digest = hashlib.sha256(json.dumps([lab_id, sorted(fixed.items()), rep], default=str).encode()).digest()
    entropy = int.from_bytes(digest[:16], "little")
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0])


def check_seeds(lab_id: str, seed: int, base: dict, reps: int) -> list[int]:
    """The seeds of ``Lab.check``'s replications: one replication is the given seed itself (as before);
    with more, replication r's seed derives from (lab, the base settings and the seed, r). Every setting of
    a check shares them (common random numbers across the sweep cells and the control)."""
    if reps <= 1:
        return [seed]
    fixed = {**base, "__seed__": seed}
    return [replication_seed(lab_id, fixed, r) for r in range(reps)]


# ------------------------------------------------------------------ code digest and cache
def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in ("sim", "labs"):
        return None
    base = ROOT.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path) -> Iterator[str]:
    pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name == "__init__.py":
        pkg = pkg.rsplit(".", 1)[0] + "._"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                head = pkg.rsplit(".", node.level)[0]
                mod = f"{head}.{node.module}" if node.module else head
            else:
                mod = node.module or ""
            yield mod
            for a in node.names:  # ``from sim import metrics`` imports a module
                yield f"{mod}.{a.name}"


@functools.lru_cache(maxsize=None)
def code_files(lab_id: str) -> tuple[str, ...]:
    """The lab's module, every ``sim``/``labs`` source it imports (transitively) and the data files labs read:
    a coarse digest of the code that decides a lab's numbers."""
    from .registry import _modules

    start = _module_file(_modules()[get_lab(lab_id).id])
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path is None or path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            todo.append(_module_file(name))
            parts = name.split(".")
            for k in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                todo.append(_module_file(".".join(parts[:k])))
    data = sorted(p for p in (ROOT / "data").rglob("*") if p.is_file() and p.name != "questions.json"
                  and "__pycache__" not in p.parts and not p.name.startswith("."))  # not what Python leaves behind
    return tuple(str(p) for p in sorted(seen)) + tuple(str(p) for p in data)


@functools.lru_cache(maxsize=None)
def replication_cache(lab_id: str):
    from sim.cache import DiskCache

    return DiskCache(f"replications-{lab_id}", code=code_files(lab_id))


def _cache_on(cache: bool | None) -> bool:
    if cache is None:
        return os.environ.get("ARCHLAB_REPLICATION_CACHE", "1").lower() not in ("0", "no", "off", "false")
    return cache


# ------------------------------------------------------------------ tasks and points
@dataclass(frozen=True)
class Task:
    """One run: a lab at full (validated) settings with one seed; ``rep`` only labels it."""

    lab: str
    params: tuple  # sorted (name, value) pairs
    seed: int
    rep: int = 0

    @property
    def key(self) -> dict:
        return {"lab": self.lab, "params": [[k, v] for k, v in self.params], "seed": self.seed}


@dataclass
class Point:
    """What a run leaves for sweeps and verdicts: metrics, intervals and reasons per arm (in the lab's order)."""

    metrics: dict
    intervals: dict
    reasons: dict
    elapsed_s: float
    cached: bool = False

    def encode(self) -> bytes:
        # lists of pairs keep the lab's arm and metric order (DiskCache.put_json would sort keys)
        obj = {"metrics": [[a, list(m.items())] for a, m in self.metrics.items()],
               "intervals": [[a, [[k, list(v)] for k, v in m.items()]] for a, m in self.intervals.items()],
               "reasons": [[a, list(m.items())] for a, m in self.reasons.items()],
               "elapsed_s": self.elapsed_s}
        return json.dumps(obj, default=float).encode()

    @classmethod
    def decode(cls, data: bytes) -> "Point":
        obj = json.loads(data)
        return cls({a: dict(m) for a, m in obj["metrics"]},
                   {a: {k: tuple(v) for k, v in m} for a, m in obj["intervals"]},
                   {a: dict(m) for a, m in obj["reasons"]}, obj["elapsed_s"], cached=True)


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def run_task(task: Task) -> Point:
    """Run one task (in a worker): the lab's ``simulate`` at the task's settings and seed."""
    res = get_lab(task.lab).run(task.seed, **dict(task.params))
    metrics = {str(a): {str(k): _plain(v) for k, v in m.items()} for a, m in res.metrics.items()}
    intervals = {str(a): {str(k): tuple(float(b) for b in v) for k, v in m.items() if v is not None}
                 for a, m in (res.intervals or {}).items()}
    reasons = {str(a): {str(k): str(v) for k, v in m.items()} for a, m in (res.reasons or {}).items()}
    return Point(metrics, intervals, reasons, float(res.elapsed_s))


def make_task(lab, params: dict, seed: int, rep: int = 0) -> Task:
    full = dict(lab.settings(params))
    return Task(lab.id, tuple(sorted(full.items())), int(seed), rep)


def run_points(tasks: list[Task], jobs: int = 1, progress: Callable[[int, int, int], None] | None = None,
               cache: bool | None = None) -> list[Point]:
    """Every task's Point, in task order: from the replication cache where it is there, else run on joblib
    (``n_jobs=jobs`` on the backend ``joblib.parallel_config`` names) and stored as soon as it returns.

    ``progress(done, total, cached)`` is called once with the cache hits and after every finished task.
    Duplicate tasks run once. Local workers (loky, the default) with ``jobs`` > 1 are processes forked from
    this one where that is safe (``_can_fork``); otherwise the first tasks run in this process for up to
    ``LOCAL_FIRST_S`` seconds, then the rest go to loky's workers (so a short sweep never waits for them).
    """
    use_cache = _cache_on(cache)
    out: list[Point | None] = [None] * len(tasks)
    todo: dict[Task, list[int]] = {}
    for i, t in enumerate(tasks):
        hit = None
        if use_cache and t not in todo:
            got = replication_cache(t.lab).get_bytes("point", t.key, "json")
            if got is not None:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    hit = Point.decode(got[0])
        if hit is not None:
            out[i] = hit
        else:
            todo.setdefault(t, []).append(i)
    total, cached = len(tasks), len(tasks) - sum(len(v) for v in todo.values())
    if progress:
        progress(cached, total, cached)
    done = cached
    order = list(todo)

    def store(t: Task, p: Point):
        nonlocal done
        if use_cache:
            replication_cache(t.lab).put_bytes("point", t.key, p.encode(), "json")
        for i in todo[t]:
            out[i] = p
        done += len(todo[t])
        if progress:
            progress(done, total, cached)

    local = _backend_name() == "loky"
    if local and jobs > 1 and len(order) > 1 and _can_fork():
        for t, p in _forked(order, jobs):
            store(t, p)
        return out  # type: ignore[return-value]
    if local and jobs > 1:
        # Start in process: worker processes cost seconds to start and import a lab (torch for some), more than
        # a cheap sweep's whole run on a busy machine. Hand over to workers once this has taken LOCAL_FIRST_S.
        t0 = time.perf_counter()
        while order and len(order) > 1 and time.perf_counter() - t0 < LOCAL_FIRST_S:
            t = order.pop(0)
            store(t, run_task(t))
    if (jobs <= 1 and local) or len(order) < 2:
        for t in order:  # in process: no worker start-up for a handful of runs
            store(t, run_task(t))
    elif order:
        from joblib import Parallel, delayed

        runner = Parallel(n_jobs=jobs, return_as="generator_unordered")
        for idx, p in runner(delayed(_indexed)(k, t) for k, t in enumerate(order)):
            store(order[idx], p)
    return out  # type: ignore[return-value]


def _can_fork() -> bool:
    """Local workers may be forked from this process: Linux (macOS frameworks are not fork-safe), not turned off
    (``ARCHLAB_FORK=0``) and this process runs no other thread (a fork copies only the calling thread, so
    another thread's locks could be held forever in the child; the explorer and notebook kernels run
    threads and use loky)."""
    import multiprocessing as mp
    import threading

    return (os.environ.get("ARCHLAB_FORK", "1") != "0" and sys.platform.startswith("linux")  # macOS: spawn
            and "fork" in mp.get_all_start_methods() and threading.active_count() == 1)


def _run_chunk(chunk: list[Task]) -> list[Point]:
    return [run_task(t) for t in chunk]


def _forked(order: list[Task], jobs: int) -> Iterator[tuple[Task, Point]]:
    """(task, point) as they finish on ``jobs`` processes forked from this one: they start with its imports
    (the labs, numpy, scipy, sklearn) instead of importing them again as loky's fresh workers do, seconds each.
    Tasks go in runs of neighbours (same lab, adjacent settings), so a part cache serves a whole run."""
    import concurrent.futures as cf
    import multiprocessing as mp

    size = max(1, math.ceil(len(order) / (jobs * 8)))
    chunks = [order[i:i + size] for i in range(0, len(order), size)]
    pool = cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork"))
    try:
        futures = {pool.submit(_run_chunk, c): c for c in chunks}
        for f in cf.as_completed(futures):
            yield from zip(futures[f], f.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _indexed(k: int, t: Task) -> tuple[int, Point]:
    return k, run_task(t)


def _backend_name() -> str:
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    name = type(backend).__name__.lower()
    return "dask" if "dask" in name else "loky"


# ------------------------------------------------------------------ replications
def replicate(points: list[Point]) -> Point:
    """Points of one setting's replications as one: each metric's mean over the replications with a
    Student-t 95% interval across them (the evaluator's interval); one replication is returned as it is."""
    if len(points) == 1:
        return points[0]
    first = points[0]
    metrics, intervals, reasons = {}, {}, {}
    for arm in first.metrics:
        metrics[arm], intervals[arm] = {}, {}
        for k in first.metrics[arm]:
            ci = t_interval([_num(p.metrics.get(arm, {}).get(k)) for p in points])
            metrics[arm][k] = float(ci.estimate)
            if math.isfinite(ci.low) and math.isfinite(ci.high):
                intervals[arm][k] = (float(ci.low), float(ci.high))
            elif not math.isfinite(ci.estimate):
                why = next((p.reasons.get(arm, {}).get(k) for p in points if p.reasons.get(arm, {}).get(k)), None)
                if why:
                    reasons.setdefault(arm, {})[k] = why
    return Point(metrics, intervals, reasons, sum(p.elapsed_s for p in points))


def _num(v) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


# ------------------------------------------------------------------ sweeps
def sweep(lab_id: str, base: dict, vary: dict[str, list], reps: int = 1, jobs: int = 1,
          progress: Callable[[int, int, int], None] | None = None, seed: int = 0,
          cache: bool | None = None, verdicts: bool = False) -> list[dict]:
    """Rows of (values, arm, metric, mean, ci_low, ci_high, reps) over the grid of ``vary``.

    Replication r of every grid point runs with ``replication_seed(lab, fixed, r)`` where ``fixed`` is the
    settings that do not vary (and ``seed`` when it is not 0). With ``verdicts`` each row of a claim's
    (arm, metric) also carries the claims' verdicts at that cell (``claims``: id -> verdict).
    """
    lab = get_lab(lab_id)
    names = list(vary)
    fixed = {k: v for k, v in lab.settings(base).items() if k not in vary}
    if seed:
        fixed["__seed__"] = seed
    grid = list(itertools.product(*vary.values()))
    for combo in grid:  # refuse a forbidden point before any simulation time is spent
        lab.settings({**base, **dict(zip(names, combo))})
    seeds = [replication_seed(lab.id, fixed, rep) for rep in range(reps)]
    tasks = [make_task(lab, {**base, **dict(zip(names, combo))}, seeds[rep], rep)
             for combo in grid for rep in range(reps)]
    results = run_points(tasks, jobs=jobs, progress=progress, cache=cache)
    claims = lab.question.claims if verdicts else []
    rows = []
    for gi, combo in enumerate(grid):
        chunk = results[gi * reps:(gi + 1) * reps]
        cell_verdicts = _cell_claims(claims, chunk, reps) if claims else {}
        for arm in chunk[0].metrics:
            for metric in chunk[0].metrics[arm]:
                ci = t_interval([_num(c.metrics[arm].get(metric)) for c in chunk])
                row = {**dict(zip(names, combo)), "arm": arm, "metric": metric,
                       "mean": json_number(ci.estimate), "ci_low": json_number(ci.low),
                       "ci_high": json_number(ci.high), "reps": reps}
                hit = {cid: v for cid, (a, m, v) in cell_verdicts.items() if a == arm and m == metric}
                if verdicts:
                    row["claims"] = hit
                rows.append(row)
    return rows


def _cell_claims(claims, chunk: list[Point], reps: int) -> dict:
    from .claims import point_verdict

    p = replicate(chunk)
    out = {}
    for c in claims:
        try:
            v = point_verdict(c, p.metrics, p.intervals, p.reasons, reps=reps if reps > 1 else None)
        except KeyError:
            continue
        out[c.id] = (c.arm, c.metric, v.verdict)
    return out


# ------------------------------------------------------------------ progress
class Progress:
    """``label: done/total tasks (k cached), elapsed, ~ETA left`` lines on a stream (stderr).

    The estimate extrapolates the rate of the tasks run in this process (cache hits cost nothing).
    ``every_s`` throttles the lines (the last one is always printed).
    """

    def __init__(self, label: str, stream=None, every_s: float = 0.0, clock=time.monotonic):
        self.label, self.stream, self.every_s, self.clock = label, stream, every_s, clock
        self.t0 = clock()
        self.last = -math.inf
        self.offset = (0, 0)  # (done, total) of earlier batches, for a check's successive batches

    def __call__(self, done: int, total: int, cached: int = 0) -> None:
        now = self.clock()
        if done < total and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - self.t0
        ran = done - cached
        if done >= total:
            eta = "done"
        elif ran > 0:
            eta = f"~{_fmt_s(elapsed / ran * (total - done))} left"
        else:
            eta = "estimating time left"
        extra = f" ({cached} cached)" if cached else ""
        print(f"{self.label}: {done}/{total} tasks{extra}, {_fmt_s(elapsed)} elapsed, {eta}",
              file=self.stream or sys.stderr, flush=True)


def _fmt_s(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


# ------------------------------------------------------------------ backends
class BackendError(ValueError):
    """A backend that cannot be used (unknown name, Dask missing, scheduler unreachable): one line."""


@contextlib.contextmanager
def backend_config(backend: str = "loky", scheduler: str | None = None, jobs: int = 1,
                   timeout_s: float = 10.0):
    """``joblib.parallel_config`` for the chosen backend for the duration of the block.

    ``dask`` without ``scheduler`` starts a ``dask.distributed.LocalCluster`` (``jobs`` worker processes, one
    thread each) and stops it afterwards; with ``scheduler`` it joins that cluster (``BackendError`` when it
    does not answer within ``timeout_s``).
    """
    from joblib import parallel_config

    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "loky":
        if scheduler:
            raise BackendError("--scheduler needs --backend dask")
        with parallel_config(backend="loky"):
            yield
        return
    try:
        import distributed  # noqa: F401
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise BackendError('the dask backend needs Dask: pip install "archlab[cluster]" '
                           '(or pip install "dask[distributed]")') from None
    import logging

    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.worker",
                 "distributed.core", "distributed.http.proxy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.ExitStack() as stack:
        if scheduler:
            try:
                client = stack.enter_context(Client(scheduler, timeout=timeout_s))
            except (OSError, TimeoutError, ValueError) as e:
                raise BackendError(f"cannot reach the Dask scheduler at {scheduler!r} within "
                                   f"{timeout_s:g} s ({type(e).__name__})") from None
        else:
            cluster = stack.enter_context(LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                                       dashboard_address=None, silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster))
        _ship_path(client)
        with parallel_config(backend="dask"):
            yield


def _ship_path(client) -> None:
    """Workers of a local cluster import the project from the same checkout (PYTHONPATH for remote ones)."""
    root = str(ROOT)

    def add(root=root):
        import sys as _sys

        if root not in _sys.path and os.path.isdir(root):
            _sys.path.insert(0, root)

    with contextlib.suppress(Exception):
        client.run(add)
