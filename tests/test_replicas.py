"""sim.replicas: SQLite's own byte counts, and copies that cost what they hold."""
import sqlite3

import numpy as np

from sim import replicas

TABLES = {"users": [("user_id", "INTEGER PRIMARY KEY"), ("segment", "TEXT"), ("bio", "TEXT")],
          "events": [("event_id", "INTEGER PRIMARY KEY"), ("user_id", "INTEGER"), ("kind", "TEXT")]}


def _data(n=2000):
    rng = np.random.default_rng(0)
    return {"users": replicas.rows_for(rng, TABLES["users"], n, {"bio": 100}, {}),
            "events": replicas.rows_for(rng, TABLES["events"], 10 * n, {}, {"user_id": n})}


def test_bytes_are_the_file_sqlite_writes(tmp_path):
    data = _data(500)
    db = sqlite3.connect(tmp_path / "x.db")
    db.execute("CREATE TABLE users (user_id INTEGER PRIMARY KEY, segment TEXT, bio TEXT)")
    db.executemany("INSERT INTO users VALUES (?, ?, ?)", data["users"])
    counted = replicas.file_bytes(db)
    db.close()
    assert counted == (tmp_path / "x.db").stat().st_size


def test_rows_follow_their_declared_columns():
    data = _data(100)
    assert [r[0] for r in data["users"]] == list(range(1, 101))
    assert all(len(r[2]) == 100 and 1 <= e[1] <= 100 for r, e in zip(data["users"], data["events"]))


def test_copies_cost_what_they_hold_and_nothing_else_does_much():
    data = _data()
    shared = replicas.shared(TABLES, data)
    split = {"people": ({"users": TABLES["users"]}, []), "tracking": ({"events": TABLES["events"]}, [])}
    none = sum(replicas.per_context(split, TABLES, data).values())
    assert 0 <= none - shared <= 2 * 4096  # two files instead of one: a schema page or so more
    one = sum(replicas.per_context({**split, "tracking": ({"events": TABLES["events"]}, [("users", "segment")])},
                                   TABLES, data).values())
    wide = sum(replicas.per_context({**split, "tracking": ({"events": TABLES["events"]}, [("users", "bio")])},
                                    TABLES, data).values())
    assert none < one < wide
    assert wide - none > 2000 * 100  # the copied 100-byte field, once per user
