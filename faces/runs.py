"""The explorer's run path behind its memory caches: a disk cache that ``archlab warm`` fills, and a queue.

``faces.pages.run_lab`` / ``faces.pages.lab_plots`` (``st.cache_data``, bounded) call ``run`` / ``plots``
here on a miss. These look in a disk cache first, an entry per (lab, setting, seed) in
the lab's replication cache folder (``labs.sweeps.replication_cache``: keyed by a digest
of the lab's code, so a changed lab never reads an old entry), and only then run the lab
(``Lab.run``, ``Lab.plots``). ``archlab warm q08 q11`` runs each chosen lab's defaults and
every exercise setting through the same two functions, so the first click of a workshop
room is a cache hit even in a freshly started explorer process.

Simulations in one explorer process share one interpreter lock: eight new settings
started at once would each take eight times as long. ``SLOTS`` simulations run at a
time; the others wait in line (first come, first served), and the page says so
(``queue_text``) instead of freezing.
"""
from __future__ import annotations

import os
import pickle
import threading
import time
from typing import Callable, Iterable

from labs.registry import get_lab

SLOTS = max(1, int(os.environ.get("ARCHLAB_RUN_SLOTS", "1")))
_gate = threading.BoundedSemaphore(SLOTS)
_lock = threading.Lock()
_waiting = 0
_running = 0
_key_locks: dict[str, threading.Lock] = {}  # one lock per setting being computed: asked twice, run once


def _disk(lab_id: str):
    from labs.sweeps import replication_cache

    return replication_cache(lab_id)


def _key(lab_id: str, setting: tuple, seed: int) -> dict:
    return {"lab": lab_id, "params": [[k, v] for k, v in setting], "seed": int(seed)}


def _load(lab_id: str, kind: str, key: dict):
    try:
        hit = _disk(lab_id).get_bytes(kind, key, ext="pkl")
    except Exception:  # a cache problem costs a run, never the page
        return None
    if hit is None:
        return None
    try:
        return pickle.loads(hit[0])
    except Exception:
        return None


def _store(lab_id: str, kind: str, key: dict, value) -> None:
    try:
        _disk(lab_id).put_bytes(kind, key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), ext="pkl")
    except Exception:
        pass


def queue_depth() -> tuple[int, int]:
    """(running, waiting) simulations in this process."""
    with _lock:
        return _running, _waiting


def queue_text(doing: str = "Simulating…") -> str:
    """The spinner's words: plain when a slot is free, the place in line when others are ahead."""
    running, waiting = queue_depth()
    if running < SLOTS:
        return doing
    return (f"Queued: {running + waiting} run(s) ahead of yours on this server; yours starts when a slot "
            f"frees (cached settings answer at once).")


def _gated(fn: Callable):
    global _waiting, _running
    with _lock:
        _waiting += 1
    try:
        _gate.acquire()
    finally:
        with _lock:
            _waiting -= 1
    with _lock:
        _running += 1
    try:
        return fn()
    finally:
        with _lock:
            _running -= 1
        _gate.release()


def _once(kind: str, lab_id: str, key: dict, make: Callable, inputs: Callable = lambda: None):
    """The disk entry, or ``make(inputs())`` stored there (``make`` in a queue slot, ``inputs`` before taking
    one); sessions asking for the same entry at once wait for one computation."""
    hit = _load(lab_id, kind, key)
    if hit is not None:
        return hit
    name = repr((kind, lab_id, key))
    with _lock:
        lock = _key_locks.setdefault(name, threading.Lock())
    try:
        with lock:
            hit = _load(lab_id, kind, key)  # another session may have made it while this one waited
            if hit is not None:
                return hit
            given = inputs()
            value = _gated(lambda: make(given))
            _store(lab_id, kind, key, value)
            return value
    finally:
        with _lock:
            if not lock.locked():
                _key_locks.pop(name, None)


def run(lab_id: str, setting: tuple, seed: int):
    """``Lab.run`` at ``setting`` (sorted (name, value) pairs), from the disk cache when warmed."""
    return _once("explorer-run", lab_id, _key(lab_id, setting, seed),
                 lambda _: get_lab(lab_id).run(seed, **dict(setting)))


def plots(lab_id: str, setting: tuple, seed: int, result_fn: Callable[[], object]) -> list:
    """The lab's plots as the explorer draws them (``faces.explorer.plot_payload``), from the disk cache when warm."""
    from faces import explorer as ex

    def make(result):
        return [ex.plot_payload(p) for p in get_lab(lab_id).plots(result)]

    return _once("explorer-plots", lab_id, _key(lab_id, setting, seed), make, result_fn)


def session_settings(lab_id: str) -> list[tuple[str, tuple]]:
    """(label, setting key) of the defaults and of every exercise of a lab: what a workshop clicks first."""
    from faces.explorer import params_key

    lab = get_lab(lab_id)
    out = [("defaults", params_key(lab.defaults()))]
    for k, e in enumerate(lab.exercises):
        out.append((f"exercise {k + 1}", params_key(lab.validate(e.changes))))
    return out


def warm(lab_ids: Iterable[str], seed: int = 0, log: Callable[[str], None] = print) -> list[dict]:
    """Run the defaults and every exercise setting of each lab (and their plots) into the disk cache."""
    done = []
    ids = [get_lab(i).id for i in lab_ids]
    todo = [(i, label, s) for i in ids for label, s in session_settings(i)]
    for n, (lab_id, label, setting) in enumerate(todo, 1):
        t0 = time.perf_counter()
        key = _key(lab_id, setting, seed)
        was = _load(lab_id, "explorer-run", key) is not None and _load(lab_id, "explorer-plots", key) is not None
        result = run(lab_id, setting, seed)
        plots(lab_id, setting, seed, lambda: result)
        spent = time.perf_counter() - t0
        log(f"[{n}/{len(todo)}] {lab_id} {label}: {'already warm' if was else 'ran'} in {spent:.2f} s")
        done.append({"lab": lab_id, "setting": label, "cached": was, "elapsed_s": round(spent, 3)})
    return done
