"""Q22 lab: RTT arithmetic per connection policy, calibration to the loopback probe, the claims' regions,
the control, and random valid settings."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

from labs import get_lab
from labs.contract import ParamError
from sim.rpc import protobuf_vector_bytes, reference_profile
from tests.lab_fuzz import check_run, settings_strategy

LAB = get_lab("q22")


@pytest.fixture(scope="module")
def default():
    return LAB.run(0)


def test_arms_order_as_their_costs(default):
    p50 = {a: default.metrics[a]["p50_ms"] for a in ("baseline", "keepalive", "orjson", "pattern")}
    assert p50["baseline"] > p50["keepalive"] > p50["orjson"] > p50["pattern"]
    cpu = {a: default.metrics[a]["server_cpu_us"] for a in p50}
    assert cpu["baseline"] > cpu["keepalive"] > cpu["orjson"] > cpu["pattern"]
    gap = default.metrics["comparison"]["gap_closed_by_keepalive_pct"]
    assert 0 < gap < 100


def test_each_round_trip_adds_its_rtt():
    def p50(**kw):
        return LAB.run(0, rate_rps=20.0, requests=600, **kw).metrics

    zero, ten = p50(rtt_ms=0.0), p50(rtt_ms=10.0)
    assert ten["baseline"]["p50_ms"] - zero["baseline"]["p50_ms"] == pytest.approx(30.0, abs=0.3)  # TCP+TLS+call
    assert ten["pattern"]["p50_ms"] - zero["pattern"]["p50_ms"] == pytest.approx(10.0, abs=0.3)
    assert ten["keepalive"]["p50_ms"] - zero["keepalive"]["p50_ms"] == pytest.approx(10.0, abs=0.3)
    plain = p50(rtt_ms=10.0, tls=False)["baseline"]["p50_ms"] - p50(rtt_ms=0.0, tls=False)["baseline"]["p50_ms"]
    assert plain == pytest.approx(20.0, abs=0.3)  # TCP + call


def test_idle_loopback_calls_reproduce_the_probe():
    ref = reference_profile()["transports"]
    r = LAB.run(0, rtt_ms=0.0, rate_rps=5.0, requests=1500, payload="record", tls=False).metrics
    assert r["keepalive"]["p50_ms"] == pytest.approx(ref["http1_keepalive"]["p50_us"] / 1e3, rel=0.05)
    assert r["baseline"]["p50_ms"] == pytest.approx(ref["http1_new_connection"]["p50_us"] / 1e3, rel=0.05)
    assert r["pattern"]["p50_ms"] == pytest.approx(ref["grpc"]["p50_us"] / 1e3, rel=0.05)


def test_payload_sizes_are_the_real_encoders(default):
    m = default.metrics
    assert m["pattern"]["payload_bytes"] == protobuf_vector_bytes(512)
    enc = reference_profile()["encodings"]["vector_512"]
    assert m["baseline"]["payload_bytes"] == enc["json"]["bytes"]
    assert m["comparison"]["payload_size_pct"] == pytest.approx(100 * enc["protobuf"]["bytes"] / enc["json"]["bytes"])
    same = LAB.run(0, rest_encoding="protobuf", requests=600).metrics["comparison"]["payload_size_pct"]
    assert same == 100.0


def test_cpu_bound_throughput_matches_the_measured_server_cpu(default):
    for arm in ("baseline", "keepalive", "pattern"):
        m = default.metrics[arm]
        assert m["throughput_rps_per_core"] == pytest.approx(m["cpu_bound_rps_per_core"], rel=0.03), arm


def test_small_pool_caps_keep_alive_throughput_at_long_rtt():
    m = LAB.run(0, rtt_ms=50.0, rest_connection="keep_alive", requests=1000).metrics
    assert m["keepalive"]["throughput_rps"] == pytest.approx(10 / 0.0512, rel=0.05)  # Little: 10 / (RTT + call)
    more = LAB.run(0, rtt_ms=50.0, rest_connection="keep_alive", pool_size=100, requests=1000).metrics
    assert more["comparison"]["keepalive_throughput_gain_x"] < m["comparison"]["keepalive_throughput_gain_x"] / 3


def test_control_one_encoder_no_network_reused_connections():
    m = LAB.run(0, rtt_ms=0.0, rest_encoding="protobuf", rest_connection="keep_alive").metrics["comparison"]
    assert m["latency_ratio_x"] < 3 and m["throughput_gain_x"] < 3
    # what is left is the Python stacks themselves (uvicorn + httpx vs grpcio), not the protocol's encoding
    ref = reference_profile()["transports"]
    assert m["latency_ratio_x"] == pytest.approx(ref["http1_keepalive"]["p50_us"] / ref["grpc"]["p50_us"], rel=0.2)


def test_overload_grows_the_queue_not_an_error():
    r = LAB.run(0, rate_rps=3000.0, requests=1500)
    assert r.metrics["baseline"]["utilization_pct"] > 95
    assert r.metrics["baseline"]["p99_ms"] > 10 * r.metrics["pattern"]["p99_ms"]


def test_plots(default):
    charts = LAB.plots(default)
    assert len(charts) == 5
    for c in charts:
        spec = c.to_dict()
        assert sum(len(v) for v in spec.get("datasets", {}).values()) > 0


def test_refusals_are_one_line():
    with pytest.raises(ParamError, match="rtt_ms"):
        LAB.run(0, rtt_ms=-1.0)
    with pytest.raises(ParamError, match="payload"):
        LAB.run(0, payload="vector_3")


@pytest.fixture(scope="module")
def regions():
    return {v.id: v for v in LAB.check(0)}


def test_regions(regions):
    r = {k: (v.verdict, v.region) for k, v in regions.items()}
    # 3-5x needs a new connection per REST call and a network: 3 RTT against 1 tends to 3x as RTT grows
    assert r["q22.latency_ratio"] == ("conditional", "holds only when rest_connection = per_request and rtt_ms ≥ 1")
    assert r["q22.grpc_latency"] == ("conditional", "holds only when rtt_ms in [5, 10]")
    assert r["q22.rest_latency"][0] == "conditional" and "per_request" in r["q22.rest_latency"][1]
    assert "keep_alive" not in r["q22.rest_latency"][1]
    # throughput: new connections cost the server about 3.4x gRPC's CPU; 5-10x only when a small keep-alive
    # pool meets a long round trip
    assert r["q22.throughput_gain"] == ("conditional",
                                        "holds only when rest_connection = keep_alive and rtt_ms ≥ 20")
    assert r["q22.grpc_rps_per_core"][0] == "fails"  # Python's grpcio: ~3-4K per core
    assert r["q22.payload"][0] == "conditional" and "record_positional" not in r["q22.payload"][1]
    assert r["q22.payload_near_70"][0] == "fails"
    for cid in ("q22.latency_ratio", "q22.throughput_gain", "q22.payload", "q22.latency_reduction"):
        assert regions[cid].control["vanishes"], cid


def test_positional_json_is_the_only_record_near_protobuf(regions):
    cells = {(c["payload"], c["rest_encoding"]): c["measured"] for c in regions["q22.payload"].grid}
    assert cells[("record_positional", "json")] > 70 > cells[("record", "json")]
    assert all(cells[(k, "json")] < 25 for k in ("vector_16", "vector_512", "vector_2048"))


# ---------------------------------------------------------------- random valid settings
@settings(max_examples=10)
@given(settings_strategy(LAB, ranges={"requests": (500, 1200)}, fixed={"profile": "reference"}))
def test_random_settings_run_or_refuse(values):
    r = check_run(LAB, values)
    if r is not None:
        assert all(math.isfinite(r.metrics[a]["p50_ms"]) for a in ("baseline", "pattern"))
        assert np.isfinite(r.metrics["comparison"]["latency_ratio_x"])


@pytest.mark.slow
def test_live_profile_runs():
    r = LAB.run(0, profile="live", requests=600)
    assert r.metrics["pattern"]["p50_ms"] < r.metrics["baseline"]["p50_ms"]
    assert r.extras["profile_cpu"]


def test_three_fold_throughput_needs_new_connections_or_a_starved_pool(regions):
    grid = regions["q22.throughput_gain_3x"].grid
    assert all(c["verdict"] == "holds" for c in grid if c["rest_connection"] == "per_request" and c["rtt_ms"] <= 20)
    assert all(c["verdict"] != "holds" for c in grid if c["rest_connection"] == "keep_alive" and c["rtt_ms"] <= 1)
    assert regions["q22.throughput_gain_3x"].control["vanishes"]
