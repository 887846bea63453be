"""The same caller behind a sidecar: the proxy encrypts, retries and counts; the code forwards the trace."""
from __future__ import annotations

import socket


def call_model(host: str, port: int, incoming_trace: str | None = None, timeout: float = 2.0) -> str:
    header = incoming_trace or ""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(header.encode()[:60] or b"x")
        answer = conn.recv(16).decode()
    if not answer:
        raise ConnectionError("empty answer")
    return answer
