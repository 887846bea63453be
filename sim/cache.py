"""ArchLab's one disk cache: what is computed once per machine (trained models, attack curves).

An entry is keyed by its content key (a JSON-able dict: the parameters and seed that
decide it), by a digest of the code that produced it (the caller names the source files
or modules; their bytes are hashed when the cache object is made, i.e. at import) and by
the library versions, so a changed lab or model recipe never reads an old entry.
Values are JSON, ``.npy`` arrays (``allow_pickle=False``), pickles or torch state dicts.
Every entry is written payload first, then a JSON manifest naming its key, code digest
and the payload's SHA-256, each through a temporary file and ``os.replace`` (atomic: two
processes never see half an entry). A read checks the manifest and the hash before it
decodes anything: a pickle is unpickled, a state dict loaded (``weights_only=True``) only
if its bytes match; anything missing, damaged or stale is a miss, never a crash.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

__all__ = ["cache_root", "DiskCache", "fingerprint", "file_digest", "code_digest", "library_versions"]

MANIFEST_FORMAT = 2


def cache_root() -> Path:
    """``$ARCHLAB_CACHE``, else ``$XDG_CACHE_HOME/archlab``, else ``~/.cache/archlab``."""
    env = os.environ.get("ARCHLAB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "archlab"


def fingerprint(obj) -> str:
    """SHA-256 of a JSON-able object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes, read once per process (the code that is running)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _source_path(src) -> str:
    if isinstance(src, ModuleType):
        return str(Path(src.__file__).resolve())
    return str(Path(src).resolve())


def code_digest(sources: Iterable[Any]) -> str:
    """One digest of the bytes of ``sources`` (paths or modules), in the given order; file names
    are not part of it, so moving a checkout keeps its cache."""
    return fingerprint([file_digest(_source_path(s)) for s in sources])


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor(): what a stored timing was measured on."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    out = {}
    for dist in ("torch", "scikit-learn", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:  # pragma: no cover
            out[dist] = "none"
    return out


def _normal(key) -> Any:
    """The key as it reads back from JSON (tuples become lists, ...)."""
    return json.loads(json.dumps(key, sort_keys=True, default=str))


class DiskCache:
    """Entries under ``cache_root()/<namespace>-<library versions>/`` (the root is read at each
    access, so a changed ``$ARCHLAB_CACHE`` takes effect at once).

    ``code``: the source files or modules whose code produces this cache's entries; their
    digest (taken now) is part of every entry's key. A folder that cannot be written only
    loses the caching, never the result.
    """

    def __init__(self, namespace: str, code: Iterable[Any] = ()):
        self.namespace = namespace
        self.code = code_digest(list(code))

    @property
    def folder(self) -> Path:
        tag = self.namespace + "-" + "-".join(f"{k}{v}" for k, v in library_versions().items())
        return cache_root() / re.sub(r"[^A-Za-z0-9._-]", "_", tag)

    # -- paths and raw entries
    def paths(self, kind: str, key: dict, ext: str) -> tuple[Path, Path]:
        """(payload, manifest) of an entry."""
        name = f"{re.sub(r'[^A-Za-z0-9._-]', '_', kind)}-{fingerprint([key, self.code])[:32]}"
        return self.folder / f"{name}.{ext}", self.folder / f"{name}.manifest.json"

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(data):x}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def put_bytes(self, kind: str, key: dict, data: bytes, ext: str = "bin", meta: dict | None = None) -> bool:
        """Store ``data``; payload first, manifest last (a crash in between leaves a miss)."""
        path, man = self.paths(kind, key, ext)
        manifest = {"format": MANIFEST_FORMAT, "kind": kind, "key": _normal(key), "code": self.code,
                    "versions": library_versions(), "file": path.name,
                    "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data), "meta": meta or {}}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._atomic_write(path, data)
            self._atomic_write(man, json.dumps(manifest, sort_keys=True, indent=1).encode())
            return True
        except OSError:
            return False

    def get_bytes(self, kind: str, key: dict, ext: str = "bin") -> tuple[bytes, dict] | None:
        """``(payload, manifest meta)`` if the entry exists, names this key and code, and its bytes
        hash to the manifest's SHA-256; else None."""
        path, man = self.paths(kind, key, ext)
        try:
            text = man.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None  # a plain miss: stay quiet
        except OSError as exc:
            return self._damaged(man, exc)
        try:
            manifest = json.loads(text)
            if not isinstance(manifest, dict):
                raise ValueError("manifest is not an object")
            expect = {"format": MANIFEST_FORMAT, "kind": kind, "key": _normal(key), "code": self.code,
                      "versions": library_versions(), "file": path.name}
            for k, v in expect.items():
                if manifest.get(k) != v:
                    raise ValueError(f"manifest field {k!r} does not match this entry")
            data = path.read_bytes()
        except (OSError, ValueError) as exc:
            return self._damaged(man, exc)
        if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
            return self._damaged(path, ValueError("SHA-256 does not match the manifest; not loading it"))
        return data, manifest.get("meta") or {}

    @staticmethod
    def _damaged(path: Path, exc: Exception) -> None:
        import warnings

        warnings.warn(f"archlab: cache entry {path} unusable ({exc}); recomputing", RuntimeWarning, stacklevel=3)
        return None

    # -- typed values
    def put_json(self, kind: str, key: dict, value) -> bool:
        return self.put_bytes(kind, key, json.dumps(value, sort_keys=True, default=str).encode(), "json")

    def get_json(self, kind: str, key: dict):
        got = self.get_bytes(kind, key, "json")
        if got is None:
            return None
        try:
            return json.loads(got[0])
        except ValueError:
            return None

    def put_array(self, kind: str, key: dict, arr) -> bool:
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, np.asarray(arr), allow_pickle=False)
        return self.put_bytes(kind, key, buf.getvalue(), "npy")

    def get_array(self, kind: str, key: dict):
        import numpy as np

        got = self.get_bytes(kind, key, "npy")
        if got is None:
            return None
        try:
            return np.load(io.BytesIO(got[0]), allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put_pickle(self, kind: str, key: dict, obj, meta: dict | None = None) -> bool:
        import pickle

        return self.put_bytes(kind, key, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), "pkl", meta)

    def get_pickle(self, kind: str, key: dict) -> tuple[Any, dict] | None:
        """Unpickles only bytes whose SHA-256 matches the manifest this cache wrote (pickles run code)."""
        import pickle

        got = self.get_bytes(kind, key, "pkl")
        if got is None:
            return None
        return pickle.loads(got[0]), got[1]

    def put_torch_state(self, kind: str, key: dict, state: dict, meta: dict | None = None) -> bool:
        import warnings

        import torch

        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.save(state, buf)
        return self.put_bytes(kind, key, buf.getvalue(), "pt", meta)

    def get_torch_state(self, kind: str, key: dict) -> tuple[dict, dict] | None:
        """A state dict read with ``torch.load(weights_only=True)`` (tensors only, no code)."""
        import torch

        got = self.get_bytes(kind, key, "pt")
        if got is None:
            return None
        return torch.load(io.BytesIO(got[0]), weights_only=True), got[1]
