"""A caller that does its own transport security, retries and telemetry (no mesh).

Everything below except ``call_model`` is cross-cutting: the code a sidecar takes over.
"""
from __future__ import annotations

import os
import random
import secrets
import socket
import ssl
import threading
import time
from collections import Counter

BASE_S, CAP_S, RETRIES = 0.025, 0.25, 2
BUDGET_RATIO, BUDGET_MIN = 0.2, 3

metrics = Counter()
latencies: list[float] = []
_lock = threading.Lock()
_active = {"calls": 0, "retries": 0}


def tls_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(ca_file)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def reload_if_rotated(ctx_holder: dict, paths: tuple[str, str, str]) -> ssl.SSLContext:
    stamp = max(os.stat(p).st_mtime for p in paths)
    if ctx_holder.get("stamp") != stamp:
        ctx_holder["ctx"], ctx_holder["stamp"] = tls_context(*paths), stamp
    return ctx_holder["ctx"]


def traceparent(incoming: str | None) -> str:
    if incoming:
        version, trace_id, _parent, flags = incoming.split("-")
        return f"{version}-{trace_id}-{secrets.token_hex(8)}-{flags}"
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def backoff(retry: int) -> float:
    return random.uniform(0.0, min(CAP_S, (2 ** retry - 1) * BASE_S))


def may_retry() -> bool:
    with _lock:
        if _active["retries"] < max(BUDGET_MIN, BUDGET_RATIO * _active["calls"]):
            _active["retries"] += 1
            return True
        metrics["retry_overflow"] += 1
        return False


def once(host: str, port: int, ctx: ssl.SSLContext, header: str, timeout: float) -> str:
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as conn:
            conn.sendall(header.encode()[:60])
            answer = conn.recv(16).decode()
    if not answer:
        raise ConnectionError("empty answer")
    return answer


def call_model(host: str, port: int, ctx: ssl.SSLContext, incoming_trace: str | None = None,
               timeout: float = 2.0) -> str:
    header = traceparent(incoming_trace)
    start = time.perf_counter()
    retry = 0
    with _lock:
        _active["calls"] += 1
    try:
        while True:
            try:
                answer = once(host, port, ctx, header, timeout)
                metrics["ok"] += 1
                return answer
            except (OSError, ssl.SSLError):
                metrics["error"] += 1
                if retry >= RETRIES or not may_retry():
                    raise
                retry += 1
                time.sleep(backoff(retry))
                with _lock:
                    _active["retries"] -= 1
    finally:
        with _lock:
            _active["calls"] -= 1
        latencies.append(time.perf_counter() - start)
