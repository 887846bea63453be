"""Tests for the question catalogue (data/questions.json + labs/catalog.py)."""
from __future__ import annotations

import copy
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest

from labs.catalog import (
    ARMS, DEFAULT_PATH, OPS, Catalog, CatalogError, ClaimSpec, MetricSpec, Topic, load_catalog,
)

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / ".." / "shared" / "seed" / "ai-architecture-qa.md"

TOPIC_NAMES = ["Structure and modularity", "Behavioural patterns", "Quality attributes",
               "Data architecture", "Integration", "Evolution"]


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return load_catalog()


@pytest.fixture()
def raw() -> dict:
    return json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))


def _write(tmp_path: Path, doc: dict | str) -> Path:
    p = tmp_path / "questions.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return p


# --------------------------------------------------------------------------- shipped catalogue

def test_default_path_is_the_repo_data_file():
    assert DEFAULT_PATH == REPO / "data" / "questions.json"


def test_shipped_catalogue_shape(cat):
    assert len(cat) == 30
    assert [q.number for q in cat] == list(range(1, 31))
    assert [q.id for q in cat.questions] == [f"q{n:02d}" for n in range(1, 31)]
    assert [t.name for t in cat.topics] == TOPIC_NAMES
    groups = cat.by_topic()
    assert list(groups) == list(cat.topics)
    for t, qs in groups.items():
        assert [q.number for q in qs] == list(range(5 * t.id - 4, 5 * t.id + 1))
        assert all(q.topic_name == t.name for q in qs)
        assert cat.topic(t.id) is t and cat.topic_name(t.id) == t.name
    with pytest.raises(KeyError, match="1..6"):
        cat.topic(7)


def test_difficulty_distribution(cat):
    # The seed's summary table says 6F/12I/12A (1F/2I/2A per topic), but its own
    # Difficulty line for Q24 (rate limiting) says Intermediate, and LABS.md agrees,
    # so the Integration topic is 1F/3I/1A and the total is 6/13/11. The catalogue
    # follows the per-question lines; see test_difficulties_match_seed.
    counts = Counter(q.difficulty for q in cat)
    assert counts == {"foundational": 6, "intermediate": 13, "advanced": 11}
    for qs in cat.by_topic().values():
        assert qs[0].difficulty == "foundational"
        assert sum(q.difficulty == "foundational" for q in qs) == 1
    assert cat.get("q24").difficulty == "intermediate"


def test_every_question_has_metrics_and_claims(cat):
    for q in cat:
        assert len(q.metrics) >= 1, q.id
        assert len(q.claims) >= 1, q.id
        assert len(q.title) <= 60 and q.summary.strip()
        assert all(c.arm in ARMS for c in q.claims)
        assert all(c.op in OPS for c in q.claims)


def test_slugs_unique_and_notebook_names(cat):
    slugs = [q.slug for q in cat]
    assert len(set(slugs)) == 30
    q8 = cat.get("q08")
    assert q8.slug == "circuit_breaker"
    assert q8.notebook == "notebooks/q08_circuit_breaker.ipynb"


def test_claim_ids_unique_across_catalogue(cat):
    ids = [c.id for q in cat for c in q.claims]
    assert len(ids) == len(set(ids))


def test_units_match_key_suffixes(cat):
    suffix_unit = [("_events_per_s", "events/s"), ("_rps_per_core", "rps/core"), ("_rps", "rps"),
                   ("_ms", "ms"), ("_s", "s"), ("_min", "min"), ("_h", "h"), ("_days", "days"),
                   ("_months", "months"), ("_pct", "%"), ("_x", "x")]
    for q in cat:
        for item in (*q.metrics, *q.claims):
            key = item.key if isinstance(item, MetricSpec) else item.metric
            unit = next((u for suffix, u in suffix_unit if key.endswith(suffix)), None)
            if unit is not None:  # first (most specific) matching suffix decides
                assert item.unit == unit, (q.id, key, item.unit)


def test_get_by_number_and_unknown_id(cat):
    assert cat.get(8) is cat.get("q08")
    assert "q08" in cat and "q31" not in cat
    with pytest.raises(KeyError, match="q01..q30"):
        cat.get("q31")
    with pytest.raises(KeyError):
        cat.get("circuit_breaker")


def test_question_metric_and_claim_lookup(cat):
    q = cat.get("q08")
    assert q.metric("p99_open_ms").target == "<200ms"
    assert q.claim("probes") is q.claim("q08.probes")
    with pytest.raises(KeyError, match="p99_open_ms"):
        q.metric("p50_ms")


def test_default_load_is_cached_and_objects_are_frozen(cat):
    assert load_catalog() is cat
    assert load_catalog(DEFAULT_PATH) is not cat  # an explicit path is read afresh
    with pytest.raises(AttributeError):
        cat.get("q08").title = "x"  # type: ignore[misc]
    assert hash(cat.get("q08"))  # usable as a dict key / in sets


# --------------------------------------------------------------------------- against the seed

def _seed_questions(text: str) -> dict[int, dict]:
    """Number -> {"difficulty": str, "rows": [(name, formula, target), ...]} from the seed's markdown."""
    out = {}
    parts = re.split(r"^### Q(\d+):.*$", text, flags=re.M)
    for num, body in zip(parts[1::2], parts[2::2]):
        diff = re.search(r"\*\*Difficulty\*\*:\s*(\w+)", body).group(1).lower()
        rows = []
        table = re.search(r"\*\*Metrics\*\*:\s*\n\s*\n\|\s*Metric\s*\|.*\n\|[-| ]+\n((?:\|.*\n?)+)", body)
        if table:
            for line in table.group(1).strip().splitlines():
                # formulas such as `|a - b|` contain pipes: lift them out before splitting the row
                formulas = re.findall(r"`([^`]*)`", line)
                cells = [c.strip() for c in re.sub(r"`[^`]*`", "\0", line).strip().strip("|").split("|")]
                name, formula, target = cells
                assert formula == "\0" and len(formulas) == 1, line
                rows.append((name, formulas[0], target))
        out[int(num)] = {"difficulty": diff, "rows": rows}
    return out


@pytest.fixture(scope="module")
def seed() -> dict[int, dict]:
    if not SEED.is_file():
        pytest.skip(f"seed deck not found at {SEED}")
    return _seed_questions(SEED.read_text(encoding="utf-8"))


def test_seed_parser_found_all_questions(seed):
    assert sorted(seed) == list(range(1, 31))
    assert sum(len(s["rows"]) for s in seed.values()) >= 80


def test_every_seed_metric_row_is_in_the_catalogue(cat, seed):
    for q in cat:
        rows = seed[q.number]["rows"]
        from_table = [(m.name, m.formula, m.target) for m in q.metrics if m.source == "table"]
        assert from_table == rows, q.id
        if not rows:  # Q3 and Q5 have no metric table; their rows restate figures from the answer
            assert all(m.source == "answer" for m in q.metrics), q.id


def test_difficulties_match_seed(cat, seed):
    for q in cat:
        assert q.difficulty == seed[q.number]["difficulty"], q.id


# --------------------------------------------------------------------------- malformed entries

def _q(doc: dict, qid: str) -> dict:
    return next(q for q in doc["questions"] if q["id"] == qid)


def _claim_index(doc: dict, cid: str) -> int:
    qid = cid.split(".")[0]
    return next(i for i, c in enumerate(_q(doc, qid)["claims"]) if c["id"] == cid)


def _bad_op(d):
    _q(d, "q08")["metrics"][2]["op"] = "approx"


def _missing_title(d):
    del _q(d, "q08")["title"]


def _duplicate_id(d):
    d["questions"][8] = copy.deepcopy(_q(d, "q08"))


def _wrong_topic(d):
    _q(d, "q08")["topic"] = 3


def _non_numeric_value(d):
    _q(d, "q08")["claims"][0]["value"] = "30000"


def _between_reversed(d):
    c = _q(d, "q08")["claims"][_claim_index(d, "q08.probes")]
    c["op"], c["value"] = "between", [3, 1]


def _between_scalar(d):
    c = _q(d, "q08")["claims"][_claim_index(d, "q08.probes")]
    c["op"], c["value"] = "between", 2


def _bool_value(d):
    _q(d, "q08")["metrics"][0]["value"] = True


def _value_without_op(d):
    _q(d, "q08")["metrics"][0]["op"] = None


def _bad_difficulty(d):
    _q(d, "q08")["difficulty"] = "hard"


def _bad_slug(d):
    _q(d, "q08")["slug"] = "Circuit-Breaker"


def _long_title(d):
    _q(d, "q08")["title"] = "x" * 61


def _empty_summary(d):
    _q(d, "q08")["summary"] = "  "


def _long_summary(d):
    _q(d, "q08")["summary"] = "word " * 200


def _no_metrics(d):
    _q(d, "q08")["metrics"] = []


def _bad_metric_key(d):
    _q(d, "q08")["metrics"][1]["key"] = "P99 ms"


def _bad_arm(d):
    _q(d, "q08")["claims"][1]["arm"] = "treatment"


def _claim_wrong_prefix(d):
    _q(d, "q08")["claims"][1]["id"] = "q09.p99_breaker"


def _duplicate_claim(d):
    _q(d, "q08")["claims"][1]["id"] = _q(d, "q08")["claims"][0]["id"]


def _unknown_field(d):
    _q(d, "q08")["tittle"] = "typo"


def _number_mismatch(d):
    _q(d, "q08")["number"] = 9


def _missing_question(d):
    d["questions"].pop()


def _missing_metric_field(d):
    del _q(d, "q08")["metrics"][1]["formula"]


MALFORMED = [
    # (case, mutate, substrings the message must contain)
    ("bad_op", _bad_op, ["questions.json: q08.metrics[2].op:", "'approx' is not one of <, <=, >, >=, ==, between"]),
    ("missing_title", _missing_title, ["q08", "'title'", "missing"]),
    ("duplicate_id", _duplicate_id, ["q08.id", "duplicate"]),
    ("wrong_topic", _wrong_topic, ["q08.topic", "topic 2"]),
    ("non_numeric_value", _non_numeric_value, ["q08.claims[0].value", "'30000'"]),
    ("between_lo_gt_hi", _between_reversed, ["q08.claims[", "].value", "greater than"]),
    ("between_scalar", _between_scalar, ["q08.claims[", "].value", "[low, high]"]),
    ("bool_value", _bool_value, ["q08.metrics[0].value"]),
    ("value_without_op", _value_without_op, ["q08.metrics[0].value", "op is null"]),
    ("bad_difficulty", _bad_difficulty, ["q08.difficulty", "'hard'"]),
    ("bad_slug", _bad_slug, ["q08.slug", "snake_case"]),
    ("long_title", _long_title, ["q08.title", "60"]),
    ("empty_summary", _empty_summary, ["q08.summary"]),
    ("long_summary", _long_summary, ["q08.summary", "600"]),
    ("no_metrics", _no_metrics, ["q08.metrics", "non-empty"]),
    ("bad_metric_key", _bad_metric_key, ["q08.metrics[1].key", "snake_case"]),
    ("bad_arm", _bad_arm, ["q08.claims[1].arm", "'treatment'"]),
    ("claim_wrong_prefix", _claim_wrong_prefix, ["q08.claims[1].id", "q09.p99_breaker"]),
    ("duplicate_claim", _duplicate_claim, ["q08.claims[1].id", "duplicate"]),
    ("unknown_field", _unknown_field, ["q08.tittle", "unexpected"]),
    ("number_mismatch", _number_mismatch, ["q08.id", "number 9"]),
    ("missing_question", _missing_question, ["questions", "29 questions", "30"]),
    ("missing_metric_field", _missing_metric_field, ["q08.metrics[1]", "'formula'"]),
]


@pytest.mark.parametrize("mutate,expected", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_entry_fails_loudly(tmp_path, raw, mutate, expected):
    mutate(raw)
    with pytest.raises(CatalogError) as info:
        load_catalog(_write(tmp_path, raw))
    msg = str(info.value)
    assert msg.startswith("questions.json: ")
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_unmodified_copy_loads(tmp_path, raw):
    cat = load_catalog(_write(tmp_path, raw))
    assert len(cat) == 30


def test_invalid_json_and_missing_file(tmp_path):
    with pytest.raises(CatalogError, match="not valid JSON: line 1"):
        load_catalog(_write(tmp_path, '{"version": 1,'))
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "nope.json")
    assert issubclass(CatalogError, ValueError)


def test_question_that_is_not_an_object(tmp_path, raw):
    raw["questions"][3] = "q04"
    with pytest.raises(CatalogError, match=r"questions\[3\]: 'q04' is not an object"):
        load_catalog(_write(tmp_path, raw))


# --------------------------------------------------------------------------- comparison semantics

def _metric(op, value):
    return MetricSpec("m_pct", "M", "a / b", "t", op, value, "%")


def _claim(op, value):
    return ClaimSpec("q01.c", "text", "m_pct", op, value, "%", "pattern")


CASES = [
    # op, value, measured, expected
    ("<", 200, 199.9, True), ("<", 200, 200, False), ("<", 200, 250, False),
    ("<=", 200, 200, True), ("<=", 200, 200.1, False),
    (">", 50, 50.1, True), (">", 50, 50, False),
    (">=", 80, 80, True), (">=", 80, 79.99, False),
    ("==", 30, 30, True), ("==", 30, 30.0, True), ("==", 30, 31, False),
    ("between", (1, 3), 1, True), ("between", (1, 3), 3, True), ("between", (1, 3), 2, True),
    ("between", (1, 3), 0.99, False), ("between", (1, 3), 3.01, False),
    ("between", (2, 2), 2, True),
]


@pytest.mark.parametrize("op,value,measured,expected", CASES)
def test_met_and_check_semantics(op, value, measured, expected):
    assert _metric(op, value).met(measured) is expected
    assert _claim(op, value).check(measured) is expected


@pytest.mark.parametrize("measured", [math.nan, None, float("nan")])
def test_missing_measurement_gives_none(measured):
    assert _metric("<", 1).met(measured) is None
    assert _claim("between", (1, 3)).check(measured) is None


def test_null_target_gives_none():
    m = _metric(None, None)
    assert m.met(5.0) is None and m.met(math.nan) is None
    assert m.reading == "no numeric target"


def test_numpy_measurements_give_plain_bools():
    np = pytest.importorskip("numpy")
    assert _metric("<", 200).met(np.float64(150)) is True
    assert _claim("between", (1, 3)).check(np.int64(4)) is False


def test_readings(cat):
    assert cat.get("q11").claim("batching_gain").reading == "3-5 x"
    assert cat.get("q08").metric("p99_open_ms").reading == "< 200 ms"


def test_shipped_null_targets_are_the_qualitative_ones(cat):
    nulls = {(q.id, m.target) for q in cat for m in q.metrics if m.op is None}
    assert nulls == {("q21", "Track, not target"), ("q24", "Track per user"), ("q26", "Gradual 1% → 100%")}


def test_topic_is_hashable_value():
    assert Topic(1, "a") == Topic(1, "a") and len({Topic(1, "a"), Topic(1, "a")}) == 1
