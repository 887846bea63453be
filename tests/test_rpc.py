"""sim.rpc: encodings against the protobuf wire format, the loopback probe's servers and its sanity."""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import pytest

from sim import rpc


@pytest.mark.parametrize("kind", rpc.PAYLOADS)
@pytest.mark.parametrize("encoder", rpc.ENCODERS)
def test_every_encoder_gives_the_value_back(kind, encoder):
    value = rpc.make_payload(kind)
    back = rpc.decode(encoder, kind, rpc.encode(encoder, kind, value))
    if kind.startswith("vector_"):
        assert back == pytest.approx(value)  # float32 values survive float64 text and float32 protobuf
    else:
        assert back == value


@pytest.mark.parametrize("n", [1, 16, 31, 32, 128, 512, 2048, 40000])
def test_packed_repeated_float_matches_the_wire_format(n):
    value = np.linspace(-1, 1, n).astype(np.float32).tolist()
    blob = rpc.encode("protobuf", f"vector_{n}", value)
    assert len(blob) == rpc.protobuf_vector_bytes(n)
    assert blob[0] == (1 << 3) | 2  # field 1, wire type LEN: one packed record, not n tagged floats
    body = 4 * n
    varint = 1 if body < 128 else 2 if body < 16384 else 3
    assert len(blob) == 1 + varint + body


def test_keys_are_what_make_json_large_for_records():
    sizes = {k: {e: len(rpc.encode(e, k, rpc.make_payload(k))) for e in rpc.ENCODERS}
             for k in ("record", "record_positional")}
    assert sizes["record"]["protobuf"] == sizes["record_positional"]["protobuf"]  # same message either way
    assert sizes["record_positional"]["json"] < sizes["record"]["json"]
    keyed = sizes["record"]["protobuf"] / sizes["record"]["json"]
    positional = sizes["record_positional"]["protobuf"] / sizes["record_positional"]["json"]
    assert keyed < 0.5 < positional < 1.0
    assert json.loads(rpc.encode("json", "record_positional", rpc.make_payload("record")))[0].startswith("u-")


def test_handler_reads_both_shapes_alike():
    rec = rpc.make_payload("record")
    assert rpc.handler(rec) == rpc.handler(rpc.decode("json", "record_positional",
                                                      rpc.encode("json", "record_positional", rec)))
    assert rpc.handler([1.0, 2.5]) == 3.5


def test_reference_profile_has_samples_and_provenance():
    ref = rpc.reference_profile()
    for k in ("cpu", "date", "grpcio", "uvicorn", "hypercorn", "protobuf", "loadavg_1m_before"):
        assert ref["provenance"][k]
    for name in rpc.TRANSPORTS:
        t = ref["transports"][name]
        assert len(t["latency_us"]) >= 100 and t["p50_us"] == pytest.approx(np.median(t["latency_us"]), rel=1e-3, abs=0.06)
    for kind in rpc.PAYLOADS:
        assert set(ref["encodings"][kind]) == set(rpc.ENCODERS)
        assert ref["encodings"][kind]["protobuf"]["bytes"] == len(rpc.encode("protobuf", kind, rpc.make_payload(kind)))


def _listening_address(port: int) -> set[str]:
    """Local addresses of listening TCP sockets on ``port`` (from /proc/net/tcp and tcp6)."""
    out = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(path):
            continue
        for line in open(path).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":
                out.add(addr)
    return out


def test_server_binds_loopback_stops_after_its_request_budget_and_with_its_context():
    import httpx

    with rpc.server("uvicorn", max_s=30, max_requests=3) as (port, pid):
        assert _listening_address(port) == {"0100007F"}  # 127.0.0.1 only
        body = rpc.encode("json", "record", rpc.make_payload("record"))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            for _ in range(3):
                assert c.post("/score", content=body).status_code == 200
        end = time.monotonic() + 5
        while time.monotonic() < end and os.path.exists(f"/proc/{pid}") and \
                open(f"/proc/{pid}/stat").read().split()[2] != "Z":
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not os.path.exists(f"/proc/{pid}")  # reaped by the context that started it


@pytest.fixture(scope="module")
def live():
    return rpc.live_profile()


def test_live_probe_is_sane(live):
    t, hs = live["transports"], live["handshakes"]
    for name, row in t.items():
        assert all(math.isfinite(x) and x > 0 for x in row["latency_us"]), name
    # physics: an in-process call is far cheaper than any loopback round trip; a new TCP connection
    # per request costs more than a kept-alive one; a TLS handshake costs more than a TCP connect
    assert t["inprocess"]["p50_us"] * 20 < min(t[n]["p50_us"] for n in rpc.SERVERS)
    assert t["http1_new_connection"]["p50_us"] > t["http1_keepalive"]["p50_us"]
    assert t["http1_new_connection"]["server_cpu_us"] > t["http1_keepalive"]["server_cpu_us"]
    assert hs["tls13_handshake_p50_us"] > hs["tcp_connect_p50_us"] > 0
    assert 0 < hs["tls13_server_cpu_us"] < hs["tls13_handshake_p50_us"]
    for name in rpc.SERVERS:  # the server's CPU is part of the round trip the caller saw
        assert 0 < t[name]["server_cpu_us"] < 1.5 * t[name]["p50_us"], name
    enc = live["encodings"]["vector_512"]
    assert enc["orjson"]["encode_us"] < enc["json"]["encode_us"]  # a C encoder beats the stdlib's
    assert live["provenance"]["cpu"] == rpc.cpu_model()
