"""sim.mtls on loopback: PERMISSIVE vs STRICT as Istio defines them, handshake timings, the two clients."""
import socket
import ssl

import numpy as np
import pytest

from sim import mtls
from sim.mesh_clients import in_code, with_mesh


def test_permissive_accepts_everything_and_says_how_it_arrived():
    assert mtls.probe_calls(["sidecar", "plaintext", "tls_no_cert"], "PERMISSIVE") == ["mtls", "plain", "tls"]


def test_strict_accepts_only_calls_with_a_client_certificate():
    assert mtls.probe_calls(["sidecar", "plaintext", "tls_no_cert", "sidecar"], "STRICT") == \
        ["mtls", "broken", "broken", "mtls"]


def test_a_certificate_from_another_ca_is_refused_in_strict():
    import trustme

    rogue = trustme.CA().issue_cert("caller.default.svc.cluster.local")
    ca = mtls._pki()[0]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    rogue.configure_cert(ctx)
    with mtls.LoopbackServer("STRICT") as srv:
        with pytest.raises((ssl.SSLError, OSError)):
            with socket.create_connection((mtls.HOST, srv.port), timeout=2) as raw:
                conn = ctx.wrap_socket(raw, server_hostname=mtls.HOST)
                conn.sendall(b"x")
                if not conn.recv(16):
                    raise ConnectionError("closed")


def test_the_server_binds_loopback_and_is_gone_after_its_block():
    with mtls.LoopbackServer("PERMISSIVE") as srv:
        assert srv.sock.getsockname()[0] == "127.0.0.1"
        port = srv.port
    with pytest.raises(OSError):
        socket.create_connection((mtls.HOST, port), timeout=0.5).close()


def test_live_handshake_timings_are_sane_and_ordered():
    s = mtls.time_handshakes(rounds=8)
    med = {k: float(np.median(v)) for k, v in s.items()}
    assert all(np.isfinite(v).all() and min(v) > 0 for v in s.values())
    assert med["mtls_new"] > med["tcp_new"] and med["mtls_new"] > med["mtls_reused"]


def test_reference_profile_records_where_it_was_measured():
    ref = mtls.reference_profile()
    prov = ref["provenance"]
    assert prov["cpu"] and prov["openssl"] and prov["generated_by"] == "bench/measure_mtls.py"
    assert set(ref["samples_ms"]) == {"tcp_new", "mtls_new", "mtls_reused"}
    assert np.median(ref["samples_ms"]["mtls_new"]) > np.median(ref["samples_ms"]["tcp_new"])


def test_both_shipped_clients_really_call(tmp_path):
    ca, _, workload = mtls._pki()
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    workload.cert_chain_pems[0].write_to_path(str(cert_file))
    workload.private_key_pem.write_to_path(str(key_file))
    ctx = in_code.tls_context(str(ca_file), str(cert_file), str(key_file))
    with mtls.LoopbackServer("STRICT") as srv:
        assert in_code.call_model(mtls.HOST, srv.port, ctx) == "mtls"
    with mtls.LoopbackServer("PERMISSIVE") as srv:
        assert with_mesh.call_model(mtls.HOST, srv.port, "00-" + "1" * 32 + "-" + "2" * 16 + "-01") == "plain"


@pytest.mark.parametrize("n", [20, 41, 100, 333])
def test_median_interval_matches_the_kit_order_statistics(n):
    from sim.metrics import order_statistic_interval

    x = np.random.default_rng(n).exponential(1.0, n)
    iv = order_statistic_interval(x, 50)
    assert mtls.median_interval(x) == (iv.low, iv.high)
