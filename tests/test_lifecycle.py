"""sim.lifecycle against its references: MLflow's free stage writes, the transition table, guards,
compare-and-set on revisions, one champion per model; and the weak candidate of sim.candidates."""
import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.candidates import accuracy
from sim.lifecycle import (CHAMPION, EDGES, MLFLOW_STAGE, TRANSITIONS, AdHocRegistry, Guards, LifecycleMachine,
                           Stage, graph, invalid_reasons, state_violations)

S = Stage


def staged(reg, now=0.0, acc=0.97, errors=0, requests=1000, approve=True):
    v = reg.create_version("m", acc, now).version
    for target in (S.TRAINING, S.TRAINED, S.VALIDATED, S.STAGED):
        assert reg.transition(reg.read("m", v), target, now).applied
    reg.record_staging("m", v, requests, errors)
    if approve:
        reg.set_approval("m", v, True)
    return v


def test_table_is_the_seed_path_and_a_graph():
    g = graph()
    path = [S.DRAFT, S.TRAINING, S.TRAINED, S.VALIDATED, S.STAGED, S.PRODUCTION, S.ARCHIVED]
    assert nx.is_simple_path(g, path)
    assert not g.has_edge(S.DRAFT, S.PRODUCTION) and not g.has_edge(S.ARCHIVED, S.PRODUCTION)
    assert g.out_degree(S.ARCHIVED) == 0 and nx.is_directed_acyclic_graph(g)
    assert len(EDGES) == len(TRANSITIONS) == g.number_of_edges()
    assert {MLFLOW_STAGE[s] for s in Stage} == {"None", "Staging", "Production", "Archived"}


def test_adhoc_registry_writes_any_stage_like_mlflow():
    reg = AdHocRegistry()
    v = reg.create_version("m", 0.5, 0.0).version
    assert reg.transition(reg.read("m", v), S.PRODUCTION, 0.0).applied
    assert reg.get("m", v).stage is S.PRODUCTION
    assert any("Draft -> Production" in x for x in state_violations(reg))


@pytest.mark.parametrize("changes, guard", [
    (dict(acc=0.85), None),  # refused earlier, at validation
    (dict(errors=10), "error rate"),
    (dict(approve=False), "no approval"),
])
def test_machine_guards_refuse_promotion(changes, guard):
    reg = LifecycleMachine()
    if "acc" in changes:
        v = reg.create_version("m", changes["acc"], 0.0).version
        for t in (S.TRAINING, S.TRAINED):
            reg.transition(reg.read("m", v), t, 0.0)
        d = reg.transition(reg.read("m", v), S.VALIDATED, 0.0)
        assert not d.applied and "accuracy" in d.reason
        return
    v = staged(reg, **changes)
    d = reg.transition(reg.read("m", v), S.PRODUCTION, 30.0)
    assert not d.applied and guard in d.reason


def test_staged_time_guard_is_strict_about_24_hours():
    reg = LifecycleMachine()
    v = staged(reg)
    assert not reg.transition(reg.read("m", v), S.PRODUCTION, 23.99).applied
    assert reg.transition(reg.read("m", v), S.PRODUCTION, 24.0).applied
    assert reg.models["m"].aliases[CHAMPION] == v


def test_machine_refuses_edges_off_the_table():
    reg = LifecycleMachine()
    v = reg.create_version("m", 0.99, 0.0).version
    d = reg.transition(reg.read("m", v), S.PRODUCTION, 100.0)
    assert not d.applied and "no transition Draft -> Production" in d.reason


def test_two_promotions_at_once_adhoc_leaves_two_in_production_machine_refuses_the_stale_one():
    for cls in (AdHocRegistry, LifecycleMachine):
        reg = cls()
        a, b = staged(reg), staged(reg)
        ra, rb = reg.read("m", a), reg.read("m", b)  # both read "no champion"
        assert reg.transition(ra, S.PRODUCTION, 30.0).applied
        assert invalid_reasons(reg, rb, S.PRODUCTION, 30.0, 0.001)  # the judge sees the lost update
        d = reg.transition(rb, S.PRODUCTION, 30.0)
        prod = [k for k, v in reg.models["m"].versions.items() if v.stage is S.PRODUCTION]
        if cls is AdHocRegistry:
            assert d.applied and prod == [a, b]
            assert any("2 versions in Production" in x for x in state_violations(reg))
        else:
            assert not d.applied and d.reason.startswith("stale") and prod == [a]
            assert reg.transition(reg.read("m", b), S.PRODUCTION, 30.0).applied  # re-read: promotes, archives a
            assert reg.get("m", a).stage is S.ARCHIVED and reg.models["m"].aliases[CHAMPION] == b
            assert state_violations(reg) == []


def test_stale_read_of_an_approval_is_refused():
    reg = LifecycleMachine()
    v = staged(reg)
    snap = reg.read("m", v)
    reg.set_approval("m", v, False)  # the reviewer withdraws while the promotion is in flight
    d = reg.transition(snap, S.PRODUCTION, 30.0)
    assert not d.applied and "stale" in d.reason
    assert not reg.transition(reg.read("m", v), S.PRODUCTION, 30.0).applied  # fresh read: the guard refuses


def test_judge_uses_the_true_error_rate_not_the_sample():
    reg = LifecycleMachine()
    v = staged(reg, errors=0, requests=20)  # a faulty build that happened to show no error in 20 requests
    snap = reg.read("m", v)
    assert "serving error rate at or above the bar" in invalid_reasons(reg, snap, S.PRODUCTION, 30.0, 0.02)
    assert reg.transition(snap, S.PRODUCTION, 30.0).applied  # the guard only sees its evidence


OPS = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(list(Stage)), st.booleans(), st.floats(0, 10)),
               max_size=60)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_no_invalid_state_past_the_machine(ops):
    """Any sequence of writes, from fresh or stale reads, leaves the machine's registry structurally valid."""
    reg, now, snaps = LifecycleMachine(), 0.0, {}
    for _ in range(4):
        reg.create_version("m", 0.95, now)
    for k, target, stale, dt in ops:
        now += dt
        v = k + 1
        if k == 3:
            reg.set_approval("m", v, not reg.get("m", v).approved)
        if k % 2:
            reg.record_staging("m", v, 100, int(dt > 5))
        snap = snaps.get(v) if stale and v in snaps else reg.read("m", v)
        snaps[v] = reg.read("m", v)
        before = (reg.get("m", v).stage, len(reg.get("m", v).history))
        d = reg.transition(snap, target, now)
        if not d.applied:
            assert (reg.get("m", v).stage, len(reg.get("m", v).history)) == before
        assert state_violations(reg) == []
        assert len(reg.models["m"].production) <= 1


def test_weak_candidate_misses_the_bar_and_more_data_clears_it():
    weak = [accuracy("weak", s, 60) for s in range(3)]
    assert all(0.6 < a < 0.9 for a in weak)
    assert accuracy("weak", 0, 1000) > 0.9
    assert accuracy("weak", 0, 60) == weak[0]  # cached, deterministic
    assert np.isclose(accuracy("logreg", 0, 0), 0.9689, atol=0.01)
