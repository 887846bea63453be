"""The one acceptance suite every scorer variant must pass (hexagonal, layered, monolith).

Each check takes a scorer built by ``make(ROWS)`` and raises AssertionError when the
behaviour is wrong. ``run(make, scope)`` runs them all: ``scope="shared"`` builds the
scorer once for the whole suite, ``"per_test"`` builds a fresh one for every check
(pytest's session vs function fixture scope). No check imports a library: whatever
the variant imports is what its ``make`` imports.
"""

ROWS = {
    "benign": {"radius": 11.0, "texture": 16.0, "smoothness": 0.085, "concave_points": 0.01},
    "malignant": {"radius": 21.0, "texture": 24.0, "smoothness": 0.11, "concave_points": 0.15},
    "middle": {"radius": 14.5, "texture": 19.0, "smoothness": 0.095, "concave_points": 0.05},
    "missing": {"radius": 12.0, "smoothness": 0.09, "concave_points": 0.02},
    "out_of_range": {"radius": 12.0, "texture": 18.0, "smoothness": 3.0, "concave_points": 0.02},
}


def _raises(kind, call):
    try:
        call()
    except kind:
        return
    raise AssertionError(f"expected {kind.__name__}")


def check_answer_fields(scorer):
    answer = scorer.score("middle")
    assert {"entity_id", "score", "flagged"} <= set(answer)
    assert answer["entity_id"] == "middle"


def check_score_is_a_probability(scorer):
    for key in ("benign", "malignant", "middle"):
        assert 0.0 <= scorer.score(key)["score"] <= 1.0


def check_clear_cases_are_ordered(scorer):
    assert scorer.score("malignant")["score"] > scorer.score("benign")["score"]


def check_rule_flags_the_clear_positive_only(scorer):
    assert scorer.score("malignant")["flagged"] is True
    assert scorer.score("benign")["flagged"] is False


def check_missing_feature_is_refused(scorer):
    _raises(ValueError, lambda: scorer.score("missing"))


def check_out_of_range_is_refused(scorer):
    _raises(ValueError, lambda: scorer.score("out_of_range"))


def check_unknown_entity_is_refused(scorer):
    _raises(LookupError, lambda: scorer.score("nobody"))


def check_repeatable(scorer):
    assert scorer.score("middle") == scorer.score("middle")


CHECKS = (check_answer_fields, check_score_is_a_probability, check_clear_cases_are_ordered,
          check_rule_flags_the_clear_positive_only, check_missing_feature_is_refused,
          check_out_of_range_is_refused, check_unknown_entity_is_refused, check_repeatable)


def run(make, scope="shared", rounds=1):
    """Run every check ``rounds`` times; return the failures as (check name, message)."""
    failures = []
    shared = make(ROWS) if scope == "shared" else None
    for _ in range(rounds):
        for check in CHECKS:
            try:
                check(shared if shared is not None else make(ROWS))
            except AssertionError as exc:
                failures.append((check.__name__, str(exc)))
    return failures
