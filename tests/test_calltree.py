"""sim.calltree: the vectorised fan-out tree, checked against hand results and Jaeger's critical-path walk."""
from __future__ import annotations

import numpy as np
import pytest

from sim.calltree import Call, CallTree, Service
from sim.tracing import Span, critical_path_self_time

TREE = CallTree((
    Service("gw", 2.0, stages=((Call("a"),), (Call("b"), Call("c")), (Call("d", 0.4),))),
    Service("a", 1.0),
    Service("b", 2.0, stages=((Call("e"), Call("f", 0.7)),)),
    Service("c", 3.0, stages=((Call("g"),), (Call("h", 0.5),))),
    Service("d", 4.0),
    Service("e", 1.0),
    Service("f", 2.0),
    Service("g", 1.0),
    Service("h", 5.0),
), "gw")


def _random(n, seed=0):
    rng = np.random.default_rng(seed)
    S = len(TREE)
    own = rng.lognormal(np.log(TREE.mean_s), 0.8, size=(n, S))
    called = TREE.calls(rng.random((n, S)))
    return own, called, rng


def test_topology_helpers():
    assert TREE.names[0] == "gw"
    assert TREE.breadth_first() == ["gw", "a", "b", "c", "d", "e", "f", "g", "h"]
    assert TREE.breadth_first("c") == ["c", "g", "h"]
    assert TREE.depth("h") == 2 and TREE.depth("gw") == 0
    assert TREE.call_probability("h") == pytest.approx(0.5)
    assert TREE.is_leaf("e") and not TREE.is_leaf("b")


def test_bad_trees_are_refused():
    with pytest.raises(ValueError, match="unknown service"):
        CallTree((Service("r", 1, stages=((Call("x"),),)),), "r")
    with pytest.raises(ValueError, match="two callers"):
        CallTree((Service("r", 1, stages=((Call("x"), Call("x")),)), Service("x", 1)), "r")
    with pytest.raises(ValueError, match="not reachable"):
        CallTree((Service("r", 1), Service("x", 1)), "r")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Call("x", 1.5)
    own, called, _ = _random(4)
    vis = np.ones(len(TREE), dtype=bool)
    vis[TREE.index["b"]] = False
    with pytest.raises(ValueError, match="leaf"):
        TREE.run(own, called, visible=vis)


def test_durations_by_hand():
    S = len(TREE)
    own = np.array([[TREE.mean_s[k] for k in range(S)]])
    called = np.ones((1, S), dtype=bool)
    run = TREE.run(own, called)
    ix = TREE.index
    b = 0.002 + max(0.001, 0.002)
    c = 0.003 + 0.001 + 0.005
    assert run.duration[0, ix["b"]] == pytest.approx(b)
    assert run.duration[0, ix["c"]] == pytest.approx(c)
    assert run.latency[0] == pytest.approx(0.002 + 0.001 + max(b, c) + 0.004)
    # own time is split in equal gaps around the stages: gw has 3 stages -> 4 gaps of 0.5 ms
    assert run.start[0, ix["a"]] == pytest.approx(0.0005)
    assert run.start[0, ix["b"]] == pytest.approx(0.0005 + 0.001 + 0.0005)
    assert run.start[0, ix["d"]] == pytest.approx(3 * 0.0005 + 0.001 + max(b, c))
    assert run.start[0, ix["h"]] == pytest.approx(run.start[0, ix["c"]] + 0.001 + 0.001 + 0.001)


def test_latency_alone_is_run_latency_exactly():
    own, called, rng = _random(500, seed=3)
    origin = rng.random(own.shape) < 0.05
    assert np.array_equal(TREE.latency(own, called), TREE.run(own, called, origin).latency)
    with pytest.raises(ValueError, match="shape"):
        TREE.latency(own, called[:, :3])


def test_conditional_calls_follow_their_probability():
    _, called, _ = _random(40_000, seed=1)
    for name in ("d", "f", "h"):
        p = TREE.call_probability(name)
        assert abs(called[:, TREE.index[name]].mean() - p) < 5 * np.sqrt(p * (1 - p) / 40_000)
    # a child is never called without its parent
    assert not np.any(called[:, TREE.index["h"]] & ~called[:, TREE.index["c"]])


def _spans(run, i, visible):
    out = []
    for name in TREE.names:
        k = TREE.index[name]
        if run.called[i, k] and visible[k]:
            parent = TREE.parent[name]
            s = run.start[i, k]
            out.append(Span(name, parent, s, s + run.duration[i, k]))
    return out


@pytest.mark.parametrize("hidden", [(), ("f",), ("h", "d"), ("a", "e", "f", "g", "h", "d")])
def test_critical_path_matches_jaeger_walk(hidden):
    own, called, rng = _random(300, seed=len(hidden))
    visible = np.array([n not in hidden for n in TREE.names])
    run = TREE.run(own, called, visible=visible)
    for i in range(300):
        jaeger = critical_path_self_time(_spans(run, i, visible))
        for name in TREE.names:
            k = TREE.index[name]
            assert run.cp_self_seen[i, k] == pytest.approx(jaeger.get(name, 0.0), abs=1e-12)
    # the seen critical path always covers the whole request
    assert np.allclose(run.cp_self_seen.sum(axis=1), run.latency)
    if not hidden:
        assert np.allclose(run.cp_self, run.cp_self_seen)
    assert np.allclose(run.cp_self.sum(axis=1), run.latency)


def test_hidden_leaf_time_lands_on_its_caller():
    S = len(TREE)
    own = np.array([[TREE.mean_s[k] for k in range(S)]])
    own[0, TREE.index["h"]] += 0.050  # a slow, uninstrumented leaf under c
    called = np.ones((1, S), dtype=bool)
    vis = np.array([n != "h" for n in TREE.names])
    run = TREE.run(own, called, visible=vis)
    assert run.cp_self[0, TREE.index["h"]] == pytest.approx(0.055)
    assert run.cp_self_seen[0, TREE.index["h"]] == 0.0
    assert run.cp_self_seen[0, TREE.index["c"]] == pytest.approx(0.003 + 0.055)


def test_errors_propagate_and_origins_are_seen_at_the_deepest_visible_span():
    S = len(TREE)
    own = np.ones((3, S)) * 1e-3
    called = np.ones((3, S), dtype=bool)
    called[2, TREE.index["h"]] = False
    origin = np.zeros((3, S), dtype=bool)
    origin[:, TREE.index["h"]] = True  # request 2 does not call h, so it cannot fail there
    run = TREE.run(own, called, origin)
    assert run.request_failed.tolist() == [True, True, False]
    assert run.failed[0, TREE.index["c"]] and not run.failed[0, TREE.index["b"]]
    assert run.origin_seen[0].tolist() == [n == "h" for n in TREE.names]
    vis = np.array([n != "h" for n in TREE.names])
    seen = TREE.run(own, called, origin, visible=vis).origin_seen
    assert seen[0].tolist() == [n == "c" for n in TREE.names]


def test_client_calls_count_only_visible_children():
    S = len(TREE)
    called = np.ones((1, S), dtype=bool)
    vis = np.array([n not in ("e", "d") for n in TREE.names])
    cc = TREE.client_calls(called, vis)[0]
    assert cc[TREE.index["gw"]] == 3 and cc[TREE.index["b"]] == 1 and cc[TREE.index["c"]] == 2


# ---------------------------------------------------------------- spans, search orders and log alerts
from sim.calltree import TreeRun, log_alerts  # noqa: E402


def test_spans_per_call_by_hand():
    own, called, _ = _random(300, seed=7)
    visible = np.array([n not in ("e", "h") for n in TREE.names])
    got = TREE.spans_per_call(called, visible)
    for i in range(300):
        for name in TREE.names:
            k = TREE.index[name]
            want = 0
            if visible[k] and called[i, k]:
                want = 1 + sum(1 for c in TREE.services[name].children if visible[TREE.index[c]] and called[i, TREE.index[c]])
            assert got[i, k] == want


def test_search_orders():
    alerts = {n: n in ("gw", "b", "h") for n in TREE.names}
    assert TREE.search_order("topology", alerts) == TREE.breadth_first()
    assert TREE.search_order("alerts_top_down", alerts)[:3] == ["gw", "b", "h"]
    assert TREE.search_order("alerts_bottom_up", alerts) == ["h", "b", "gw", "a", "c", "d", "e", "f", "g"]
    rnd = TREE.search_order("random", alerts, np.random.default_rng(0))
    assert sorted(rnd) == sorted(TREE.names) and rnd != TREE.breadth_first()
    with pytest.raises(ValueError):
        TREE.search_order("psychic", alerts)


def test_detour_goes_through_the_named_subtree_first():
    order = TREE.breadth_first()
    assert TREE.detour("c", "h", order) == 3  # c, g, h
    assert TREE.detour("c", "a", order) == 5  # c, g, h, then gw, a from the order
    assert TREE.detour("h", "h", order) == 1


def test_log_alerts_on_slow_and_failing_services():
    n, S = 2000, len(TREE)
    rng = np.random.default_rng(8)
    after = np.arange(n) >= n // 2
    called = np.ones((n, S), bool)
    dur = rng.uniform(1.0, 2.0, (n, S))
    failed = np.zeros((n, S), bool)
    dur[after, TREE.index["b"]] *= 1.6  # P99 up 1.6x: alerts (threshold 1.5x)
    dur[after, TREE.index["c"]] *= 1.4  # up 1.4x: does not
    failed[after, TREE.index["d"]] = rng.random(n // 2) < 0.05  # 0% -> 5% errors: alerts
    failed[:, TREE.index["e"]] = rng.random(n) < 0.05  # 5% throughout: not doubled
    called[:, TREE.index["f"]] = after  # never called before: no alert
    z = np.zeros((n, S))
    run = TreeRun(called, z, dur, z, failed, failed, z, z, 0)
    alerts = log_alerts(TREE, run, after)
    assert {k for k, v in alerts.items() if v} == {"b", "d"}
