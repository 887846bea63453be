"""One loopback hop, measured: payload encodings and request round trips per transport.

Shared by Q22 (gRPC vs REST) and Q3 (monolith vs services). Two probes, both real code:

* **Encodings.** The same payload (float vectors of N float32 values, a keyed record of
  nine fields, and that record as a positional array) written by stdlib ``json``,
  ``orjson``, ``msgpack`` and protobuf (proto3 messages built from a descriptor at import:
  ``repeated float`` is packed, §21 of REFERENCES.md, so N floats take
  ``1 + len(varint(4N)) + 4N`` bytes). Decoding goes back to the same plain Python values
  (a list of floats, a dict), so every encoder is charged the same work.
* **Round trips.** One handler (decode, add up, encode a one-field answer) reached five
  ways: an in-process call; HTTP/1.1 on uvicorn + Starlette with a kept-alive httpx
  connection and with a new TCP connection per request (one client, made and warmed
  before timing: a client's own set-up is never charged to a request); gRPC (grpcio,
  HTTP/2); JSON over h2c (HTTP/2 without TLS, prior knowledge) on hypercorn. Each server
  runs in its own process bound to 127.0.0.1, stops itself after ``max_s`` seconds or
  ``max_requests`` requests, and is always terminated by the code that started it. Its
  CPU time per request is read from ``/proc/<pid>/task/*/schedstat`` (nanoseconds, all
  threads). Transports are timed in interleaved rounds so a noisy moment hits all alike.
  A TCP connect and a TLS 1.3 handshake (``ssl``, a trustme ECDSA certificate) are timed
  on loopback too, with each side's thread CPU.

``bench/measure_rpc.py`` writes the committed profile ``data/profiles/rpc_loopback.json``
(samples plus provenance: CPU, versions, date, load); ``reference_profile()`` reads it and
``live_profile()`` measures this machine once, kept in the disk cache keyed by CPU and
library versions. Differences from the references: gRPC's 5-byte message prefix and
HTTP headers are on the wire but not in ``payload_bytes``.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import gc
import json
import multiprocessing as mp
import os
import platform
import socket
import ssl
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from .cache import DiskCache, cpu_model

HOST = "127.0.0.1"
ENCODERS = ("json", "orjson", "msgpack", "protobuf")
PAYLOADS = ("vector_16", "vector_128", "vector_512", "vector_2048", "record", "record_positional")
TRANSPORTS = ("inprocess", "http1_keepalive", "http1_new_connection", "grpc", "h2c")
SERVERS = {"http1_keepalive": "uvicorn", "http1_new_connection": "uvicorn", "grpc": "grpc", "h2c": "hypercorn"}
PROBE_PAYLOAD = "record"  # the body every transport round trip carries
REFERENCE = Path(__file__).resolve().parent.parent / "data" / "profiles" / "rpc_loopback.json"
CACHE = DiskCache("rpc_loopback", code=[__file__])
_CTX = mp.get_context("spawn")

RECORD_FIELDS = (("user_id", "string"), ("item_id", "int64"), ("country", "string"), ("device", "string"),
                 ("hour", "int32"), ("price", "double"), ("clicks_7d", "int32"), ("returning", "bool"),
                 ("model_version", "string"))


# =========================================================================== payloads
def make_payload(kind: str, seed: int = 0):
    """The Python value of a payload: a list of float32-valued floats, or a dict (keyed record)."""
    rng = np.random.default_rng(seed)
    if kind.startswith("vector_"):
        return rng.standard_normal(int(kind.split("_")[1])).astype(np.float32).tolist()
    if kind in ("record", "record_positional"):
        rec = {"user_id": f"u-{int(rng.integers(1e6)):07d}", "item_id": int(rng.integers(1e9)),
               "country": "DE", "device": "mobile", "hour": int(rng.integers(24)),
               "price": round(float(rng.uniform(1, 100)), 2), "clicks_7d": int(rng.integers(50)),
               "returning": bool(rng.integers(2)), "model_version": "2024-06-01.3"}
        return rec
    raise ValueError(f"unknown payload {kind!r}; one of {', '.join(PAYLOADS)}")


@functools.lru_cache(maxsize=1)
def _messages() -> dict:
    """proto3 message classes built from a descriptor (no generated code): Vector, Record, Score."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    types = {"string": F.TYPE_STRING, "int64": F.TYPE_INT64, "int32": F.TYPE_INT32, "double": F.TYPE_DOUBLE,
             "bool": F.TYPE_BOOL, "float": F.TYPE_FLOAT}
    fdp = descriptor_pb2.FileDescriptorProto(name="archlab_rpc.proto", package="archlab", syntax="proto3")
    vec = fdp.message_type.add(name="Vector")
    vec.field.add(name="v", number=1, type=F.TYPE_FLOAT, label=F.LABEL_REPEATED)  # packed by default in proto3
    rec = fdp.message_type.add(name="Record")
    for i, (name, kind) in enumerate(RECORD_FIELDS, start=1):
        rec.field.add(name=name, number=i, type=types[kind], label=F.LABEL_OPTIONAL)
    out = fdp.message_type.add(name="Score")
    out.field.add(name="score", number=1, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"archlab.{n}"))
            for n in ("Vector", "Record", "Score")}


def _shape(kind: str, value):
    """What a text or msgpack encoder is given: the positional record is its values in field order."""
    if kind == "record_positional":
        return [value[n] for n, _ in RECORD_FIELDS]
    return value


def encode(encoder: str, kind: str, value) -> bytes:
    if encoder == "json":
        return json.dumps(_shape(kind, value), separators=(",", ":")).encode()
    if encoder == "orjson":
        import orjson

        return orjson.dumps(_shape(kind, value))
    if encoder == "msgpack":
        import msgpack

        return msgpack.packb(_shape(kind, value))
    if encoder == "protobuf":
        msgs = _messages()
        if kind.startswith("vector_"):
            m = msgs["Vector"]()
            m.v.extend(value)
            return m.SerializeToString()
        return msgs["Record"](**value).SerializeToString()
    raise ValueError(f"unknown encoder {encoder!r}")


def decode(encoder: str, kind: str, data: bytes):
    """Back to the same plain Python value ``make_payload`` gave (list of floats, or dict)."""
    if encoder == "protobuf":
        msgs = _messages()
        if kind.startswith("vector_"):
            m = msgs["Vector"]()
            m.ParseFromString(data)
            return list(m.v)
        m = msgs["Record"]()
        m.ParseFromString(data)
        return {n: getattr(m, n) for n, _ in RECORD_FIELDS}
    if encoder == "json":
        value = json.loads(data)
    elif encoder == "orjson":
        import orjson

        value = orjson.loads(data)
    elif encoder == "msgpack":
        import msgpack

        value = msgpack.unpackb(data)
    else:
        raise ValueError(f"unknown encoder {encoder!r}")
    if kind == "record_positional":
        return dict(zip((n for n, _ in RECORD_FIELDS), value))
    return value


def protobuf_vector_bytes(n: int) -> int:
    """Closed form for a packed ``repeated float`` field of n values (§21): tag + varint(length) + 4n."""
    body = 4 * n
    varint = 1
    while body >= 1 << (7 * varint):
        varint += 1
    return 1 + varint + body if n else 0


def handler(value) -> float:
    """The one piece of work every transport reaches: add the payload's numbers up."""
    if isinstance(value, dict):
        return float(value["price"]) * (1 + value["clicks_7d"]) + value["hour"]
    return float(sum(value))


def time_encodings(payloads=PAYLOADS, encoders=ENCODERS, rounds: int = 7, target_s: float = 0.004) -> dict:
    """Bytes and per-call encode/decode microseconds (median over interleaved rounds, with the rounds'
    order-statistic interval) for every payload x encoder."""
    from .metrics import order_statistic_interval

    out: dict = {}
    for kind in payloads:
        value = make_payload(kind)
        blobs = {e: encode(e, kind, value) for e in encoders}
        for e in encoders:  # every encoder must give the value back
            back = decode(e, kind, blobs[e])
            if kind.startswith("vector_"):
                assert np.allclose(back, value), (kind, e)
            else:
                assert back == value, (kind, e)
        reps = {}
        for e in encoders:  # calls per round so that a round takes about target_s
            t0 = time.perf_counter()
            encode(e, kind, value)
            reps[e] = max(3, int(target_s / max(time.perf_counter() - t0, 1e-7)))
        samples = {e: {"encode": [], "decode": []} for e in encoders}
        gc.collect()
        for _ in range(rounds):
            for e in encoders:
                n = reps[e]
                t0 = time.perf_counter()
                for _ in range(n):
                    encode(e, kind, value)
                t1 = time.perf_counter()
                for _ in range(n):
                    decode(e, kind, blobs[e])
                t2 = time.perf_counter()
                samples[e]["encode"].append((t1 - t0) / n * 1e6)
                samples[e]["decode"].append((t2 - t1) / n * 1e6)
        out[kind] = {}
        for e in encoders:
            row = {"bytes": len(blobs[e])}
            for op in ("encode", "decode"):
                x = np.asarray(samples[e][op])
                iv = order_statistic_interval(x, 50, min_n=5)
                row[f"{op}_us"] = float(np.median(x))
                row[f"{op}_us_interval"] = [iv.low, iv.high]
            out[kind][e] = row
    return out


# =========================================================================== servers (child processes)
def _watchdog(max_s: float, max_requests: int, counter: list) -> None:
    """Ends the server process after max_s seconds or max_requests requests, whichever comes first."""
    def run():
        end = time.monotonic() + max_s
        while time.monotonic() < end and counter[0] < max_requests:
            time.sleep(0.05)
        os._exit(0)

    threading.Thread(target=run, daemon=True, name="archlab-watchdog").start()


def _answer(encoder: str, kind: str, body: bytes) -> bytes:
    score = handler(decode(encoder, kind, body))
    if encoder == "protobuf":
        return _messages()["Score"](score=score).SerializeToString()
    return encode(encoder, "score", {"score": score})


def _http_app(counter: list):
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def score(request):
        counter[0] += 1
        body = await request.body()
        enc, kind = request.headers.get("x-encoding", "json"), request.headers.get("x-payload", PROBE_PAYLOAD)
        return Response(_answer(enc, kind, body), media_type="application/octet-stream")

    return Starlette(routes=[Route("/score", score, methods=["POST"])])


def _server_main(kind: str, max_s: float, max_requests: int, conn) -> None:
    """Child process: bind 127.0.0.1 on a free port, report it, serve until the watchdog or a SIGTERM."""
    counter = [0]
    try:
        _messages()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
        _watchdog(max_s, max_requests, counter)
        if kind == "grpc":
            sock.close()
            _serve_grpc(port, conn, counter)
        elif kind == "uvicorn":
            import asyncio

            import uvicorn

            sock.listen(512)
            server = uvicorn.Server(uvicorn.Config(_http_app(counter), log_level="warning", access_log=False,
                                                   lifespan="off", timeout_keep_alive=30, http="h11"))
            conn.send(("ready", port))
            asyncio.run(server.serve(sockets=[sock]))
        elif kind == "hypercorn":
            import asyncio

            from hypercorn.asyncio import serve
            from hypercorn.config import Config

            sock.listen(512)
            cfg = Config()
            cfg.bind = [f"fd://{sock.fileno()}"]
            cfg.loglevel = "WARNING"
            cfg.accesslog = None
            conn.send(("ready", port))
            asyncio.run(serve(_http_app(counter), cfg))
        else:
            raise ValueError(f"unknown server {kind!r}")
    except BaseException as e:  # report, then die
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(e).__name__}: {e}"))
        raise SystemExit(1)


def _serve_grpc(port: int, conn, counter: list) -> None:
    from concurrent import futures

    import grpc

    def score(body, context):
        counter[0] += 1
        return _answer("protobuf", PROBE_PAYLOAD, body)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "archlab.Scorer", {"Score": grpc.unary_unary_rpc_method_handler(score)}),))
    if server.add_insecure_port(f"{HOST}:{port}") != port:
        raise OSError(f"grpc could not bind {HOST}:{port}")
    server.start()
    conn.send(("ready", port))
    server.wait_for_termination()


@contextlib.contextmanager
def server(kind: str, max_s: float = 120.0, max_requests: int = 50_000, start_timeout_s: float = 60.0):
    """Start a server process (``uvicorn``, ``hypercorn`` or ``grpc``) on 127.0.0.1; yield (port, pid);
    always terminate and join it on exit."""
    parent, child = _CTX.Pipe(duplex=False)
    proc = _CTX.Process(target=_server_main, args=(kind, max_s, max_requests, child), daemon=True,
                        name=f"archlab-rpc-{kind}")
    proc.start()
    child.close()
    try:
        if not parent.poll(start_timeout_s):
            raise RuntimeError(f"the {kind} server did not start within {start_timeout_s:g} s")
        msg = parent.recv()
        if msg[0] != "ready":
            raise RuntimeError(f"the {kind} server did not start: {msg[1]}")
        _wait_listening(msg[1])
        yield msg[1], proc.pid
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()


def _wait_listening(port: int, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {HOST}:{port}")


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in nanoseconds (``/proc/<pid>/task/*/schedstat``)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


# =========================================================================== clients (this process)
def _clients(ports: dict):
    """One caller per transport: a function doing one request, built and warmed before any timing."""
    import grpc
    import httpx

    body = encode("json", PROBE_PAYLOAD, make_payload(PROBE_PAYLOAD))
    pb = encode("protobuf", PROBE_PAYLOAD, make_payload(PROBE_PAYLOAD))
    value = make_payload(PROBE_PAYLOAD)
    headers = {"x-encoding": "json", "x-payload": PROBE_PAYLOAD, "content-type": "application/json"}
    keep = httpx.Client(base_url=f"http://{HOST}:{ports['uvicorn']}", headers=headers)
    fresh = httpx.Client(base_url=f"http://{HOST}:{ports['uvicorn']}", headers=headers,
                         limits=httpx.Limits(max_keepalive_connections=0))
    h2 = httpx.Client(base_url=f"http://{HOST}:{ports['hypercorn']}", headers=headers, http1=False, http2=True)
    channel = grpc.insecure_channel(f"{HOST}:{ports['grpc']}")
    stub = channel.unary_unary("/archlab.Scorer/Score")
    score = _messages()["Score"]

    def via(client):
        def call():
            r = client.post("/score", content=body)
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}")
            return json.loads(r.content)["score"]
        return call

    def grpc_call():
        m = score()
        m.ParseFromString(stub(pb, timeout=10))
        return m.score

    def inproc():
        return handler(value)

    calls = {"inprocess": inproc, "http1_keepalive": via(keep), "http1_new_connection": via(fresh),
             "grpc": grpc_call, "h2c": via(h2)}
    if h2.post("/score", content=body).http_version != "HTTP/2":
        raise RuntimeError("the h2c client did not speak HTTP/2")

    def close():
        keep.close(), fresh.close(), h2.close(), channel.close()

    return calls, close


def time_transports(rounds: int = 12, per_round: int = 25, warmup: int = 30, max_s: float = 120.0) -> dict:
    """Per-request wall time of every transport (interleaved rounds) and its server's CPU per request."""
    with contextlib.ExitStack() as stack:
        ports, pids = {}, {}
        for kind in ("uvicorn", "hypercorn", "grpc"):
            ports[kind], pids[kind] = stack.enter_context(server(kind, max_s=max_s))
        calls, close = _clients(ports)
        stack.callback(close)
        expected = handler(make_payload(PROBE_PAYLOAD))
        for name, call in calls.items():
            for _ in range(warmup):
                got = call()
            if abs(got - expected) > 1e-6 * max(1, abs(expected)):
                raise RuntimeError(f"{name} answered {got}, expected {expected}")
        lat = {n: [] for n in calls}
        cpu = {n: [] for n in calls}
        gc.collect()
        clock = time.perf_counter
        for _ in range(rounds):
            for name, call in calls.items():
                pid = pids.get(SERVERS.get(name, ""))
                c0 = cpu_ns(pid) if pid else 0
                for _ in range(per_round):
                    t0 = clock()
                    call()
                    lat[name].append((clock() - t0) * 1e6)
                if pid:
                    cpu[name].append((cpu_ns(pid) - c0) / per_round / 1e3)
    out = {}
    for name in calls:
        x = np.asarray(lat[name])
        row = {"latency_us": [round(v, 1) for v in x.tolist()], "p50_us": float(np.median(x)),
               "mean_us": float(x.mean())}
        if cpu[name]:
            c = np.asarray(cpu[name])
            row.update(server_cpu_us=float(np.median(c)), server_cpu_us_rounds=[round(v, 1) for v in c.tolist()])
        else:  # the call runs in the caller's thread: its CPU is its wall time
            row.update(server_cpu_us=float(np.median(x)), server_cpu_us_rounds=[])
        out[name] = row
    return out


# =========================================================================== TCP and TLS 1.3 handshakes
def time_handshakes(n: int = 60) -> dict:
    """Loopback: TCP connect (wall), and a full TLS 1.3 handshake (wall, and each side's thread CPU)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    cert.configure_cert(server_ctx)
    server_ctx.num_tickets = 0  # every connection is a full handshake (no resumption)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ca.configure_trust(client_ctx)
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]
    listener.settimeout(10)
    server_cpu: list[float] = []
    versions: list[str] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except (socket.timeout, OSError):
                return
            with raw:
                if raw.recv(1, socket.MSG_PEEK) == b"":
                    continue  # a plain TCP probe that connected and closed
                t0 = time.thread_time()
                try:
                    tls = server_ctx.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError):
                    continue
                server_cpu.append((time.thread_time() - t0) * 1e6)
                versions.append(tls.version())
                tls.close()

    thread = threading.Thread(target=serve, daemon=True, name="archlab-tls")
    thread.start()
    tcp, tls_wall, client_cpu = [], [], []
    try:
        for i in range(n + 5):
            t0 = time.perf_counter()
            s = socket.create_connection((HOST, port))
            t1 = time.perf_counter()
            s.close()
            c0, t2 = time.thread_time(), time.perf_counter()
            raw = socket.create_connection((HOST, port))
            with client_ctx.wrap_socket(raw, server_hostname="localhost") as s:
                t3 = time.perf_counter()
                c1 = time.thread_time()
            if i >= 5:  # warm-up
                tcp.append((t1 - t0) * 1e6)
                tls_wall.append((t3 - t2) * 1e6)
                client_cpu.append((c1 - c0) * 1e6)
    finally:
        stop.set()
        listener.close()
        thread.join(5)
    if versions and set(versions) != {"TLSv1.3"}:
        raise RuntimeError(f"negotiated {set(versions)}, not TLS 1.3")
    med = lambda x: float(np.median(x)) if len(x) else float("nan")  # noqa: E731
    return {"tcp_connect_us": [round(v, 1) for v in tcp], "tcp_connect_p50_us": med(tcp),
            "tls13_handshake_us": [round(v, 1) for v in tls_wall], "tls13_handshake_p50_us": med(tls_wall),
            "tls13_server_cpu_us": med(server_cpu[5:]), "tls13_client_cpu_us": med(client_cpu),
            "certificate": "trustme ECDSA P-256 leaf, one intermediate-free chain; no session tickets"}


# =========================================================================== profiles
def versions() -> dict:
    out = {"python": platform.python_version(), "openssl": ssl.OPENSSL_VERSION}
    for dist in ("grpcio", "protobuf", "orjson", "msgpack", "uvicorn", "starlette", "hypercorn", "h2", "httpx",
                 "h11"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "none"
    return out


def measure(rounds: int = 12, per_round: int = 25, handshakes: int = 60, encoding_rounds: int = 7) -> dict:
    """Every probe once (no cache), with a provenance record."""
    load0 = os.getloadavg()[0]
    enc = time_encodings(rounds=encoding_rounds)
    trans = time_transports(rounds=rounds, per_round=per_round)
    hs = time_handshakes(handshakes)
    return {"format": 1, "encodings": enc, "transports": trans, "handshakes": hs, "probe_payload": PROBE_PAYLOAD,
            "provenance": {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
                           **versions(), "loadavg_1m_before": round(load0, 2),
                           "loadavg_1m_after": round(os.getloadavg()[0], 2),
                           "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                           "rounds": rounds, "per_round": per_round, "generated_by": "python bench/measure_rpc.py"}}


@functools.lru_cache(maxsize=1)
def reference_profile() -> dict:
    """The committed measurement (data/profiles/rpc_loopback.json): every machine reads the same numbers."""
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=2)
def live_profile(small: bool = True) -> dict:
    """This machine's own measurement, from the disk cache once it has been taken (keyed by CPU and versions)."""
    size = dict(rounds=6, per_round=20, handshakes=30, encoding_rounds=5) if small else {}
    key = {"cpu": cpu_model(), **versions(), "size": size}
    got = CACHE.get_json("rpc_loopback", key)
    if got is None:
        got = measure(**size)
        CACHE.put_json("rpc_loopback", key, got)
    return got


def load_profile(source: str = "reference") -> dict:
    if source == "reference":
        return reference_profile()
    if source == "live":
        return live_profile()
    raise ValueError(f"profile must be reference or live, not {source!r}")
