"""Mutual TLS on loopback, for real: handshake cost and what PERMISSIVE vs STRICT let through.

Istio's ``PeerAuthentication`` (``security/v1beta1/peer_authentication.proto``, REFERENCES §22)
has two modes that matter here. ``PERMISSIVE`` (the effective default) accepts plaintext and
mutual TLS on the same port (Envoy's TLS inspector looks at the first bytes); ``STRICT``
accepts only mutual TLS with a client certificate. ``LoopbackServer`` plays the server-side
sidecar on 127.0.0.1: it peeks at the first byte of each connection (0x16 = a TLS record),
wraps TLS connections with ``CERT_OPTIONAL`` (PERMISSIVE) or ``CERT_REQUIRED`` (STRICT), and
in STRICT closes plaintext connections. It answers each request with how it arrived:
``mtls`` (a verified client certificate), ``tls`` (encrypted, no client certificate) or
``plain``. Certificates come from ``trustme`` (one CA for the mesh, like Istio's CA);
TLS is pinned to 1.3. Where it differs from a sidecar: a thread per connection, and OpenSSL in Python instead of BoringSSL in Envoy.

``time_handshakes`` times new TCP connections, new mutual-TLS connections and requests on a
reused TLS connection (one byte each way), interleaved in rounds. ``reference_profile``
reads the committed measurement (``data/profiles/mtls_handshake.json``, written by
``bench/measure_mtls.py``); ``live_profile`` measures on this machine, kept in the disk
cache keyed by CPU and library versions. ``probe_calls`` sends generated calls (sidecar
with a client certificate, plaintext, TLS without a certificate) and records what the
server accepted. Every server binds 127.0.0.1 only and is closed by the ``with`` that opens it.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import socket
import ssl
import threading
import time
from pathlib import Path

import numpy as np

from .cache import DiskCache, cpu_model

HOST = "127.0.0.1"
KINDS = ("sidecar", "plaintext", "tls_no_cert")  # how a generated caller connects
MODES = ("PERMISSIVE", "STRICT")
REFERENCE = Path(__file__).resolve().parent.parent / "data" / "profiles" / "mtls_handshake.json"
CACHE = DiskCache("mtls", code=[__file__])
IO_TIMEOUT_S = 2.0


def versions() -> dict:
    from importlib import metadata

    return {"python": platform.python_version(), "openssl": ssl.OPENSSL_VERSION, "trustme": metadata.version("trustme")}


@functools.lru_cache(maxsize=1)
def _pki():
    """One mesh CA, a server certificate for 127.0.0.1 and a workload (client) certificate."""
    import trustme

    ca = trustme.CA()
    return ca, ca.issue_cert(HOST), ca.issue_cert("caller.default.svc.cluster.local")


def server_context(mode: str) -> ssl.SSLContext:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    ca, server, _ = _pki()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    server.configure_cert(ctx)
    ca.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED if mode == "STRICT" else ssl.CERT_OPTIONAL
    return ctx


def client_context(with_cert: bool) -> ssl.SSLContext:
    ca, _, workload = _pki()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ca.configure_trust(ctx)
    if with_cert:
        workload.configure_cert(ctx)
    return ctx


class LoopbackServer:
    """A server-side sidecar on 127.0.0.1 (an ephemeral port); use as a context manager."""

    def __init__(self, mode: str = "PERMISSIVE", keep_alive: bool = False):
        self.mode, self.keep_alive = mode, keep_alive
        self.ctx = server_context(mode)
        self.sock = socket.create_server((HOST, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"mtls-{mode}", daemon=True)
        self.rejected = 0
        self._workers: list[threading.Thread] = []

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        for w in self._workers:
            w.join(timeout=IO_TIMEOUT_S)
        return False

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            conn.settimeout(IO_TIMEOUT_S)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            worker = threading.Thread(target=self._handle_and_close, args=(conn,), daemon=True)
            worker.start()
            self._workers = [w for w in self._workers if w.is_alive()] + [worker]

    def _handle_and_close(self, conn: socket.socket):
        try:
            self._handle(conn)
        except (OSError, ssl.SSLError):
            self.rejected += 1
        finally:
            conn.close()

    def _handle(self, conn: socket.socket):
        first = conn.recv(1, socket.MSG_PEEK)
        if not first:
            return
        if first[0] != 0x16:  # plaintext
            if self.mode == "STRICT":
                self.rejected += 1
                return
            stream, how = conn, "plain"
        else:
            stream = self.ctx.wrap_socket(conn, server_side=True)
            how = "mtls" if stream.getpeercert() else "tls"
        while True:
            data = stream.recv(64)
            if not data:
                return
            stream.sendall(how.encode())
            if not self.keep_alive:
                return


def call(port: int, kind: str) -> str:
    """One call of a generated caller: the server's answer ('mtls', 'tls', 'plain') or 'broken'."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    try:
        with _connect(port) as raw:
            if kind == "plaintext":
                stream = raw
            else:
                stream = client_context(kind == "sidecar").wrap_socket(raw, server_hostname=HOST)
            stream.sendall(b"x")
            answer = stream.recv(16).decode()
            return answer or "broken"
    except (OSError, ssl.SSLError):
        return "broken"


def probe_calls(kinds, mode: str) -> list[str]:
    """Send each generated call (in order) to a fresh loopback server in ``mode``; the answers."""
    with LoopbackServer(mode) as srv:
        return [call(srv.port, k) for k in kinds]


@functools.lru_cache(maxsize=64)
def cached_probe(kinds: tuple, mode: str) -> tuple:
    """``probe_calls``, kept in the disk cache per calls, mode, CPU and versions (the answers are the finding)."""
    key = {"kinds": list(kinds), "mode": mode, "cpu": cpu_model(), **versions()}
    got = CACHE.get_json("coverage", key)
    if got is None:
        got = probe_calls(kinds, mode)
        CACHE.put_json("coverage", key, got)
    return tuple(got)


def time_handshakes(rounds: int = 40) -> dict[str, list[float]]:
    """Seconds per new TCP connection + 1-byte echo, per new mutual-TLS 1.3 connection + echo,
    and per 1-byte echo on one reused mutual-TLS connection; ``rounds`` interleaved samples each."""
    out = {"tcp_new": [], "mtls_new": [], "mtls_reused": []}
    cctx = client_context(True)
    with LoopbackServer("PERMISSIVE", keep_alive=True) as srv:
        reused_raw = _connect(srv.port)
        reused = cctx.wrap_socket(reused_raw, server_hostname=HOST)
        try:
            for _ in range(2):  # warm-up: imports, first handshake, session objects
                _echo_new(srv.port, None), _echo_new(srv.port, cctx), _echo(reused)
            for _ in range(rounds):
                t0 = time.perf_counter()
                _echo_new(srv.port, None)
                t1 = time.perf_counter()
                _echo_new(srv.port, cctx)
                t2 = time.perf_counter()
                _echo(reused)
                t3 = time.perf_counter()
                out["tcp_new"].append(t1 - t0)
                out["mtls_new"].append(t2 - t1)
                out["mtls_reused"].append(t3 - t2)
        finally:
            reused.close()
    return out


def _echo(stream) -> None:
    stream.sendall(b"x")
    if not stream.recv(16):
        raise ConnectionError("the loopback server closed the connection")


def _connect(port: int) -> socket.socket:
    raw = socket.create_connection((HOST, port), timeout=IO_TIMEOUT_S)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle/delayed-ACK stalls on small records
    return raw


def _echo_new(port: int, ctx: ssl.SSLContext | None) -> None:
    with _connect(port) as raw:
        stream = raw if ctx is None else ctx.wrap_socket(raw, server_hostname=HOST)
        _echo(stream)


def median_interval(x, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for the median of independent samples (the order statistics whose ranks
    bracket it with the binomial's probability), as ``sim.metrics.order_statistic_interval(x, 50)``
    computes it, without importing scipy.stats (seconds on a busy machine)."""
    from scipy.special import bdtr

    xs = np.sort(np.asarray(x, dtype=float))
    n = xs.size
    cdf = bdtr(np.arange(n + 1), n, 0.5)
    alpha = (1 - confidence) / 2
    lo = int(np.argmax(cdf >= alpha - 1e-12))
    hi = int(np.argmax(cdf >= 1 - alpha - 1e-12)) + 1
    if n < 20 or lo < 1 or hi > n:
        return float("nan"), float("nan")
    return float(xs[lo - 1]), float(xs[hi - 1])


def summary(samples: dict[str, list[float]]) -> dict:
    return {k: {"median_ms": float(np.median(v) * 1e3), "p90_ms": float(np.percentile(v, 90) * 1e3),
                "n": len(v)} for k, v in samples.items()}


def provenance(generated_by: str) -> dict:
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        load = None
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "machine": platform.machine(), **versions(),
            "loadavg_1m": load, "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "generated_by": generated_by}


def measure(rounds: int = 40, generated_by: str = "sim.mtls.measure") -> dict:
    samples = time_handshakes(rounds)
    return {"samples_ms": {k: [round(x * 1e3, 4) for x in v] for k, v in samples.items()},
            "summary": summary(samples), "provenance": provenance(generated_by)}


@functools.lru_cache(maxsize=1)
def reference_profile() -> dict:
    """The committed measurement, with the CPU and versions that produced it."""
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=4)
def live_profile(rounds: int = 30) -> dict:
    """This machine's measurement, from the disk cache when this CPU and these versions measured it."""
    key = {"cpu": cpu_model(), **versions(), "rounds": rounds}
    got = CACHE.get_json("handshakes", key)
    if got is None:
        got = measure(rounds, generated_by="sim.mtls.live_profile")
        CACHE.put_json("handshakes", key, got)
    return got

