"""sim.lineage (OpenLineage run events, the DAG, completeness against executed calls) and sim.data_versions."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from sim import data_versions as dv
from sim import lineage as ln


def double(x):
    return [2 * v for v in x]


def boom(x):
    raise RuntimeError("bad input")


def test_a_run_emits_start_then_complete_with_the_spec_fields():
    t = ln.Tracker("ns")
    src = ln.artifact("numbers", [1, 2, 3])
    t.record_source(src)
    out = t.run(double, [src], "doubled")
    assert out.value == [2, 4, 6]
    start, done = t.events
    assert [start["eventType"], done["eventType"]] == ["START", "COMPLETE"]
    assert start["run"]["runId"] == done["run"]["runId"]
    for ev in t.events:
        assert set(ev) == {"eventTime", "producer", "schemaURL", "eventType", "run", "job", "inputs", "outputs"}
        assert ev["job"] == {"namespace": "ns", "name": "double", "facets": {}}
    assert done["inputs"][0]["name"] == "numbers" and done["outputs"][0]["name"] == "doubled"
    assert done["outputs"][0]["facets"]["version"]["datasetVersion"] == out.digest
    g = t.graph
    run = f"run:{done['run']['runId']}"
    assert list(g.successors(ln.node(src))) == [run] and list(g.successors(run)) == [ln.node(out)]
    assert t.well_formed() and t.traces_to_source(out)


def test_a_failing_run_ends_with_fail_and_raises():
    t = ln.Tracker()
    with pytest.raises(RuntimeError):
        t.run(boom, [ln.artifact("x", [1])], "y")
    assert [e["eventType"] for e in t.events] == ["START", "FAIL"]
    assert t.well_formed() and t.completed_runs() == {}


def test_run_ids_are_reproducible():
    a, b = ln.Tracker(), ln.Tracker()
    for t in (a, b):
        t.run(double, [ln.artifact("x", [1])], "y")
    assert [e["run"]["runId"] for e in a.events] == [e["run"]["runId"] for e in b.events]


def test_the_trace_counts_calls_the_tracker_never_saw():
    with ln.ExecutionTrace([double]) as trace:
        double([1])
        ln.Tracker().run(double, [ln.artifact("x", [1])], "y")
    assert trace.calls["double"] == 2
    assert ln.completeness({"double": 1}, trace.calls) == (1, 2)
    assert ln.completeness({"double": 5}, trace.calls) == (2, 2)  # a run counts only up to real calls


@pytest.fixture(scope="module")
def table():
    return dv.VersionedTable(0, 300, 5, 5.0, "mixed", 4)


def test_pipeline_lineage_is_complete_only_when_every_step_is_tracked(table):
    src = ln.artifact("data@v0", table.snapshot())
    hold = ln.artifact("holdout", table.holdout)
    for by_hand, expect in (((), (6, 6)), (("clean", "split"), (4, 6))):
        t = ln.Tracker()
        with ln.ExecutionTrace(dv.TRANSFORMS) as trace:
            acc, model = dv.run_pipeline(src, hold, t, by_hand=by_hand)
        assert ln.completeness(t.completed_runs(), trace.calls) == expect
        assert t.traces_to_source(model) == (not by_hand)  # a hand-run step breaks the chain to the source
        assert nx.is_directed_acyclic_graph(t.graph) and t.well_formed()
        assert 0.5 < acc <= 1.0


def test_the_same_bytes_and_seed_give_the_same_accuracy_and_sgd_depends_on_its_seed(table):
    src, hold = ln.artifact("d", table.snapshot()), ln.artifact("h", table.holdout)
    acc = [dv.run_pipeline(src, hold, ln.Tracker(), model, seed)[0]
           for model, seed in (("logreg", 1), ("logreg", 2), ("sgd", 1), ("sgd", 1), ("sgd", 2))]
    assert acc[0] == acc[1] and acc[2] == acc[3]
    assert acc[2] != acc[4]


def test_versions_change_only_what_the_changes_touch():
    t = dv.VersionedTable(1, 400, 10, 2.0, "append", 4)
    before = t.snapshot()
    counts = t.advance()
    after = t.snapshot()
    assert counts == {"update": 0, "append": 8, "delete": 0}
    assert all(after[k] == before[k] for k in list(before)[:-1])  # id-range shards: appends land at the end
    u = dv.VersionedTable(1, 400, 10, 2.0, "update", 4)
    first = u.snapshot()
    u.advance()
    changed = sum(a != b for a, b in zip(first.values(), u.snapshot().values()))
    assert 1 <= changed <= 4 and len(u.lines) == 400
    ids = [int(line.split(b",")[0]) for part in u.snapshot().values() for line in part.splitlines()[1:]]
    assert ids == sorted(ids)


def test_mixed_changes_use_the_assumed_mix():
    t = dv.VersionedTable(2, 2000, 60, 5.0, "mixed", 8)
    for _ in range(50):
        t.advance()
    total = sum(t.changes.values())
    shares = np.array([t.changes[o] for o in dv.OPS]) / total
    assert total == 50 * 100 and np.allclose(shares, dv.CHANGE_MIX["mixed"], atol=0.03)


def test_a_relabelling_policy_only_ever_moves_class_1_to_class_2():
    t = dv.VersionedTable(3, 600, 20, 5.0, "relabel", 4)
    before = dict(t.label)
    ones = [sum(v == 1 for v in t.label.values())]
    for _ in range(10):
        t.advance()
        ones.append(sum(v == 1 for v in t.label.values()))
    moved = {rid for rid in before if t.label[rid] != before[rid]}
    assert moved and all(before[r] == 1 and t.label[r] == 2 for r in moved)
    assert ones == sorted(ones, reverse=True) and ones[-1] < ones[0]
