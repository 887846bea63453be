"""Mine a git repository for hotspots: churn per file, McCabe complexity per file, a hotspot score.

Follows Adam Tornhill's code-maat and maat-scripts (REFERENCES.md §24):

- Churn comes from ``git log --numstat --date=short --pretty=format:--%h--%ad--%aN --no-renames``
  parsed like code-maat's ``git2`` parser: each numstat line is ``added<TAB>deleted<TAB>file``;
  ``revisions`` counts the commits that touch a file (code-maat's ``n-revs``), ``added`` and
  ``deleted`` sum its lines (``entity-churn``); a binary file (``-``) counts a revision and no lines.
  Merge commits show no numstat, as in code-maat. Differences: only the history reachable from
  HEAD is read (code-maat's recipe passes ``--all``, which here would mix in other branches), and
  no ``--after`` window is applied (the whole visible history, however short).
- Complexity is radon's (``rubik/radon``; not lizard, which counts ``finally`` and ignores
  comprehensions and loop ``else``): a file's complexity is radon's ``total_complexity``, i.e. 1 +
  every decision point of the module, its functions, methods and classes, by radon's rules. Lines
  are radon's SLOC (source lines, like cloc's ``code`` column that maat-scripts join on).
- The hotspot score is ``revisions x complexity``. maat-scripts computes no product (it ranks by
  revisions and shows lines as size); the product is the common normalisation Tornhill's talks
  use, named here so nobody mistakes it for code-maat output. Files are those present at HEAD.

Mining is cached in ``sim.cache.DiskCache`` keyed by HEAD's commit hash, whether the clone is
shallow, radon's version and this file's code digest.
"""
from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import DiskCache

LOG_FORMAT = "--%h--%ad--%aN"
CHURN_COLUMNS = ["entity", "revisions", "added", "deleted", "churn"]
HOTSPOT_COLUMNS = ["entity", "revisions", "added", "deleted", "churn", "complexity", "sloc", "score"]
SNAPSHOT = Path(__file__).resolve().parent.parent / "data" / "hotspots" / "archlab_snapshot.csv"
_CACHE = DiskCache("hotspots", code=[__file__])


class NotARepository(ValueError):
    """The path is not inside a git work tree (or git is missing)."""


_GIT_ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, "LC_ALL": "C"}


def _git(repo, *args: str, text: bool = True, stdin: bytes | None = None):
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True, input=stdin,
                             env=_GIT_ENV)
    except FileNotFoundError as exc:
        raise NotARepository("git is not installed") from exc
    except subprocess.CalledProcessError as exc:
        raise NotARepository(exc.stderr.decode(errors="replace").strip().splitlines()[0]
                             if exc.stderr else f"git {args[0]} failed") from exc
    return out.stdout.decode("utf-8", errors="replace") if text else out.stdout


def repository_root(path) -> Path:
    """The top of the git work tree holding ``path``; NotARepository if there is none."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise NotARepository(f"{p} is not a directory")
    return Path(_git(p, "rev-parse", "--show-toplevel").strip())


@dataclass(frozen=True)
class RepoInfo:
    root: str
    head: str
    commits: int
    shallow: bool
    first_date: str = ""
    last_date: str = ""


def repo_info(root) -> RepoInfo:
    head = _git(root, "rev-parse", "HEAD").strip()
    commits = int(_git(root, "rev-list", "--count", "HEAD").strip())
    shallow = _git(root, "rev-parse", "--is-shallow-repository").strip() == "true"
    dates = _git(root, "log", "--date=short", "--pretty=format:%ad").split()
    return RepoInfo(str(root), head, commits, shallow, dates[-1] if dates else "", dates[0] if dates else "")


def parse_numstat(log: str) -> pd.DataFrame:
    """Churn per file from ``git log --numstat`` text in ``LOG_FORMAT`` (code-maat's git2 reading)."""
    revs: dict[str, int] = {}
    added: dict[str, int] = {}
    deleted: dict[str, int] = {}
    for line in log.splitlines():
        if not line or line.startswith("--"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        a, d, name = parts
        revs[name] = revs.get(name, 0) + 1
        added[name] = added.get(name, 0) + (int(a) if a.isdigit() else 0)
        deleted[name] = deleted.get(name, 0) + (int(d) if d.isdigit() else 0)
    df = pd.DataFrame({"entity": list(revs), "revisions": list(revs.values()),
                       "added": [added[k] for k in revs], "deleted": [deleted[k] for k in revs]})
    df["churn"] = df["added"] + df["deleted"]
    df = df.astype({"revisions": int, "added": int, "deleted": int, "churn": int}) if len(df) else \
        pd.DataFrame({c: pd.Series(dtype=object if c == "entity" else int) for c in CHURN_COLUMNS})
    return df.sort_values(["revisions", "entity"], ascending=[False, True], ignore_index=True)[CHURN_COLUMNS]


def churn(root) -> pd.DataFrame:
    """``entity, revisions, added, deleted, churn`` for every file in HEAD's history."""
    return parse_numstat(_git(root, "log", "--numstat", "--date=short", f"--pretty=format:{LOG_FORMAT}",
                              "--no-renames", "HEAD"))


def complexity_of(source: str) -> tuple[float, int]:
    """(radon total cyclomatic complexity, radon SLOC) of Python source; (NaN, sloc) if it does not parse."""
    from radon.raw import analyze
    from radon.visitors import ComplexityVisitor

    try:
        sloc = analyze(source).sloc
    except Exception:  # radon's tokenizer rejects some files; count the non-blank lines instead
        sloc = sum(1 for line in source.splitlines() if line.strip())
    try:
        return float(ComplexityVisitor.from_code(source).total_complexity), int(sloc)
    except (SyntaxError, ValueError):
        return float("nan"), int(sloc)


def python_blobs_at_head(root) -> dict[str, str]:
    """Path -> blob hash of every ``.py`` file in HEAD's tree."""
    listing = _git(root, "ls-tree", "-r", "-z", "HEAD")
    blobs = []
    for entry in listing.split("\0"):
        if not entry:
            continue
        meta, _, path = entry.partition("\t")
        kind, sha = meta.split()[1:3]
        if kind == "blob" and path.endswith(".py"):
            blobs.append((path, sha))
    return dict(blobs)


def read_blobs(root, shas) -> dict[str, str]:
    """Blob hash -> text, read in one ``git cat-file --batch``."""
    blobs = list(dict.fromkeys(shas))
    if not blobs:
        return {}
    raw = _git(root, "cat-file", "--batch", text=False, stdin="".join(f"{s}\n" for s in blobs).encode())
    out, pos = {}, 0
    for sha in blobs:
        header_end = raw.index(b"\n", pos)
        size = int(raw[pos:header_end].split()[2])
        out[sha] = raw[header_end + 1:header_end + 1 + size].decode("utf-8", errors="replace")
        pos = header_end + 1 + size + 1
    return out


def python_files_at_head(root) -> dict[str, str]:
    """The text of every ``.py`` file in HEAD's tree (read from git objects, not the work tree)."""
    paths = python_blobs_at_head(root)
    texts = read_blobs(root, paths.values())
    return {path: texts[sha] for path, sha in paths.items()}


def measured_at_head(root) -> dict[str, tuple[float, int]]:
    """Path -> (complexity, sloc) at HEAD; measured once per blob (cached by blob hash and radon version)."""
    paths = python_blobs_at_head(root)
    key = {"radon": _radon_version()}
    known = _CACHE.get_json("blob_complexity", key) or {}
    todo = [sha for sha in dict.fromkeys(paths.values()) if sha not in known]
    if todo:
        for sha, text in read_blobs(root, todo).items():
            known[sha] = complexity_of(text)
        _CACHE.put_json("blob_complexity", key, known)
    return {path: tuple(known[sha]) for path, sha in paths.items()}


def hotspot_table(churn_df: pd.DataFrame, sources: dict[str, str] | None = None,
                  measured: dict[str, tuple[float, int]] | None = None) -> pd.DataFrame:
    """Join churn with complexity for the Python files at HEAD; score = revisions x complexity.

    ``sources``: path -> text (measured here), or ``measured``: path -> (complexity, sloc)."""
    measured = dict(measured or {})
    measured.update({path: complexity_of(text) for path, text in (sources or {}).items()})
    rows = [(path, float(cc), int(sloc)) for path, (cc, sloc) in measured.items()]
    comp = pd.DataFrame(rows, columns=["entity", "complexity", "sloc"])
    df = comp.merge(churn_df, on="entity", how="left")
    for c in ("revisions", "added", "deleted", "churn"):
        df[c] = df[c].fillna(0).astype(int)
    df = df[np.isfinite(df["complexity"])].copy()
    df["score"] = df["revisions"] * df["complexity"]
    return df.sort_values(["score", "entity"], ascending=[False, True], ignore_index=True)[HOTSPOT_COLUMNS]


@dataclass
class Mined:
    info: RepoInfo
    hotspots: pd.DataFrame
    churn: pd.DataFrame = field(repr=False)
    cached: bool = False


def _radon_version() -> str:
    try:
        return metadata.version("radon")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "none"


@functools.lru_cache(maxsize=8)
def _mine_at(root: str, head: str, shallow: bool) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    key = {"head": head, "shallow": shallow, "radon": _radon_version()}
    got = _CACHE.get_json("mined", key)
    if got is not None:
        return pd.DataFrame(got["hotspots"], columns=HOTSPOT_COLUMNS), pd.DataFrame(got["churn"],
                                                                                     columns=CHURN_COLUMNS), True
    ch = churn(root)
    hs = hotspot_table(ch, measured=measured_at_head(root))
    _CACHE.put_json("mined", key, {"hotspots": hs.to_dict("list"), "churn": ch.to_dict("list")})
    return hs, ch, False


def mine(path) -> Mined:
    """Churn, complexity and hotspot score for the repository holding ``path`` (cached by HEAD)."""
    root = repository_root(path)
    info = repo_info(root)
    hits = _mine_at.cache_info().hits
    hs, ch, from_disk = _mine_at(str(root), info.head, info.shallow)
    return Mined(info, hs.copy(), ch.copy(), from_disk or _mine_at.cache_info().hits > hits)


def load_snapshot() -> tuple[pd.DataFrame, dict]:
    """The stored mining of this project (``data/hotspots``) and its metadata (commit, counts)."""
    import json

    meta = json.loads(SNAPSHOT.with_suffix(".json").read_text(encoding="utf-8"))
    return pd.read_csv(SNAPSHOT)[HOTSPOT_COLUMNS], meta


def write_snapshot(path=".") -> Path:
    """Mine the repository at ``path`` and store it as the snapshot (``python -m sim.hotspots``)."""
    import json

    m = mine(path)
    SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
    m.hotspots.to_csv(SNAPSHOT, index=False)
    meta = {"commit": m.info.head, "commits": m.info.commits, "shallow": m.info.shallow,
            "first_date": m.info.first_date, "last_date": m.info.last_date, "radon": _radon_version()}
    SNAPSHOT.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return SNAPSHOT


if __name__ == "__main__":  # pragma: no cover
    print(write_snapshot(Path(__file__).resolve().parent))
