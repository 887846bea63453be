"""Bytes on disk: one shared SQLite database against one database per bounded context with copies.

Each context declares its own tables (``TABLES``: name -> [(column, SQL type)]) and the fields it
copies from other contexts (``COPIES``: [(source table, column)]). ``shared`` writes every table
once into one file; ``per_context`` writes each context's tables into its own file plus, per
source table it copies from, a replica table keyed by the source's primary key holding the
copied columns for every source row. Size is SQLite's own: ``page_count × page_size`` after
``VACUUM`` (the file's size; SQLite's file-format documentation), so page slack, b-tree pages and
each file's schema page count, as they would on disk. Rows come from ``rows_for``, seeded.
"""
from __future__ import annotations

import sqlite3
import string
from typing import Mapping, Sequence

import numpy as np

Columns = Sequence[tuple[str, str]]


def rows_for(rng: np.random.Generator, columns: Columns, n: int, sizes: Mapping[str, int],
             keys: Mapping[str, int]) -> list[tuple]:
    """n rows: a primary key counts from 1; ``*_id`` columns point at 1..keys[column]; TEXT columns get
    random letters of ``sizes[column]`` (default 8); REAL and INTEGER columns random numbers."""
    letters = np.array(list(string.ascii_lowercase))
    cols = []
    for name, kind in columns:
        if "PRIMARY KEY" in kind:
            cols.append(np.arange(1, n + 1))
        elif name.endswith("_id"):
            cols.append(rng.integers(1, keys.get(name, n) + 1, n))
        elif kind.startswith("TEXT"):
            width = sizes.get(name, 8)
            vocab = ["".join(rng.choice(letters, width)) for _ in range(min(n, 64 if width < 40 else n))]
            cols.append(np.array(vocab, dtype=object)[rng.integers(0, len(vocab), n)])
        elif kind.startswith("REAL"):
            cols.append(np.round(rng.random(n) * 100, 2))
        else:
            cols.append(rng.integers(0, 10_000, n))
    return list(zip(*(c.tolist() for c in cols)))


def _write(db: sqlite3.Connection, table: str, columns: Columns, rows: list[tuple]) -> None:
    db.execute(f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, t in columns)})")
    db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(columns))})", rows)


def file_bytes(db: sqlite3.Connection) -> int:
    db.commit()
    db.execute("VACUUM")
    return db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]


def shared(tables: Mapping[str, Columns], data: Mapping[str, list[tuple]]) -> int:
    """Bytes of one database holding every context's tables once."""
    db = sqlite3.connect(":memory:")
    for name, columns in tables.items():
        _write(db, name, columns, data[name])
    size = file_bytes(db)
    db.close()
    return size


def per_context(contexts: Mapping[str, tuple[Mapping[str, Columns], Sequence[tuple[str, str]]]],
                tables: Mapping[str, Columns], data: Mapping[str, list[tuple]]) -> dict[str, int]:
    """Bytes of each context's own database: its tables plus replicas of the fields it copies."""
    out = {}
    for ctx, (own, copies) in contexts.items():
        db = sqlite3.connect(":memory:")
        for name, columns in own.items():
            _write(db, name, columns, data[name])
        by_source: dict[str, list[str]] = {}
        for source, column in copies:
            by_source.setdefault(source, []).append(column)
        for source, wanted in by_source.items():
            cols = list(tables[source])
            key = cols[0]
            idx = [0] + [next(i for i, (c, _) in enumerate(cols) if c == w) for w in wanted]
            _write(db, f"{source}_replica", [key] + [cols[i] for i in idx[1:]],
                   [tuple(row[i] for i in idx) for row in data[source]])
        out[ctx] = file_bytes(db)
        db.close()
    return out
