"""The common contract every registered lab must meet (like scikit-learn's check_estimator)."""
from __future__ import annotations

import json
import math

import pytest

from labs import built_ids, get_lab
from labs.catalog import load_catalog
from labs.contract import Lab, Param, ParamError

LAB_IDS = built_ids()


def test_some_labs_are_built():
    assert "q08" in LAB_IDS


@pytest.fixture(scope="module", params=LAB_IDS)
def lab(request) -> Lab:
    return get_lab(request.param)


@pytest.fixture(scope="module")
def default_result(lab):
    return lab.run(seed=0)


def test_lab_is_in_catalogue_and_names_itself(lab):
    q = load_catalog().get(lab.id)
    assert lab.question is q
    assert lab.title == q.title
    assert lab.headline[0] in lab.arms


def test_params_are_well_formed(lab):
    names = [p.name for p in lab.params]
    assert len(names) == len(set(names)), "duplicate parameter names"
    assert "seed" not in names, "seed is every lab's own argument (and the explorer's URL key)"
    for p in lab.params:
        assert p.help, f"{p.name} needs one line of help"
        assert p.validate(p.default) == p.default
        if p.choices is None and p.kind in (int, float):
            assert p.low is not None and p.high is not None, f"{p.name} needs a range"
            assert p.low <= p.default <= p.high
    if lab.refine_param:
        assert lab.param(lab.refine_param).kind is int


def test_sweeps_name_real_claims_and_params(lab):
    claim_ids = {c.id for c in lab.question.claims}
    for claim_id, sweep in lab.sweeps.items():
        assert claim_id in claim_ids, f"sweep for unknown claim {claim_id}"
        p = lab.param(sweep.param)
        for v in sweep.values:
            p.validate(v)


def test_bad_input_is_refused_with_the_parameter_named(lab):
    with pytest.raises(ParamError, match="no_such_param"):
        lab.run(seed=0, no_such_param=1)
    for p in lab.params:
        if p.choices is not None:
            bad = "__not_a_choice__"
        elif p.kind is bool:
            bad = "maybe"
        elif p.high is not None:
            bad = p.high + (1 if p.kind is int else abs(p.high) + 1.0)
        else:
            continue
        with pytest.raises(ParamError) as err:
            lab.validate({p.name: bad})
        assert p.name in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(ParamError):
        lab.run(seed=-1)


def test_result_is_complete(lab, default_result):
    r = default_result
    assert r.lab == lab.id and r.seed == 0
    assert r.params == lab.defaults()
    for arm in lab.arms:
        assert arm in r.metrics, f"missing arm {arm}"
    head_arm, head_metric = lab.headline
    assert math.isfinite(r.metrics[head_arm][head_metric])
    # every claim of the catalogue gets a verdict from a measured value
    assert [v.id for v in r.claims] == [c.id for c in lab.question.claims]
    for v in r.claims:
        assert v.verdict in ("holds", "fails")
        assert v.measured is not None
    # every metric of the seed's table is measured in at least one arm
    measured = {k for m in r.metrics.values() for k in m}
    for spec in lab.question.metrics:
        assert spec.key in measured, f"{lab.id} does not measure {spec.key}"
    json.dumps(r.to_dict(), allow_nan=False)


def test_run_is_deterministic(lab, default_result):
    again = lab.run(seed=0)
    a, b = default_result.to_dict(), again.to_dict()
    a.pop("elapsed_s"), b.pop("elapsed_s")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    other = lab.run(seed=1).to_dict()
    other.pop("elapsed_s")
    assert other["metrics"] != a["metrics"], "the seed must matter"


def test_default_run_within_budget(lab, default_result):
    # A warm run (caches built by lab.prepare, see conftest); a generous factor for shared machines.
    warm = lab.run(seed=0)
    assert warm.elapsed_s < 3 * lab.budget_s


def test_plots_render(lab, default_result):
    import matplotlib.pyplot as plt

    figs = lab.plots(default_result)
    assert figs, "a lab shows at least one plot"
    for f in figs:
        assert f.axes
        plt.close(f)


def test_param_parsing_semantics():
    p = Param("x", 1.0, 0.0, 2.0, unit="s", help="h")
    assert p.parse("1.5") == 1.5
    for bad in ("abc", "3", "nan", "inf", ""):
        with pytest.raises(ParamError, match=r"x.*\[0, 2\] s"):
            p.parse(bad)
    n = Param("n", 3, 1, 10, help="h")
    assert n.parse("4") == 4 and isinstance(n.parse("4.0"), int)
    with pytest.raises(ParamError):
        n.parse("4.5")
    with pytest.raises(ParamError):
        n.validate(True)
    c = Param("mode", "a", choices=("a", "b"), help="h")
    assert c.parse("b") == "b"
    with pytest.raises(ParamError, match="one of a, b"):
        c.parse("z")
    with pytest.raises(ParamError):
        Param("bad", 5, 0, 1, help="h")  # invalid default fails at definition
