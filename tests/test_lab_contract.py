"""The common contract every registered lab must meet: check_lab, and properties over any input."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labs import built_ids, get_lab
from labs.checks import check_lab
from labs.claims import VERDICTS
from labs.catalog import EVIDENCE
from labs.contract import Lab
from labs.params import SEED, Param, ParamError, check_seed, question_id

LAB_IDS = built_ids()
EXPENSIVE = {"q15"}  # a new setting can cost seconds of real-model work: fewer examples


@pytest.fixture(scope="module", params=LAB_IDS)
def lab(request) -> Lab:
    return get_lab(request.param)


def test_check_lab_finds_no_problem(lab):
    assert check_lab(lab) == []


def test_check_lab_catches_a_broken_lab():
    q08 = get_lab("q08")

    class Broken(type(q08)):
        exercises = q08.exercises + (type(q08.exercises[0])("?", {"client_timeout_s": 999.0}, ("pattern", "nope")),)

    problems = check_lab(Broken(), determinism=False)
    assert any("exercise 4" in p and "client_timeout_s" in p for p in problems)
    assert any("pattern.nope" in p for p in problems)
    assert any("exercise 4 has no `why`" in p for p in problems)
    assert not any("exercise 1 has no `why`" in p for p in problems)


def test_verdicts_and_evidence_are_from_the_contract(lab):
    r = lab.run(seed=0)
    assert [v.id for v in r.claims] == [c.id for c in lab.question.claims]
    for v in r.claims:
        assert v.verdict in VERDICTS and v.evidence in EVIDENCE
        d = v.to_dict()
        assert set(d) == {"id", "text", "verdict", "evidence", "region", "detail"}
    json.dumps(r.to_dict(), allow_nan=False)
    other = lab.run(seed=1).to_dict()
    assert other["metrics"] != r.to_dict()["metrics"], "the seed must matter"


def test_plots_draw_data(lab):
    from faces.explorer import plot_payload

    plots = lab.plots(lab.run(seed=0))
    assert plots, "a lab shows at least one plot"
    for p in plots:
        kind, payload = plot_payload(p)
        if kind == "vega":
            rows = sum(len(v) for v in payload.get("datasets", {}).values())
            assert rows > 0, "a chart with no data"
        else:
            assert payload[:8] == b"\x89PNG\r\n\x1a\n" and len(payload) > 5000


# ---------------------------------------------------------------- any valid setting runs or is refused
def _value(p: Param, budget_cap: bool):
    if p.choices is not None:
        return st.sampled_from(p.choices)
    if p.kind is bool:
        return st.booleans()
    hi = p.default if budget_cap else p.high
    if p.kind is int:
        return st.one_of(st.sampled_from([p.low, hi, p.default]), st.integers(p.low, hi))
    return st.one_of(st.sampled_from([p.low, hi, p.default]),
                     st.floats(p.low, hi, allow_nan=False, allow_infinity=False))


def _settings(lab):
    # The request budget is drawn up to its default: larger budgets run the same code for longer.
    fields = {p.name: _value(p, p.name == lab.refine_param) for p in lab.params}
    extremes = st.sampled_from([
        {p.name: (p.choices[0] if p.choices else p.low if p.low is not None else p.default) for p in lab.params},
        {p.name: (p.choices[-1] if p.choices else
                  (p.default if p.name == lab.refine_param else p.high) if p.high is not None else p.default)
         for p in lab.params},
    ])
    return st.one_of(extremes, st.fixed_dictionaries(fields))


def _assert_runs_or_refuses(lab, values):
    try:
        r = lab.run(seed=0, **values)
    except ParamError as e:
        assert "\n" not in str(e) and str(e).startswith("parameter "), str(e)
        return
    for arm, metrics in r.metrics.items():
        for key, v in metrics.items():
            assert isinstance(v, float), (arm, key, v)
            if not math.isfinite(v):
                assert r.reasons.get(arm, {}).get(key), f"{arm}.{key} is {v} with no reason"
    for v in r.claims:
        if v.measured is None:
            assert v.verdict == "not_measured"


@pytest.mark.slow
@pytest.mark.parametrize("lab_id", LAB_IDS)
def test_any_valid_setting_runs_or_is_refused_in_one_line(lab_id):
    lab = get_lab(lab_id)

    @settings(max_examples=6 if lab_id in EXPENSIVE else 30, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(_settings(lab))
    def prop(values):
        _assert_runs_or_refuses(lab, values)

    prop()


# ---------------------------------------------------------------- any invalid input is refused before running
_BAD_TEXT = ["nan", "inf", "-inf", "1e400", "", "abc", "٣", "１", "0x10", "1_0"]


@pytest.mark.parametrize("lab_id", LAB_IDS)
def test_invalid_input_is_refused_before_any_simulation(lab_id, monkeypatch):
    lab = get_lab(lab_id)
    monkeypatch.setattr(type(lab), "simulate", lambda *a, **k: pytest.fail("simulated a refused setting"))

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(lab.params), st.one_of(
        st.sampled_from(_BAD_TEXT), st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=6)))
    def prop(p, text):
        try:
            value = p.parse(text)
        except ParamError as e:
            assert p.name in str(e) and "\n" not in str(e)
        else:  # a text that parses is a valid value (ASCII digits, in range)
            assert text.strip().isascii() and p.validate(value) == value
        for bad in (float("nan"), float("inf"), -float("inf"), "3", None, [1]):
            if p.choices is not None and bad in p.choices:
                continue
            with pytest.raises(ParamError, match=p.name):
                lab.run(seed=0, **{p.name: bad})

    prop()
    with pytest.raises(ParamError, match="no_such_param"):
        lab.run(seed=0, no_such_param=1)
    for seed in (-1, 2**32, 1.5, True, "0"):
        with pytest.raises(ParamError, match="seed"):
            lab.run(seed=seed)


def test_param_parsing_rules():
    p = Param("x", 1.0, 0.0, 2.0, unit="s", help="h")
    assert p.parse("1.5") == 1.5
    for bad in ("abc", "3", "nan", "inf", "", "١", "1e400"):
        with pytest.raises(ParamError, match=r"x.*\[0, 2\] s"):
            p.parse(bad)
    n = Param("n", 3, 1, 10, help="h")
    assert n.parse("4") == 4 and isinstance(n.parse("4.0"), int)
    for bad in ("4.5", "nan", "inf", "-inf", "1e400", "٤"):
        with pytest.raises(ParamError, match="parameter n"):
            n.parse(bad)
    for bad in (True, float("nan"), float("inf")):
        with pytest.raises(ParamError):
            n.validate(bad)
    c = Param("mode", "a", choices=("a", "b"), help="h")
    assert c.parse("b") == "b"
    with pytest.raises(ParamError, match="one of a, b"):
        c.parse("z")
    with pytest.raises(ParamError):
        Param("bad", 5, 0, 1, help="h")  # an invalid default fails at definition


def test_seed_and_question_ids_follow_one_rule():
    assert check_seed(2**32 - 1) == 2**32 - 1 and SEED.parse("7") == 7
    for bad in (-1, 2**32, "7", 1.5, True):
        with pytest.raises(ParamError, match="seed"):
            check_seed(bad)
    for bad in ("٧", "-1", "4294967296", "nan"):
        with pytest.raises(ParamError, match="seed"):
            SEED.parse(bad)
    assert question_id("8") == question_id("q8") == question_id("Q08") == "q08"
    for bad in ("q٠٨", "q31", "q0", "8.0", "qq8"):
        with pytest.raises(ParamError):
            question_id(bad)


def test_a_series_given_as_a_function_is_built_once_when_first_read():
    import pickle

    import pandas as pd

    from labs.contract import Series

    calls = []

    def build():
        calls.append(1)
        return pd.DataFrame({"x": [1, 2]})

    s = Series({"cheap": pd.DataFrame({"y": [0]}), "costly": build})
    assert calls == [] and "costly" in s and len(s) == 2  # not built by asking what is there
    assert s["costly"]["x"].tolist() == [1, 2] and s.get("costly") is s["costly"] and calls == [1]
    again = pickle.loads(pickle.dumps(Series({"costly": build})))
    assert type(again) is Series and again["costly"]["x"].tolist() == [1, 2]
    assert all(isinstance(v, pd.DataFrame) for v in dict(Series({"costly": build})).values())


def test_checking_labs_together_gives_each_lab_its_own_verdicts():
    """``check_many`` pools the labs' runs; every verdict, value and region must be what ``Lab.check`` gives."""
    from labs.contract import check_many

    labs = [get_lab("q14"), get_lab("q13")]
    together = check_many(labs, seed=3, cache=False)
    for lab, verdicts in zip(labs, together):
        alone = lab.check(seed=3, cache=False)
        assert [v.to_dict(full=True) for v in verdicts] == [v.to_dict(full=True) for v in alone], lab.id
