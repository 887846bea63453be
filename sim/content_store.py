"""Content addressing shared by the data-versioning (Q20) and pipeline (Q2) labs.

Hashing follows DVC (REFERENCES §19, ``dvc-data`` ``hashfile/hash.py``): a file's
identity is the MD5 of its whole content read in 1 MiB pieces (``file_md5``); a
directory is a manifest of ``{md5, relpath}`` entries whose own MD5 gets ``.dir``
appended (``tree_md5``). A step of a pipeline is keyed like DVC's run cache: the
SHA-256 of its lock entry, i.e. its command (here the code digest), its
parameters and the hashes of its inputs (``step_key``).

Three stores keep successive versions of a data set, each as real files in a
folder the caller gives (a temporary directory, never the repository):

- ``CopyStore``: every version is a full copy (the baseline).
- ``FileDedupStore``: DVC's cache layout ``files/md5/<2 hex>/<30 hex>``, one object
  per distinct whole file plus a ``.dir`` manifest per version; the same content
  under any name is stored once, one changed byte stores the whole file again.
- ``ChunkStore``: objects are content-defined chunks named by SHA-256 (the lab's own
  design: neither DVC nor lakeFS deduplicates below the file), with a binary index
  per file of 40 bytes per chunk (8-byte length + 32-byte digest, like casync's
  ``.caidx``) and a manifest per version.

``gear_chunks`` is a FastCDC-style content-defined chunker (Xia et al., USENIX ATC
2016): a Gear rolling hash ``h = (h << 1) + G[byte]`` (mod 2^64), a cut where the
hash's top bits are zero, normalised chunking with a harder mask before the
average size and an easier one after, and min/max sizes. Where it differs from
FastCDC: the hash is the rolling hash of the last 64 bytes (FastCDC resets it at
each chunk start and skips the first ``min_size`` bytes), which lets numpy compute
every position at once; a cut point still depends only on nearby bytes, which is
the property dedup needs. Masks use the top bits, because in a Gear hash bit k
depends on the last k+1 bytes only.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

__all__ = ["digest_bytes", "content_bytes", "md5_bytes", "file_md5", "tree_md5", "step_key", "GEAR", "gear_hashes",
           "gear_chunks", "gear_chunks_reference", "fixed_chunks", "chunk_bounds", "CopyStore",
           "FileDedupStore", "ChunkStore", "STORES", "folder_bytes"]

PIECE = 2 ** 20  # DVC reads files in 1 MiB pieces
MASK64 = (1 << 64) - 1
INDEX_ENTRY = 40  # bytes per chunk in a ChunkStore file index: 8-byte length + 32-byte SHA-256

# 256 fixed random 64-bit words (the Gear table); fixed so chunk boundaries are the same everywhere
GEAR = np.random.Generator(np.random.PCG64(0x9E3779B97F4A7C15)).integers(
    0, 2 ** 64, size=256, dtype=np.uint64, endpoint=False)


# ------------------------------------------------------------------ hashing
def digest_bytes(data: bytes) -> str:
    """SHA-256 hex of bytes (chunk and artefact identity)."""
    return hashlib.sha256(data).hexdigest()


def content_bytes(value) -> bytes:
    """Bytes that identify a value: raw bytes, numpy buffers, sorted dict items, else repr."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, np.ndarray) and value.dtype == object:
        return content_bytes(value.tolist())
    if isinstance(value, np.ndarray):
        return str(value.dtype).encode() + str(value.shape).encode() + np.ascontiguousarray(value).tobytes()
    if isinstance(value, dict):
        return b"{" + b";".join(str(k).encode() + b"=" + content_bytes(value[k]) for k in sorted(value)) + b"}"
    if isinstance(value, (tuple, list)):
        return b"[" + b";".join(content_bytes(v) for v in value) + b"]"
    if hasattr(value, "to_numpy") and hasattr(value, "columns"):  # a DataFrame
        return content_bytes({"columns": list(map(str, value.columns)), "values": value.to_numpy()})
    try:
        return pickle.dumps(value, protocol=4)
    except Exception:  # noqa: BLE001 - anything unpicklable is identified by its repr
        return repr(value).encode()


def md5_bytes(data: bytes) -> str:
    """MD5 hex of a whole content, read in DVC's 1 MiB pieces (same digest as one call)."""
    h = hashlib.md5()
    view = memoryview(data)
    for i in range(0, len(data), PIECE):
        h.update(view[i:i + PIECE])
    return h.hexdigest()


def file_md5(path: str | os.PathLike) -> str:
    """DVC's ``file_md5``: the MD5 of the entire file, read 1 MiB at a time."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(PIECE), b""):
            h.update(piece)
    return h.hexdigest()


def _dir_entries(files: Mapping[str, str]) -> list[dict]:
    return [{"md5": files[k], "relpath": k} for k in sorted(files)]


def _dir_bytes(files: Mapping[str, str]) -> bytes:
    return json.dumps(_dir_entries(files), sort_keys=True, separators=(", ", ": ")).encode()


def tree_md5(files: Mapping[str, str]) -> str:
    """A directory's hash as DVC forms it: MD5 of the sorted ``{md5, relpath}`` list, plus ``.dir``."""
    return hashlib.md5(_dir_bytes(files)).hexdigest() + ".dir"


def step_key(code: str, inputs: Mapping[str, str], params: Mapping | None = None) -> str:
    """A step's cache key: SHA-256 of its lock entry (code digest, params, input hashes), as DVC's run cache."""
    entry = {"cmd": code, "deps": [{"path": k, "hash": inputs[k]} for k in sorted(inputs)],
             "params": dict(sorted((params or {}).items()))}
    return hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------ chunking
def gear_hashes(data: bytes) -> np.ndarray:
    """``h[i]`` = Gear hash after byte i: sum over k < 64 of G[data[i-k]] * 2^k (mod 2^64).

    Computed by doubling the window six times (1 → 64 bytes) instead of a byte loop.
    """
    h = GEAR[np.frombuffer(data, dtype=np.uint8)]
    shifted = np.empty_like(h)
    w = 1
    while w < 64:  # h[i] += h[i-w] << w, from the old h (shifted is filled before the add)
        shifted[:w] = 0
        np.left_shift(h[:-w], np.uint64(w), out=shifted[w:])
        h += shifted
        w *= 2
    return h


def _masks(avg_size: int) -> tuple[int, int]:
    bits = max(1, int(round(np.log2(avg_size))))
    hard, easy = min(bits + 2, 62), max(bits - 2, 1)  # FastCDC normalisation level 2
    top = lambda n: ((1 << n) - 1) << (64 - n)  # noqa: E731
    return top(hard), top(easy)


def _sizes(avg_size: int, min_size: int | None, max_size: int | None) -> tuple[int, int, int]:
    avg = int(avg_size)
    lo = int(min_size) if min_size is not None else max(1, avg // 4)
    hi = int(max_size) if max_size is not None else avg * 8
    if not 1 <= lo <= avg <= hi:
        raise ValueError(f"need 1 <= min_size <= avg_size <= max_size, got {lo}, {avg}, {hi}")
    return lo, avg, hi


def chunk_bounds(data: bytes, avg_size: int = 8192, min_size: int | None = None,
                 max_size: int | None = None) -> list[int]:
    """End offsets of FastCDC-style chunks (FastCDC defaults: min = avg/4, max = 8·avg).

    A chunk starting at s ends after byte i when its length L = i+1-s is in [min, avg) and
    the hash at i has its hard mask's bits zero, else in [avg, max) with the easy mask, else at max.
    """
    lo, avg, hi = _sizes(avg_size, min_size, max_size)
    n = len(data)
    if n == 0:
        return []
    h = gear_hashes(data)
    mask_s, mask_l = _masks(avg)
    cs = np.flatnonzero((h & np.uint64(mask_s)) == 0)
    cl = np.flatnonzero((h & np.uint64(mask_l)) == 0)
    ends, s = [], 0
    while s < n:
        if n - s <= lo:
            ends.append(n)
            break
        first, mid, last = s + lo - 1, min(s + avg - 1, n), min(s + hi - 1, n)
        j = np.searchsorted(cs, first)
        if j < len(cs) and cs[j] < mid:
            end = int(cs[j]) + 1
        else:
            j = np.searchsorted(cl, max(first, mid))
            end = int(cl[j]) + 1 if j < len(cl) and cl[j] < last else min(s + hi, n)
        ends.append(end)
        s = end
    return ends


def gear_chunks_reference(data: bytes, avg_size: int = 8192, min_size: int | None = None,
                          max_size: int | None = None) -> list[int]:
    """The same cut points by a plain byte loop (slow; the tests check ``chunk_bounds`` against it)."""
    lo, avg, hi = _sizes(avg_size, min_size, max_size)
    mask_s, mask_l = _masks(avg)
    table = [int(x) for x in GEAR]
    ends, s, h = [], 0, 0
    for i, byte in enumerate(data):
        h = ((h << 1) + table[byte]) & MASK64
        length = i + 1 - s
        if length < lo:
            continue
        cut = length >= hi or (h & (mask_s if length < avg else mask_l)) == 0
        if cut:
            ends.append(i + 1)
            s = i + 1
    if s < len(data):
        ends.append(len(data))
    return ends


def fixed_chunks(data: bytes, size: int) -> list[int]:
    """End offsets of fixed-size blocks (the naive chunker an insertion defeats)."""
    n = len(data)
    return list(range(size, n, size)) + ([n] if n else [])


def gear_chunks(data: bytes, avg_size: int = 8192, chunker: str = "gear_cdc") -> list[bytes]:
    """The chunks of ``data``: content-defined (``gear_cdc``) or ``fixed`` blocks of ``avg_size``."""
    ends = chunk_bounds(data, avg_size) if chunker == "gear_cdc" else fixed_chunks(data, avg_size)
    starts = [0] + ends[:-1]
    return [data[a:b] for a, b in zip(starts, ends)]


# ------------------------------------------------------------------ stores
def folder_bytes(root: str | os.PathLike) -> int:
    """Sum of the sizes of every file under ``root`` (apparent sizes, not disk blocks)."""
    total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            total += os.stat(os.path.join(dirpath, name)).st_size
    return total


def _write_once(path: Path, data: bytes) -> bool:
    """Write ``data`` at ``path`` unless an object is already there; True when new bytes were written."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


class _Store:
    """A versioned store of ``{relpath: bytes}`` snapshots under ``root``; ``commit`` returns a version id."""

    kind = ""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.versions: list[str] = []
        self.written = 0  # bytes this store has written (objects, copies, manifests, indexes)

    def _put(self, path: Path, data: bytes) -> bool:
        """Write an object once (content-addressed paths); count the bytes when they are new."""
        new = _write_once(path, data)
        self.written += len(data) if new else 0
        return new

    def size_bytes(self) -> int:
        return folder_bytes(self.root)

    def commit(self, files: Mapping[str, bytes]) -> str:
        raise NotImplementedError

    def checkout(self, version: str) -> dict[str, bytes]:
        raise NotImplementedError


class CopyStore(_Store):
    """Every version is a full copy under ``v<n>/`` (what "cp -r data data_v2" does)."""

    kind = "copies"

    def commit(self, files):
        vid = tree_md5({k: md5_bytes(v) for k, v in files.items()})
        folder = self.root / f"v{len(self.versions):05d}"
        for rel, data in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
            self.written += len(data)
        self.versions.append(vid)
        return vid

    def checkout(self, version):
        folder = self.root / f"v{self.versions.index(version):05d}"
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class FileDedupStore(_Store):
    """DVC 3's cache: ``files/md5/<2>/<30>`` per distinct file, and a ``.dir`` manifest per version."""

    kind = "file_dedup"

    def _obj(self, md5: str) -> Path:
        return self.root / "files" / "md5" / md5[:2] / md5[2:]

    def commit(self, files):
        hashes = {}
        for rel, data in files.items():
            hashes[rel] = md5_bytes(data)
            self._put(self._obj(hashes[rel]), data)
        vid = tree_md5(hashes)
        self._put(self._obj(vid), _dir_bytes(hashes))
        self.versions.append(vid)
        return vid

    def checkout(self, version):
        entries = json.loads(self._obj(version).read_bytes())
        out = {}
        for e in entries:
            data = self._obj(e["md5"]).read_bytes()
            if md5_bytes(data) != e["md5"]:
                raise ValueError(f"object {e['md5']} is damaged")
            out[e["relpath"]] = data
        return out


class ChunkStore(_Store):
    """Chunks under ``chunks/<2>/<62>`` by SHA-256, a 40-byte-per-chunk index per file, a manifest per version."""

    kind = "chunk_dedup"

    def __init__(self, root, avg_size: int = 8192, chunker: str = "gear_cdc"):
        super().__init__(root)
        self.avg_size, self.chunker = int(avg_size), chunker
        self.chunks_written = self.chunks_seen = 0
        self._indexed: dict[str, str] = {}  # file SHA-256 -> its index: an unchanged file is not re-chunked

    def _obj(self, kind: str, digest: str) -> Path:
        return self.root / kind / digest[:2] / digest[2:]

    def commit(self, files):
        manifest = {}
        for rel, data in files.items():
            whole = digest_bytes(data)
            if whole not in self._indexed:
                index = bytearray()
                for chunk in gear_chunks(data, self.avg_size, self.chunker):
                    d = hashlib.sha256(chunk).digest()
                    self.chunks_seen += 1
                    self.chunks_written += self._put(self._obj("chunks", d.hex()), chunk)
                    index += len(chunk).to_bytes(8, "little") + d
                self._indexed[whole] = digest_bytes(bytes(index))
                self._put(self._obj("index", self._indexed[whole]), bytes(index))
            manifest[rel] = {"index": self._indexed[whole], "sha256": whole}
        body = json.dumps(manifest, sort_keys=True).encode()
        vid = digest_bytes(body)
        self._put(self._obj("versions", vid), body)
        self.versions.append(vid)
        return vid

    def checkout(self, version):
        manifest = json.loads(self._obj("versions", version).read_bytes())
        out = {}
        for rel, entry in manifest.items():
            index = self._obj("index", entry["index"]).read_bytes()
            parts = [self._obj("chunks", index[i + 8:i + INDEX_ENTRY].hex()).read_bytes()
                     for i in range(0, len(index), INDEX_ENTRY)]
            data = b"".join(parts)
            if digest_bytes(data) != entry["sha256"]:
                raise ValueError(f"{rel} in version {version[:12]} does not reassemble to its digest")
            out[rel] = data
        return out


STORES = {"copies": CopyStore, "file_dedup": FileDedupStore, "chunk_dedup": ChunkStore}


def commit_all(stores: Iterable[_Store], files: Mapping[str, bytes]) -> list[str]:
    """Commit one snapshot to every store; their version ids in order."""
    return [s.commit(files) for s in stores]
