"""Q25 lab: sidecar cost, mTLS modes and retry policies behave as their references say; regions pinned; fuzz."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from labs import get_lab
from labs.claims import SweepRunner, check_claim
from labs.contract import ParamError
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q25")


def run(seed=0, **kw):
    return LAB.run(seed, **kw)


def test_one_hop_at_istio_reference_load_adds_the_published_cost():
    r = run(hops=1)
    c = r.metrics["comparison"]
    assert 2.6 <= c["latency_overhead_p90_ms"] <= 2.95  # Istio: 2.65-2.8 ms P90 for two proxies at 1,000 rps
    assert 2.6 <= c["latency_overhead_p99_ms"] <= 3.1  # and 2.7-2.9 ms at P99
    assert r.metrics["pattern"]["proxy_vcpu_per_1000rps"] == pytest.approx(0.2, rel=0.05)  # Istio 1.24


def test_overhead_grows_with_hops_and_with_proxy_load():
    one, three = run(hops=1), run(hops=3)
    assert 2.5 * one.metrics["comparison"]["latency_overhead_p95_ms"] < three.metrics["comparison"][
        "latency_overhead_p95_ms"] < 3.5 * one.metrics["comparison"]["latency_overhead_p95_ms"]
    busy = run(hops=1, rate_rps=9000.0)  # 90% busy proxy workers: queueing, not the fixed cost
    assert busy.metrics["pattern"]["proxy_utilization_pct"] > 85
    assert busy.metrics["comparison"]["latency_overhead_p95_ms"] > 1.5 * one.metrics["comparison"][
        "latency_overhead_p95_ms"]


def test_new_connections_pay_a_measured_handshake_per_hop():
    reused, fresh = run(hops=1, rate_rps=100.0), run(hops=1, rate_rps=100.0, new_connection_pct=100.0)
    hs = fresh.metrics["pattern"]["mtls_handshake_ms"]
    extra = fresh.metrics["comparison"]["latency_overhead_p95_ms"] - reused.metrics["comparison"][
        "latency_overhead_p95_ms"]
    assert extra > hs  # at least the median handshake (P95 of a skewed sample is above it)
    assert hs > 3 * fresh.metrics["baseline"]["tcp_connect_ms"]


def test_control_without_sidecar_cost_or_new_connections_has_no_overhead():
    r = run(sidecar_added_ms=0.0, sidecar_cpu_ms=0.0)
    for key in ("latency_overhead_p90_ms", "latency_overhead_p95_ms", "latency_overhead_p99_ms"):
        assert abs(r.metrics["comparison"][key]) < 1e-9
    assert r.metrics["baseline"]["p95_ms"] == pytest.approx(r.metrics["pattern"]["p95_ms"])


def test_permissive_lets_plaintext_in_and_strict_breaks_it():
    perm, strict = run(unmeshed_pct=25.0), run(unmeshed_pct=25.0, peer_authentication="STRICT")
    assert perm.metrics["pattern"]["mtls_coverage_pct"] < 100
    assert perm.metrics["pattern"]["plaintext_accepted_pct"] > 0 and perm.metrics["pattern"]["broken_calls_pct"] == 0
    assert strict.metrics["pattern"]["mtls_coverage_pct"] == 100
    assert strict.metrics["pattern"]["broken_calls_pct"] == pytest.approx(perm.metrics["pattern"][
        "plaintext_accepted_pct"])  # the same generated callers: the plaintext ones now fail


@pytest.mark.parametrize("hops", [1, 2])
def test_hard_outage_sends_one_plus_retries_to_the_layers_with_or_without_backoff(hops):
    r = run(hops=hops, outage_down_pct=100.0, outage_duration_s=10.0, route_timeout_s=60.0)
    expect = (1 + r.params["num_retries"]) ** hops
    assert r.metrics["baseline"]["load_amplification_x"] == pytest.approx(expect, rel=0.02)
    assert r.metrics["pattern"]["load_amplification_x"] == pytest.approx(expect, rel=0.06)
    assert r.metrics["comparison"]["budget_load_amplification_x"] - 1 < 0.5 * (expect - 1)  # most extra calls gone
    # only requests arriving in the outage's last back-off interval (≤ 250 ms of 10 s) can get through
    assert r.metrics["baseline"]["goodput_pct"] < 0.5 and r.metrics["pattern"]["goodput_pct"] < 2.5


def test_budget_cuts_load_and_recovery_but_sheds_requests_retries_would_save():
    r = run()
    b, p, g = r.metrics["baseline"], r.metrics["pattern"], r.metrics["budget"]
    assert g["load_amplification_x"] < 0.7 * p["load_amplification_x"]
    assert g["recovery_s"] < p["recovery_s"] and g["retry_overflow"] > 0
    assert g["goodput_pct"] < p["goodput_pct"]  # a partial outage: retries found healthy replicas
    assert p["recovery_s"] > 1  # the backlog the retries left on the surviving replicas


def test_control_no_outage_no_extra_load():
    r = run(outage_mode="none")
    for arm in ("baseline", "pattern", "budget"):
        assert r.metrics[arm]["load_amplification_x"] == 1.0
        assert r.metrics[arm]["goodput_pct"] == 100.0
    assert math.isnan(r.metrics["comparison"]["load_amplification_reduction_pct"])
    assert "no extra call" in r.reasons["comparison"]["load_amplification_reduction_pct"]


def test_code_reduction_follows_the_line_counts():
    r = run(business_lines=200)
    before, after = r.metrics["baseline"]["client_lines"], r.metrics["pattern"]["client_lines"]
    assert r.metrics["comparison"]["code_reduction_pct"] == pytest.approx(100 * (before - after) / (before + 200))


def test_default_run_is_interactive():
    run()  # warm the parts' real pieces (loopback probe)
    LAB.__dict__.get("_part_cache", {}).clear()
    assert run().elapsed_s < 1.5  # 0.5 s budget on a quiet machine; this one is shared


def test_refuses_a_retry_window_beyond_its_request_cap():
    with pytest.raises(ParamError, match="outage_duration_s"):
        run(outage_duration_s=3000.0, chain_rate_rps=1000.0)


@pytest.fixture(scope="module")
def runner():
    return SweepRunner(LAB, 0, LAB.validate({}))


def _verdict(runner, cid):
    return check_claim(LAB.question.claim(cid), runner)


def test_latency_regions(runner):
    hop = _verdict(runner, "q25.overhead")
    assert hop.verdict == "conditional" and hop.control["vanishes"]
    cells = {(c["rate_rps"], c["new_connection_pct"]): c["verdict"] for c in hop.grid}
    assert {v for (r, n), v in cells.items() if n == 0.0} == {"fails"}  # reused connections: ~2.7 ms per hop
    assert cells[(100.0, 100.0)] == "holds" and cells[(4000.0, 100.0)] == "fails"  # handshakes, then saturation
    total = _verdict(runner, "q25.overhead_p95")
    assert total.region == "holds only when hops ≤ 3"


def test_mtls_region(runner):
    v = _verdict(runner, "q25.mtls")
    assert v.verdict == "conditional" and v.control["vanishes"]
    assert {c["verdict"] for c in v.grid if c["peer_authentication"] == "STRICT"} == {"holds"}
    assert {(c["unmeshed_pct"], c["peer_authentication"]) for c in v.grid if c["verdict"] != "holds"} == \
        {(20.0, "PERMISSIVE")}


def test_retry_regions(runner):
    storm = _verdict(runner, "q25.backoff_no_storm")
    assert storm.verdict == "fails"
    budget = _verdict(runner, "q25.budget_no_storm")
    assert budget.verdict == "conditional" and budget.control["vanishes"]
    assert {c["verdict"] for c in budget.grid if c["hops"] == 1} == {"holds"}
    assert "holds" not in {c["verdict"] for c in budget.grid if c["hops"] == 3}
    red = _verdict(runner, "q25.backoff_vs_storm")
    assert red.verdict in ("inconclusive", "conditional") and red.control["vanishes"]
    long = [c for c in red.grid if c["outage_duration_s"] == 20.0]
    assert all(abs(c["measured"]) < 2 for c in long)  # a long outage: back-off sends as many calls


def test_code_region(runner):
    assert _verdict(runner, "q25.code_reduction").region == "holds only when business_lines ≤ 120"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settings_strategy(LAB, ranges={"requests": (1000, 3000), "chain_rate_rps": (10.0, 100.0),
                                      "outage_duration_s": (0.1, 10.0), "after_outage_s": (1.0, 10.0),
                                      "outage_start_s": (0.0, 10.0), "coverage_calls": (10, 20),
                                      "rate_rps": (10.0, 3000.0)},
                         fixed={"profile": "reference"}))
def test_random_settings_run_or_are_refused_cleanly(values):
    r = check_run(LAB, values)
    if r is not None:
        assert np.isfinite(r.metrics["comparison"]["latency_overhead_p95_ms"])


def test_live_profile_runs_and_is_ordered_as_physics_says():
    r = run(profile="live", hops=1, rate_rps=100.0, new_connection_pct=100.0)
    assert r.metrics["pattern"]["mtls_handshake_ms"] > r.metrics["pattern"]["reused_call_ms"] > 0
    assert r.metrics["pattern"]["mtls_handshake_ms"] > r.metrics["baseline"]["tcp_connect_ms"] > 0
    assert np.isfinite(r.metrics["comparison"]["overhead_per_hop_p95_ms"])
