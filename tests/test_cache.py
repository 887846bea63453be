"""sim.cache.DiskCache: content + code keys, integrity checks, atomic writes, no crash on damage.

Every test works in its own temporary folder (``tmp_path``), never in the user's cache.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from sim.cache import DiskCache, cache_root, code_digest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHLAB_CACHE", str(tmp_path / "c"))
    return tmp_path / "c"


def _code(tmp_path, text="x = 1\n"):
    path = tmp_path / "recipe.py"
    path.write_text(text)
    return path


def test_cache_root_follows_the_environment(root, monkeypatch, tmp_path):
    assert cache_root() == root
    monkeypatch.delenv("ARCHLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "archlab"


def test_round_trips_and_key_sensitivity(root, tmp_path):
    c = DiskCache("t", code=[_code(tmp_path)])
    assert c.folder.is_relative_to(root)
    key = {"a": 1, "b": [1.5, "x"], "t": (1, 2)}
    assert c.get_json("thing", key) is None
    assert c.put_json("thing", key, {"v": [0.1, 0.2]})
    assert c.get_json("thing", key) == {"v": [0.1, 0.2]}
    assert c.get_json("thing", {**key, "a": 2}) is None
    assert c.get_json("other", key) is None
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    c.put_array("arr", key, arr)
    got = c.get_array("arr", key)
    assert got.dtype == arr.dtype and np.array_equal(got, arr)
    c.put_pickle("obj", key, {"set": {1, 2}}, meta={"accuracy": 0.5})
    assert c.get_pickle("obj", key) == ({"set": {1, 2}}, {"accuracy": 0.5})


def test_changed_code_never_reads_an_old_entry(root, tmp_path):
    path = _code(tmp_path)
    DiskCache("t", code=[path]).put_json("r", {"k": 1}, 42)
    assert DiskCache("t", code=[path]).get_json("r", {"k": 1}) == 42
    digest = code_digest([path])
    path.write_text("x = 2\n")  # the recipe changed; a new process digests the new bytes
    from sim.cache import file_digest

    file_digest.cache_clear()
    assert code_digest([path]) != digest
    assert DiskCache("t", code=[path]).get_json("r", {"k": 1}) is None


def test_a_manifest_for_another_key_is_refused(root, tmp_path):
    c = DiskCache("t", code=[_code(tmp_path)])
    c.put_json("r", {"k": 1}, 1)
    _, man = c.paths("r", {"k": 1}, "json")
    doc = json.loads(man.read_text())
    doc["key"] = {"k": 2}
    man.write_text(json.dumps(doc))
    with pytest.warns(RuntimeWarning, match="manifest field 'key'"):
        assert c.get_json("r", {"k": 1}) is None


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_tampered_pickle_is_never_unpickled(root, tmp_path):
    c = DiskCache("t", code=[_code(tmp_path)])
    c.put_pickle("m", {"k": 1}, [1, 2, 3])
    payload, _ = c.paths("m", {"k": 1}, "pkl")
    marker = tmp_path / "pwned"
    payload.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.warns(RuntimeWarning, match="SHA-256"):
        assert c.get_pickle("m", {"k": 1}) is None
    assert not marker.exists()


def test_damaged_files_are_misses_not_crashes(root, tmp_path):
    c = DiskCache("t", code=[_code(tmp_path)])
    c.put_json("j", {"k": 1}, [1])
    c.put_array("a", {"k": 1}, np.ones(3))
    for path in c.folder.iterdir():
        path.write_bytes(path.read_bytes()[:5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert c.get_json("j", {"k": 1}) is None
        assert c.get_array("a", {"k": 1}) is None
    c.put_json("j", {"k": 1}, [2])  # a rewrite repairs the entry
    assert c.get_json("j", {"k": 1}) == [2]


def test_torch_state_is_loaded_weights_only(root, tmp_path):
    torch = pytest.importorskip("torch")
    c = DiskCache("t", code=[_code(tmp_path)])
    state = {"w": torch.arange(4.0)}
    c.put_torch_state("s", {"k": 1}, state, meta={"n": 4})
    got, meta = c.get_torch_state("s", {"k": 1})
    assert torch.equal(got["w"], state["w"]) and meta == {"n": 4}


_WRITER = """
import os, sys
import numpy as np
from sim.cache import DiskCache
c = DiskCache("t", code=[sys.argv[1]])
for _ in range(30):
    c.put_array("big", {"k": 1}, np.full(200_000, float(sys.argv[2]), dtype=np.float64))
"""


def test_concurrent_writers_leave_a_whole_entry(root, tmp_path):
    # two separate processes (plain subprocesses: a broken child fails the test instead of hanging a pool)
    code = _code(tmp_path)
    env = {**os.environ, "ARCHLAB_CACHE": str(root), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(code), v], env=env) for v in ("1", "2")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # payload of one writer, manifest of the other: a miss
        got = DiskCache("t", code=[code]).get_array("big", {"k": 1})
    assert got is None or (got.shape == (200_000,) and len(set(got.tolist())) == 1)  # never a mix
    assert not [p for p in DiskCache("t", code=[code]).folder.iterdir() if p.name.endswith(".tmp")]
