"""The question catalogue: the 30 interview questions the labs are built on, as checked data.

Why this module exists: the app, the notebooks, the CLI, the lab registry and
the tests all need the same facts about a question: its number, topic,
difficulty, our title and summary, the seed's metric table (name, formula and
target copied exactly) and the quantitative claims the lab must give a verdict
on. They live once, in ``data/questions.json``, and this module loads them into
frozen dataclasses. It validates every field on load, so a typo in the data
fails right away with a message naming the entry and the field (for example
``questions.json: q08.metrics[2].op: 'approx' is not one of <, <=, >, >=, ==,
between``) and never turns up later as a wrong verdict.

How prose figures were turned into ``op``/``value`` (the data follows these rules):

* "<x", ">x", "x+" are read as written ("<", ">", ">=");
  a range "a-b" becomes ``between [a, b]`` (inclusive).
* A point figure for a benefit ("cuts by 60%", "10+ variants") is a floor
  (">="); a point figure for a cost ("+50 ms", "-1% utility") is a ceiling ("<=").
* A figure describing how bad the baseline is becomes a one-sided bound in
  the bad direction (a baseline that is even worse still bears the claim out).
  If the seed hedges it with "~", the bound is relaxed by 25% (e.g. "~8%
  errors" -> ">= 6").
* A target that is not a number comparison ("Track, not target") has
  ``op`` and ``value`` null; ``MetricSpec.met`` then returns None.
* Metric rows with ``"source": "answer"`` are not in the seed's metric tables
  (Q3 and Q5 have none). They restate figures the seed's answer gives, with a
  formula of ours. Every other row is a verbatim table row.
"""
from __future__ import annotations

import functools
import json
import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = [
    "ARMS", "EVIDENCE", "DIFFICULTIES", "OPS", "CatalogError", "Catalog", "ClaimSpec", "MetricSpec",
    "Question", "Topic", "DEFAULT_PATH", "load_catalog",
]

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "data" / "questions.json"

N_QUESTIONS = 30
N_TOPICS = 6
PER_TOPIC = 5
DIFFICULTIES = ("foundational", "intermediate", "advanced")
ARMS = ("baseline", "pattern", "comparison")
EVIDENCE = ("measured", "simulated", "assumed", "setting")
SOURCES = ("table", "answer")
OPS = ("<", "<=", ">", ">=", "==", "between")
MAX_TITLE = 60
MAX_SUMMARY = 600

_CMP: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
}
_SNAKE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
_QID = re.compile(r"^q\d\d$")

Value = float | tuple[float, float] | None


class CatalogError(ValueError):
    """The catalogue file is missing, unreadable or has a malformed entry."""


def _compare(op: str | None, value: Value, measured: float | None) -> bool | None:
    """Does ``measured`` satisfy ``op value``? None if there is no comparison or no number."""
    if op is None or value is None or measured is None:
        return None
    x = float(measured)
    if math.isnan(x):
        return None
    if op == "between":
        lo, hi = value  # type: ignore[misc]
        return bool(lo <= x <= hi)
    return bool(_CMP[op](x, value))


def _describe(op: str | None, value: Value, unit: str) -> str:
    if op is None:
        return "no numeric target"
    if op == "between":
        lo, hi = value  # type: ignore[misc]
        return f"{lo:g}-{hi:g} {unit}".rstrip()
    return f"{op} {value:g} {unit}".rstrip()


@dataclass(frozen=True)
class Topic:
    id: int
    name: str


@dataclass(frozen=True)
class MetricSpec:
    """One row of a question's metric table, plus a machine reading of its target."""
    key: str
    name: str
    formula: str
    target: str
    op: str | None
    value: Value
    unit: str
    source: str = "table"

    def met(self, measured: float | None) -> bool | None:
        """True/False if ``measured`` meets the target; None if the target is not numeric or measured is NaN."""
        return _compare(self.op, self.value, measured)

    @property
    def reading(self) -> str:
        """The numeric reading of the target, e.g. ``'< 200 ms'``."""
        return _describe(self.op, self.value, self.unit)


@dataclass(frozen=True)
class ClaimSpec:
    """One checkable statement from the seed: ``metric`` on ``arm`` should satisfy ``op value``."""
    id: str
    text: str
    metric: str
    op: str
    value: float | tuple[float, float]
    unit: str
    arm: str
    evidence: str | None = None  # measured | simulated | assumed | setting (required once the lab is built)
    assumed: tuple[str, ...] = ()  # the inputs that decide an assumed claim
    sweep: tuple[tuple[str, tuple], ...] = ()  # up to two (parameter, values) that show the region
    control: tuple[tuple[str, Any], ...] = ()  # a setting where the effect must vanish

    def check(self, measured: float | None) -> bool | None:
        """True if ``measured`` bears the claim out, False if not, None if measured is missing/NaN."""
        return _compare(self.op, self.value, measured)

    @property
    def reading(self) -> str:
        return _describe(self.op, self.value, self.unit)


@dataclass(frozen=True)
class Question:
    id: str
    number: int
    topic: int
    difficulty: str
    slug: str
    title: str
    summary: str
    metrics: tuple[MetricSpec, ...]
    claims: tuple[ClaimSpec, ...]
    topic_name: str = ""

    @property
    def notebook(self) -> str:
        return f"notebooks/{self.id}_{self.slug}.ipynb"

    def metric(self, key: str) -> MetricSpec:
        for m in self.metrics:
            if m.key == key:
                return m
        raise KeyError(f"{self.id} has no metric {key!r}; it has {', '.join(m.key for m in self.metrics)}")

    def claim(self, claim_id: str) -> ClaimSpec:
        full = claim_id if "." in claim_id else f"{self.id}.{claim_id}"
        for c in self.claims:
            if c.id == full:
                return c
        raise KeyError(f"{self.id} has no claim {claim_id!r}; it has {', '.join(c.id for c in self.claims)}")


class Catalog:
    """The loaded catalogue: topics, and questions ordered by number."""

    def __init__(self, topics: tuple[Topic, ...], questions: tuple[Question, ...]):
        self.topics = topics
        self.questions = questions
        self._by_id = {q.id: q for q in questions}

    def get(self, qid: str | int) -> Question:
        """A question by id ("q08") or number (8)."""
        key = f"q{qid:02d}" if isinstance(qid, int) and not isinstance(qid, bool) else qid
        try:
            return self._by_id[key]  # type: ignore[index]
        except (KeyError, TypeError):
            first, last = self.questions[0].id, self.questions[-1].id
            raise KeyError(f"unknown question {qid!r}: ids run {first}..{last}") from None

    def topic(self, topic_id: int) -> Topic:
        for t in self.topics:
            if t.id == topic_id:
                return t
        raise KeyError(f"unknown topic {topic_id!r}: ids run 1..{len(self.topics)}")

    def topic_name(self, topic_id: int) -> str:
        return self.topic(topic_id).name

    def by_topic(self) -> dict[Topic, list[Question]]:
        return {t: [q for q in self.questions if q.topic == t.id] for t in self.topics}

    def __iter__(self) -> Iterator[Question]:
        return iter(self.questions)

    def __len__(self) -> int:
        return len(self.questions)

    def __contains__(self, qid: object) -> bool:
        return qid in self._by_id

    def __repr__(self) -> str:
        return f"Catalog({len(self.topics)} topics, {len(self.questions)} questions)"


# --------------------------------------------------------------------------- validation
# A field check takes the value and returns a complaint (str) or None. The tables below
# say which checks apply to which fields; _check_fields applies them and names the field.

Check = Callable[[Any], "str | None"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _int_in(lo: int, hi: int) -> Check:
    return lambda v: None if _is_int(v) and lo <= v <= hi else f"{v!r} is not an integer in {lo}..{hi}"


def _one_of(options: tuple[str, ...], nullable: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if v is None and nullable:
            return None
        return None if isinstance(v, str) and v in options else f"{v!r} is not one of {', '.join(options)}"
    return check


def _matches(pattern: re.Pattern[str], what: str) -> Check:
    return lambda v: None if isinstance(v, str) and pattern.match(v) else f"{v!r} is not {what}"


def _text(max_len: int | None = None) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, str) or not v.strip():
            return f"{v!r} is not a non-empty string"
        if max_len is not None and len(v) > max_len:
            return f"is {len(v)} characters long, more than {max_len}"
        return None
    return check


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) else f"{v!r} is not a string"


def _nonempty_list(v: Any) -> str | None:
    return None if isinstance(v, list) and v else f"{_short(v)} is not a non-empty list"


def _anything(v: Any) -> str | None:  # checked together with op, see _check_op_value
    return None


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


_SNAKE_CASE = _matches(_SNAKE, "snake_case")

TOP_FIELDS: dict[str, Check] = {
    "version": lambda v: None if v == 1 else f"{v!r} is not a supported version (1)",
    "topics": _nonempty_list,
    "questions": _nonempty_list,
}
TOPIC_FIELDS: dict[str, Check] = {"id": _int_in(1, N_TOPICS), "name": _text(80)}
QUESTION_FIELDS: dict[str, Check] = {
    "id": _matches(_QID, "of the form qNN"),
    "number": _int_in(1, N_QUESTIONS),
    "topic": _int_in(1, N_TOPICS),
    "difficulty": _one_of(DIFFICULTIES),
    "slug": _SNAKE_CASE,
    "title": _text(MAX_TITLE),
    "summary": _text(MAX_SUMMARY),
    "metrics": _nonempty_list,
    "claims": _nonempty_list,
}
METRIC_FIELDS: dict[str, Check] = {
    "key": _SNAKE_CASE, "name": _text(), "formula": _text(), "target": _text(),
    "op": _one_of(OPS, nullable=True), "value": _anything, "unit": _string,
}
METRIC_OPTIONAL: dict[str, Check] = {"source": _one_of(SOURCES)}
CLAIM_FIELDS: dict[str, Check] = {
    "id": _string, "text": _text(300), "metric": _SNAKE_CASE,
    "op": _one_of(OPS), "value": _anything, "unit": _string, "arm": _one_of(ARMS),
}


def _names(v: Any) -> str | None:
    ok = isinstance(v, list) and v and all(isinstance(x, str) and _SNAKE.match(x) for x in v)
    return None if ok else f"{_short(v)} is not a non-empty list of parameter names"


def _sweep(v: Any) -> str | None:
    ok = (isinstance(v, dict) and 1 <= len(v) <= 2 and all(isinstance(k, str) and _SNAKE.match(k) for k in v)
          and all(isinstance(x, list) and len(x) >= 2 for x in v.values()))
    return None if ok else f"{_short(v)} is not one or two parameters, each with a list of two or more values"


def _control(v: Any) -> str | None:
    ok = isinstance(v, dict) and v and all(isinstance(k, str) and _SNAKE.match(k) for k in v)
    return None if ok else f"{_short(v)} is not a non-empty object of parameter settings"


CLAIM_OPTIONAL: dict[str, Check] = {
    "evidence": _one_of(EVIDENCE), "assumed": _names, "sweep": _sweep, "control": _control,
}


class _Reporter:
    def __init__(self, name: str):
        self.name = name

    def fail(self, where: str, msg: str) -> CatalogError:
        return CatalogError(f"{self.name}: {where}: {msg}")


def _check_fields(rep: _Reporter, obj: Any, where: str,
                  required: dict[str, Check], optional: dict[str, Check] | None = None) -> None:
    optional = optional or {}
    if not isinstance(obj, dict):
        raise rep.fail(where, f"{_short(obj)} is not an object")
    for field in required:
        if field not in obj:
            raise rep.fail(where, f"missing required field {field!r}")
    for field, v in obj.items():
        check = required.get(field) or optional.get(field)
        if check is None:
            allowed = ", ".join([*required, *optional])
            raise rep.fail(f"{where}.{field}", f"unexpected field (allowed: {allowed})")
        problem = check(v)
        if problem:
            raise rep.fail(f"{where}.{field}", problem)


def _check_op_value(rep: _Reporter, obj: dict, where: str) -> Value:
    """The value must fit the op: a number, [lo, hi] for between, null when op is null."""
    op, v = obj["op"], obj["value"]
    if op is None:
        if v is not None:
            raise rep.fail(f"{where}.value", f"{_short(v)} given but op is null; use null for both")
        return None
    if op == "between":
        if not (isinstance(v, list) and len(v) == 2 and all(_is_num(x) for x in v)):
            raise rep.fail(f"{where}.value", f"{_short(v)} is not a [low, high] pair of numbers (op is between)")
        if v[0] > v[1]:
            raise rep.fail(f"{where}.value", f"low {v[0]!r} is greater than high {v[1]!r}")
        return (v[0], v[1])
    if not _is_num(v):
        raise rep.fail(f"{where}.value", f"{_short(v)} is not a finite number (op is {op})")
    return v


def _parse(raw: Any, name: str) -> Catalog:
    rep = _Reporter(name)
    _check_fields(rep, raw, "top level", TOP_FIELDS)

    topics = []
    for i, t in enumerate(raw["topics"]):
        _check_fields(rep, t, f"topics[{i}]", TOPIC_FIELDS)
        if t["id"] != i + 1:
            raise rep.fail(f"topics[{i}].id", f"{t['id']!r} out of order (expected {i + 1})")
        topics.append(Topic(t["id"], t["name"]))
    if len(topics) != N_TOPICS:
        raise rep.fail("topics", f"{len(topics)} topics, expected {N_TOPICS}")
    topic_names = {t.id: t.name for t in topics}

    questions: list[Question] = []
    seen_ids: dict[str, str] = {}
    seen_claims: set[str] = set()
    for i, q in enumerate(raw["questions"]):
        label = q.get("id") if isinstance(q, dict) and isinstance(q.get("id"), str) and _QID.match(q["id"]) \
            else f"questions[{i}]"
        _check_fields(rep, q, label, QUESTION_FIELDS)
        qid = q["id"]
        if qid in seen_ids:
            raise rep.fail(f"{qid}.id", f"duplicate id {qid!r} (also at {seen_ids[qid]})")
        seen_ids[qid] = f"questions[{i}]"
        if qid != f"q{q['number']:02d}":
            raise rep.fail(f"{qid}.id", f"{qid!r} does not match number {q['number']} (expected 'q{q['number']:02d}')")
        expected_topic = (q["number"] - 1) // PER_TOPIC + 1
        if q["topic"] != expected_topic:
            raise rep.fail(f"{qid}.topic", f"{q['topic']!r} but question {q['number']} belongs to topic {expected_topic}")

        metrics, keys = [], set()
        for j, m in enumerate(q["metrics"]):
            where = f"{qid}.metrics[{j}]"
            _check_fields(rep, m, where, METRIC_FIELDS, METRIC_OPTIONAL)
            if m["key"] in keys:
                raise rep.fail(f"{where}.key", f"duplicate metric key {m['key']!r}")
            keys.add(m["key"])
            value = _check_op_value(rep, m, where)
            metrics.append(MetricSpec(m["key"], m["name"], m["formula"], m["target"], m["op"], value,
                                      m["unit"], m.get("source", "table")))

        claims = []
        for j, c in enumerate(q["claims"]):
            where = f"{qid}.claims[{j}]"
            _check_fields(rep, c, where, CLAIM_FIELDS, CLAIM_OPTIONAL)
            if (c.get("evidence") == "assumed") != ("assumed" in c):
                raise rep.fail(f"{where}.assumed", "name the deciding inputs exactly when evidence is 'assumed'")
            cid = c["id"]
            prefix, _, rest = cid.partition(".")
            if prefix != qid or not _SNAKE.match(rest):
                raise rep.fail(f"{where}.id", f"{cid!r} is not of the form '{qid}.<snake_case>'")
            if cid in seen_claims:
                raise rep.fail(f"{where}.id", f"duplicate claim id {cid!r}")
            seen_claims.add(cid)
            value = _check_op_value(rep, c, where)
            claims.append(ClaimSpec(cid, c["text"], c["metric"], c["op"], value, c["unit"], c["arm"],
                                    c.get("evidence"), tuple(c.get("assumed", ())),
                                    tuple((k, tuple(v)) for k, v in c.get("sweep", {}).items()),
                                    tuple(c.get("control", {}).items())))

        questions.append(Question(qid, q["number"], q["topic"], q["difficulty"], q["slug"], q["title"],
                                  q["summary"], tuple(metrics), tuple(claims), topic_names[q["topic"]]))

    questions.sort(key=lambda x: x.number)
    numbers = [x.number for x in questions]
    if numbers != list(range(1, N_QUESTIONS + 1)):
        missing = sorted(set(range(1, N_QUESTIONS + 1)) - set(numbers))
        raise rep.fail("questions", f"{len(numbers)} questions, expected {N_QUESTIONS} numbered "
                                    f"1..{N_QUESTIONS}" + (f" (missing {missing})" if missing else ""))
    return Catalog(tuple(topics), tuple(questions))


def _read(path: Path) -> Catalog:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CatalogError(f"{path}: cannot read the catalogue: {e.strerror or e}") from e
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise CatalogError(f"{path.name}: not valid JSON: line {e.lineno} column {e.colno}: {e.msg}") from e
    return _parse(raw, path.name)


@functools.lru_cache(maxsize=1)
def _default_catalog() -> Catalog:
    return _read(DEFAULT_PATH)


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate the catalogue (cached when read from the default location).

    Raises CatalogError naming the entry and field of the first malformed entry.
    """
    if path is None:
        return _default_catalog()
    return _read(Path(path))
