"""Workshop rooms: one instructor, a room of participants, one reveal for everyone.

A room is a row in one SQLite file, ``rooms.db`` in the data folder (``$ARCHLAB_DATA``),
in WAL mode, so several explorer processes (and ``archlab room``) share it. A room has
a short code (six characters from an alphabet without look-alikes: no 0/O, 1/I/L),
an instructor secret (only its SHA-256 is stored; the secret itself is shown once, in
the instructor's link), an expiry, and a *round*: the question, the setting (the
changes from the lab's defaults, e.g. one of its exercises), the number participants
predict (arm, metric) and whether the instructor has revealed the run.

Participants join with a name and get an opaque id; each of their answers is one row
keyed by (room, participant, round, kind, item), written with an upsert inside one
``BEGIN IMMEDIATE`` transaction, so concurrent participants never lose an answer and
a changed answer replaces the old one. Only the instructor (holding the secret)
can reveal, start the next round or export; participants see their own answers and,
after the reveal, the lab's run, never other people's names.

This module stores and summarises answers; the numbers they are judged against come
from the labs (``Lab.run``), read by the pages in ``faces.room_pages``.
"""
from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import math
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from faces.progress import data_dir

FILE_NAME = "rooms.db"
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L
CODE_LENGTH = 6
DEFAULT_TTL_H = 12.0
BUSY_TIMEOUT_S = 30.0  # a writer waits this long for another one before giving up
KINDS = ("prediction", "verdict", "drill_number", "drill_verdict")
VOTES = ("holds", "fails", "conditional")
SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    code TEXT PRIMARY KEY, secret_sha256 TEXT NOT NULL, created TEXT NOT NULL, expires TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '', qid TEXT NOT NULL, seed INTEGER NOT NULL, round INTEGER NOT NULL,
    exercise INTEGER, changes TEXT NOT NULL, arm TEXT NOT NULL, metric TEXT NOT NULL, prompt TEXT NOT NULL,
    revealed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS participants (
    code TEXT NOT NULL, pid TEXT NOT NULL, name TEXT NOT NULL, joined TEXT NOT NULL, PRIMARY KEY (code, pid));
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY, code TEXT NOT NULL, pid TEXT NOT NULL, round INTEGER NOT NULL, ts TEXT NOT NULL,
    kind TEXT NOT NULL, qid TEXT NOT NULL, item TEXT NOT NULL, arm TEXT, changes TEXT, stated REAL, text TEXT,
    UNIQUE (code, pid, round, kind, item));
CREATE INDEX IF NOT EXISTS answers_room ON answers (code, round);
"""
EXPORT_FIELDS = ("room", "round", "participant", "name", "ts", "kind", "qid", "item", "arm", "changes",
                 "stated", "text")


class RoomError(ValueError):
    """A room cannot be used as asked (unknown or expired code, wrong key, bad answer); one line."""


@dataclass(frozen=True)
class Room:
    code: str
    qid: str
    seed: int
    round: int
    exercise: int | None  # index into the lab's exercises; None: the defaults
    changes: dict  # the round's setting, as changes from the lab's defaults
    arm: str
    metric: str
    prompt: str
    revealed: bool
    created: datetime
    expires: datetime
    title: str = ""

    @property
    def watch(self) -> tuple[str, str]:
        return self.arm, self.metric


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def normalise_code(text) -> str:
    """'abc-123 ' -> 'ABC123' (participants type codes by hand)."""
    return "".join(ch for ch in str(text or "").upper() if ch.isalnum())


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def round_spec(qid: str, exercise: int | None = None) -> tuple[dict, tuple[str, str], str]:
    """(changes, (arm, metric), prompt) of a round: the lab's defaults and headline, or one of its exercises."""
    from labs.registry import get_lab

    lab = get_lab(qid)
    if exercise is None:
        return {}, tuple(lab.headline), "At the lab's default settings: predict the headline number."
    if not 0 <= int(exercise) < len(lab.exercises):
        raise RoomError(f"{lab.id} has exercises 1..{len(lab.exercises)}; got {int(exercise) + 1}")
    e = lab.exercises[int(exercise)]
    lab.settings(e.changes)  # refused here, not in the room
    return dict(e.changes), tuple(e.watch), e.prompt


class RoomStore:
    """The rooms file; every method opens its own short connection, so one store serves many threads."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else data_dir() / FILE_NAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RoomError(f"cannot create the rooms folder {self.path.parent}: {e.strerror}") from None
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    # ---------------------------------------------------------------- connections
    def _db(self):
        store = self

        class _Conn:
            def __enter__(self):
                try:
                    self.db = sqlite3.connect(store.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
                except sqlite3.Error as e:
                    raise RoomError(f"cannot open the rooms database {store.path}: {e}") from None
                return self.db

            def __exit__(self, *exc):
                self.db.close()

        return _Conn()

    def _write(self, fn):
        """Run ``fn(db)`` in one immediate transaction (retrying a busy database), return its value."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                with self._db() as db:
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        out = fn(db)
                    except BaseException:
                        db.execute("ROLLBACK")
                        raise
                    db.execute("COMMIT")
                    return out
            except sqlite3.OperationalError as e:
                if ("locked" in str(e) or "busy" in str(e)) and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                raise RoomError(f"cannot write to the rooms database {self.path}: {e}") from None

    # ---------------------------------------------------------------- rooms
    def create(self, qid: str, exercise: int | None = None, seed: int = 0, title: str = "",
               ttl_h: float = DEFAULT_TTL_H, now: datetime | None = None) -> tuple[Room, str]:
        """A new room on ``qid`` (at its defaults, or at exercise index ``exercise``): (room, instructor secret)."""
        from labs.registry import get_lab

        qid = get_lab(qid).id  # unknown or unbuilt labs are refused by the registry
        if not (isinstance(ttl_h, (int, float)) and math.isfinite(ttl_h) and 0 < ttl_h <= 24 * 14):
            raise RoomError(f"ttl_h must be in (0, 336] hours, got {ttl_h}")
        changes, (arm, metric), prompt = round_spec(qid, exercise)
        now = now or _now()
        secret = secrets.token_urlsafe(18)

        def insert(db):
            for _ in range(20):
                code = new_code()
                if db.execute("SELECT 1 FROM rooms WHERE code = ?", (code,)).fetchone() is None:
                    break
            else:  # pragma: no cover - 31^6 codes
                raise RoomError("could not find a free room code; try again")
            db.execute("INSERT INTO rooms (code, secret_sha256, created, expires, title, qid, seed, round, exercise,"
                       " changes, arm, metric, prompt, revealed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,0)",
                       (code, _sha(secret), now.isoformat(), (now + timedelta(hours=ttl_h)).isoformat(), title,
                        qid, int(seed), 1, exercise, json.dumps(changes, sort_keys=True), arm, metric, prompt))
            return code

        code = self._write(insert)
        return self.get(code, now=now), secret

    def get(self, code, now: datetime | None = None) -> Room:
        """The room, or RoomError naming why not (no such room, expired)."""
        shown = str(code or "").strip()
        code = normalise_code(code)
        if not code:
            raise RoomError("no room code given")
        with self._db() as db:
            row = db.execute("SELECT code, qid, seed, round, exercise, changes, arm, metric, prompt, revealed, created,"
                             " expires, title FROM rooms WHERE code = ?", (code,)).fetchone()
        if row is None:
            raise RoomError(f"no room {shown!r}: check the code with your instructor")
        room = Room(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7], row[8], bool(row[9]),
                    datetime.fromisoformat(row[10]), datetime.fromisoformat(row[11]), row[12])
        if (now or _now()) >= room.expires:
            raise RoomError(f"room {room.code} expired at {room.expires:%Y-%m-%d %H:%M} UTC; ask for a new code")
        return room

    def authorise(self, code, secret: str | None) -> Room:
        """The room if ``secret`` is its instructor key, else RoomError."""
        room = self.get(code)
        with self._db() as db:
            (stored,) = db.execute("SELECT secret_sha256 FROM rooms WHERE code = ?", (room.code,)).fetchone()
        if not secret or not hmac.compare_digest(stored, _sha(str(secret))):
            raise RoomError(f"that is not the instructor key of room {room.code}")
        return room

    def reveal(self, code, secret: str) -> Room:
        room = self.authorise(code, secret)
        self._write(lambda db: db.execute("UPDATE rooms SET revealed = 1 WHERE code = ?", (room.code,)))
        return self.get(room.code)

    def next_round(self, code, secret: str, exercise: int | None = None) -> Room:
        """Start a new round (hidden again) at the defaults or at one of the lab's exercises."""
        room = self.authorise(code, secret)
        changes, (arm, metric), prompt = round_spec(room.qid, exercise)
        self._write(lambda db: db.execute(
            "UPDATE rooms SET round = round + 1, exercise = ?, changes = ?, arm = ?, metric = ?, prompt = ?,"
            " revealed = 0 WHERE code = ?", (exercise, json.dumps(changes, sort_keys=True), arm, metric, prompt,
                                             room.code)))
        return self.get(room.code)

    # ---------------------------------------------------------------- participants and answers
    def join(self, code, name: str) -> str:
        """A participant's opaque id in the room (names need not be unique)."""
        room = self.get(code)
        name = " ".join(str(name or "").split())[:60]
        if not name:
            raise RoomError("type a name (any name: only the instructor sees it)")
        pid = secrets.token_hex(8)
        self._write(lambda db: db.execute("INSERT INTO participants (code, pid, name, joined) VALUES (?,?,?,?)",
                                          (room.code, pid, name, _now().isoformat())))
        return pid

    def _participant(self, room: Room, pid: str) -> None:
        with self._db() as db:
            if db.execute("SELECT 1 FROM participants WHERE code = ? AND pid = ?", (room.code, pid)).fetchone() is None:
                raise RoomError(f"you have not joined room {room.code}; join it again with your name")

    def submit(self, code, pid: str, kind: str, item: str, stated: float | None = None, text: str | None = None,
               arm: str | None = None, qid: str | None = None, changes: dict | None = None,
               round: int | None = None) -> None:
        """Store (or replace) one answer of this participant in the room's current round."""
        room = self.get(code)
        self._participant(room, pid)
        if kind not in KINDS:
            raise RoomError(f"answer kind {kind!r}: expected one of {', '.join(KINDS)}")
        if stated is not None:
            stated = float(stated)
            if not math.isfinite(stated):
                raise RoomError("a prediction must be a finite number")
        if kind in ("verdict",) and text not in VOTES:
            raise RoomError(f"a verdict is one of {', '.join(VOTES)}; got {text!r}")
        rnd = room.round if round is None else int(round)
        if room.revealed and rnd == room.round and kind in ("prediction", "verdict"):
            raise RoomError("the instructor has revealed this round: your answer from before the reveal is kept "
                            "(wrong first guesses are the point)")
        self._write(lambda db: db.execute(
            "INSERT INTO answers (code, pid, round, ts, kind, qid, item, arm, changes, stated, text)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (code, pid, round, kind, item) DO UPDATE SET"
            " ts = excluded.ts, stated = excluded.stated, text = excluded.text, arm = excluded.arm,"
            " changes = excluded.changes",
            (room.code, pid, rnd, _now().isoformat(), kind, qid or room.qid, item, arm,
             json.dumps(room.changes if changes is None else changes, sort_keys=True, default=str), stated, text)))

    def predict(self, code, pid: str, value: float) -> None:
        """The participant's number for the round's (arm, metric)."""
        room = self.get(code)
        self.submit(room.code, pid, "prediction", room.metric, stated=value, arm=room.arm)

    def vote(self, code, pid: str, claim_id: str, verdict: str) -> None:
        self.submit(code, pid, "verdict", claim_id, text=verdict)

    def mine(self, code, pid: str) -> dict:
        """This participant's answers in the current round: {"prediction": x, "votes": {claim: verdict}}."""
        room = self.get(code)
        with self._db() as db:
            rows = db.execute("SELECT kind, item, stated, text FROM answers WHERE code = ? AND pid = ? AND round = ?",
                              (room.code, pid, room.round)).fetchall()
        out = {"prediction": None, "votes": {}}
        for kind, item, stated, text in rows:
            if kind == "prediction" and item == room.metric:
                out["prediction"] = stated
            elif kind == "verdict":
                out["votes"][item] = text
        return out

    # ---------------------------------------------------------------- the instructor's summaries
    def summary(self, code, secret: str) -> dict:
        """The round so far: who joined and who answered, the predictions, the votes per claim."""
        room = self.authorise(code, secret)
        with self._db() as db:
            people = db.execute("SELECT pid, name FROM participants WHERE code = ? ORDER BY joined, rowid",
                                (room.code,)).fetchall()
            rows = db.execute("SELECT pid, kind, item, stated, text FROM answers WHERE code = ? AND round = ?",
                              (room.code, room.round)).fetchall()
        predictions, votes, answered = [], {}, set()
        for pid, kind, item, stated, text in rows:
            if kind == "prediction" and item == room.metric and stated is not None:
                predictions.append(stated)
                answered.add(pid)
            elif kind == "verdict":
                votes.setdefault(item, {v: 0 for v in VOTES})[text] += 1
                answered.add(pid)
        return {"room": room, "joined": len(people),
                "answered": [n for p, n in people if p in answered],
                "waiting": [n for p, n in people if p not in answered],
                "predictions": sorted(predictions), "votes": votes}

    def rows(self, code) -> list[dict]:
        """Every answer of every round, with the participant's name (for the export)."""
        room = self.get(code, now=datetime.min.replace(tzinfo=timezone.utc))  # an expired room still exports
        with self._db() as db:
            cur = db.execute(
                "SELECT a.code, a.round, a.pid, p.name, a.ts, a.kind, a.qid, a.item, a.arm, a.changes, a.stated,"
                " a.text FROM answers a JOIN participants p ON p.code = a.code AND p.pid = a.pid"
                " WHERE a.code = ? ORDER BY a.round, a.id", (room.code,))
            return [dict(zip(EXPORT_FIELDS, r)) for r in cur.fetchall()]

    def export_csv(self, code, secret: str | None = None, trusted: bool = False) -> str:
        """The room's answers as CSV, for the instructor's key; ``trusted``: the command line on the host,
        whose user can read the rooms file anyway."""
        if not trusted:
            self.authorise(code, secret)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows(code))
        return buf.getvalue()


def room_servers() -> list[str]:
    """Base URLs of the explorer processes serving rooms (``ARCHLAB_ROOM_SERVERS``, comma-separated; processes
    sharing one ``ARCHLAB_DATA``, one per core for a large room), or [] when one process serves them."""
    return [b.strip().rstrip("/") for b in os.environ.get("ARCHLAB_ROOM_SERVERS", "").split(",") if b.strip()]
