"""A real model server with Triton's dynamic batcher, and an open-loop load generator.

The simulator (:mod:`sim.batcher`) is only as good as its agreement with the thing
it models. This module runs the thing: the lab's real PyTorch MLP
(:func:`sim.models.get_model`) behind a Starlette + uvicorn HTTP server on
127.0.0.1, fed by a Poisson load generator in another process, so
``labs.calibration`` can compare measured latencies with the simulator's.

Server (one process, :func:`_server_main`)
    ``POST /predict`` with a JSON body ``{"x": [64 floats]}`` answers
    ``{"y": label, "t": [recv, enq, dispatch, start, end, resumed], "b": batch}``,
    the request's timestamps (``time.perf_counter``, CLOCK_MONOTONIC on Linux, so
    comparable across processes on one machine). The handler appends the request
    to a queue; one batcher task in the server's event loop forms batches by the
    same rule the simulator uses (:meth:`sim.batcher.DynamicBatchingConfig.batch_size`:
    Triton's largest preferred size, else up to ``max_batch_size``, holding a
    partial batch while its oldest request has waited less than
    ``max_queue_delay_microseconds``) and hands each batch to a single model
    worker thread (torch threads = 1), waiting for it before forming the next
    (one model instance). ``max_batch_size = 1`` is the no-batching mode: FIFO,
    one request per model call. Before it reports ready, the server times the
    same model object with :func:`sim.profiles.measure_profile` (the profile the
    simulator is given), so prediction and measurement share CPU, versions and load.

Load generator (one process, :func:`_generator_main`)
    Raw asyncio HTTP/1.1 over keep-alive connections (a pool opened on demand, at
    most ``max_connections``), one request in flight per connection, sent at the
    given arrival times (open loop: a slow answer never delays the next send).
    Latency is measured from the actual write of the request to the end of the
    response body; the actual send times are returned too, so a simulator can be
    fed the very arrivals the server saw. Bounded by the request count and a wall
    time, after which outstanding requests are abandoned (counted, latency NaN).

:func:`serve` starts the server and stops it on exit (normal, exception or
Ctrl-C): terminate, then kill, and join. A server that fails to start raises
:class:`ServerStartError` with a one-line reason. Only 127.0.0.1 is ever used.
"""
from __future__ import annotations

import asyncio
import json
import math
import multiprocessing as mp
import os
import socket
import time
import traceback
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import numpy as np

from .batcher import DynamicBatchingConfig

HOST = "127.0.0.1"
_CTX = mp.get_context("spawn")  # no torch/thread state inherited; same start on every platform


class ServerStartError(RuntimeError):
    """The server did not come up (port taken, model failed, timeout); message is one line."""


@dataclass(frozen=True)
class ServerSpec:
    """What to serve: the lab's mlp at ``width``, trained with ``seed``, under ``config``."""

    width: int = 2048
    seed: int = 0
    config: DynamicBatchingConfig = field(default_factory=DynamicBatchingConfig)
    port: int = 0  # 0: a free port chosen by the OS
    profile_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    profile_repeats: int = 60
    tcp_nodelay: bool = True  # False reproduces the Nagle + delayed-ACK stall (see _server_main)


# =========================================================================== server process
def _server_main(spec: ServerSpec, conn) -> None:
    """Child process: load the model, time it, bind 127.0.0.1, serve until terminated."""
    try:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        # Bind first (a taken port fails fast). proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY only on
        # sockets that say so, and without it Nagle holds the response body behind the headers until the
        # client's delayed ACK (~40 ms per response: the first calibration run measured exactly that).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP if spec.tcp_nodelay else 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, spec.port))
        except OSError as e:
            raise ServerStartError(f"cannot listen on {HOST}:{spec.port}: {e.strerror or e}") from None
        sock.listen(1024)
        import torch

        torch.set_num_threads(1)
        from sim.models import get_model
        from sim.profiles import measure_profile

        model = get_model("mlp", spec.seed, spec.width)
        profile = measure_profile(model, batch_sizes=spec.profile_batch_sizes, repeats=spec.profile_repeats,
                                  warmup=10, threads=1)
        X = np.asarray(model.X_test, dtype=np.float32)
        conn.send(("ready", sock.getsockname()[1], profile.to_dict(), X.tolist()))
        _serve_forever(model, spec, sock)
    except BaseException as e:  # report, then die: the parent turns it into one line
        msg = str(e) if isinstance(e, ServerStartError) else f"{type(e).__name__}: {e}"
        try:
            conn.send(("error", " ".join(msg.split()), traceback.format_exc()))
        except Exception:
            pass
        raise SystemExit(1)


def _serve_forever(model, spec: ServerSpec, sock) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from collections import deque

    import torch
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    cfg = spec.config
    clock = time.perf_counter
    pending: deque = deque()  # (x row, future, recv, enq)
    state = {"event": None}
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    torch_predict = model.predict

    def run_batch(rows):
        torch.set_num_threads(1)
        x = np.asarray(rows, dtype=np.float32)
        t0 = clock()
        y = torch_predict(x)
        return t0, clock(), y.tolist()

    async def batcher():
        loop = asyncio.get_running_loop()
        event = state["event"]
        delay = cfg.max_queue_delay_s
        while True:
            while not pending:
                event.clear()
                await event.wait()
            while True:  # the model instance is free: decide (rules of sim.batcher)
                now = clock()
                head = pending[0][3]
                size = cfg.batch_size(len(pending), now - head >= delay)
                if size:
                    break
                event.clear()
                try:
                    await asyncio.wait_for(event.wait(), max(head + delay - now, 0.0))
                except asyncio.TimeoutError:
                    pass
            batch = [pending.popleft() for _ in range(size)]
            dispatch = clock()
            start, end, ys = await loop.run_in_executor(worker, run_batch, [b[0] for b in batch])
            resumed = clock()
            for (x, fut, recv, enq), y in zip(batch, ys):
                if not fut.done():
                    fut.set_result((y, [recv, enq, dispatch, start, end, resumed], size))

    async def predict(request):
        recv = clock()
        body = await request.body()
        x = json.loads(body)["x"]
        fut = asyncio.get_running_loop().create_future()
        pending.append((x, fut, recv, clock()))
        state["event"].set()
        y, t, b = await fut
        return Response(json.dumps({"y": y, "t": t, "b": b}), media_type="application/json")

    async def health(request):
        return Response("ok")

    @asynccontextmanager
    async def lifespan(app):
        state["event"] = asyncio.Event()
        task = asyncio.create_task(batcher())
        yield
        task.cancel()

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health)],
                    lifespan=lifespan)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_keep_alive=30, backlog=1024)
    server = uvicorn.Server(config)
    asyncio.run(server.serve(sockets=[sock]))


@dataclass
class RunningServer:
    port: int
    profile: dict  # sim.profiles.Profile.to_dict() measured in the server process
    X: np.ndarray  # the model's test inputs (rows to send)
    process: object
    started_s: float


@contextmanager
def serve(spec: ServerSpec, start_timeout_s: float = 300.0):
    """Start the server process, yield a :class:`RunningServer`, always stop it."""
    parent, child = _CTX.Pipe(duplex=False)
    proc = _CTX.Process(target=_server_main, args=(spec, child), daemon=True, name="archlab-serve")
    t0 = time.perf_counter()
    proc.start()
    child.close()
    try:
        msg = None
        deadline = t0 + start_timeout_s
        while time.perf_counter() < deadline:
            if parent.poll(0.2):
                try:
                    msg = parent.recv()
                except EOFError:
                    msg = None
                break
            if not proc.is_alive():
                break
        if msg is None:
            why = (f"exited with status {proc.exitcode}" if not proc.is_alive()
                   else f"not ready after {start_timeout_s:g} s")
            raise ServerStartError(f"the model server did not start: {why}")
        if msg[0] != "ready":
            raise ServerStartError(f"the model server did not start: {msg[1]}")
        _, port, profile, X = msg
        yield RunningServer(port, profile, np.asarray(X, dtype=np.float32), proc, time.perf_counter() - t0)
    finally:
        stop(proc)
        parent.close()


def stop(proc, grace_s: float = 5.0) -> None:
    """Terminate ``proc`` (SIGTERM), then kill it if it lingers; always join."""
    if proc is None:
        return
    if proc.is_alive():
        proc.terminate()
        proc.join(grace_s)
    if proc.is_alive():
        proc.kill()
    proc.join(grace_s)


# =========================================================================== load generator
@dataclass
class LoadResult:
    """Per request (arrival order): scheduled/sent/done times (perf_counter seconds), the
    server's timestamps ``server_t`` (n x 6: recv, enq, dispatch, start, end, resumed),
    its batch size, and ``ok``. Abandoned requests have NaN times and ok False."""

    scheduled: np.ndarray
    sent: np.ndarray
    done: np.ndarray
    server_t: np.ndarray
    batch: np.ndarray
    ok: np.ndarray
    connections: int
    wall_s: float

    @property
    def latency(self) -> np.ndarray:
        return self.done - self.sent

    @property
    def completed(self) -> int:
        return int(self.ok.sum())


def _generator_main(port: int, arrivals, bodies, wall_s: float, max_connections: int, conn) -> None:
    try:
        conn.send(("ok", asyncio.run(_generate(port, np.asarray(arrivals), bodies, wall_s, max_connections))))
    except BaseException as e:
        try:
            conn.send(("error", f"{type(e).__name__}: {e}"))
        except Exception:
            pass
        raise SystemExit(1)


async def _generate(port, arrivals, bodies, wall_s, max_connections):
    n = len(arrivals)
    clock = time.perf_counter
    scheduled = np.full(n, np.nan)
    sent = np.full(n, np.nan)
    done = np.full(n, np.nan)
    raw: list = [None] * n
    idle: list = []
    opened = [0]
    sem = asyncio.Semaphore(max_connections)
    requests = [(f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]

    async def one(i):
        async with sem:
            if idle:
                r, w = idle.pop()
            else:
                r, w = await asyncio.open_connection(HOST, port)
                opened[0] += 1
            sent[i] = clock()
            w.write(requests[i % len(requests)])
            head = await r.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await r.readexactly(length)
            done[i] = clock()
            raw[i] = body
            if b" 200 " in head.split(b"\r\n", 1)[0]:
                idle.append((r, w))
            else:
                raw[i] = None
                w.close()

    t0 = clock() + 0.05
    end_by = t0 + wall_s
    tasks = []
    for i in range(n):
        target = t0 + float(arrivals[i])
        if target > end_by:
            break
        d = target - clock()
        if d > 0:
            await asyncio.sleep(d)
        scheduled[i] = target
        tasks.append(asyncio.ensure_future(one(i)))
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=max(end_by - clock(), 0.5))
        for t in late:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for r, w in idle:
        w.close()
    server_t = np.full((n, 6), np.nan)
    batch = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    for i, body in enumerate(raw):
        if body is not None:
            d = json.loads(body)
            server_t[i] = d["t"]
            batch[i] = d["b"]
            ok[i] = True
    done[~ok] = np.nan
    return LoadResult(scheduled, sent, done, server_t, batch, ok, opened[0], clock() - t0)


def run_load(port: int, arrivals, bodies: list[bytes], wall_s: float = 60.0,
             max_connections: int = 256) -> LoadResult:
    """Send ``len(arrivals)`` requests to 127.0.0.1:``port`` at ``arrivals`` (seconds from start)
    from a separate process; bounded by ``wall_s`` (plus a few seconds to start and report)."""
    if not 0 < port < 65536:
        raise ValueError("port must be in 1..65535")
    parent, child = _CTX.Pipe(duplex=False)
    proc = _CTX.Process(target=_generator_main, daemon=True, name="archlab-load",
                        args=(port, np.asarray(arrivals, dtype=float), list(bodies), float(wall_s),
                              int(max_connections), child))
    proc.start()
    child.close()
    try:
        if not parent.poll(wall_s + 30.0):
            raise RuntimeError(f"the load generator did not report within {wall_s + 30:g} s")
        status, payload = parent.recv()
        if status != "ok":
            raise RuntimeError(f"the load generator failed: {payload}")
        return payload
    finally:
        stop(proc)
        parent.close()


def request_bodies(X: np.ndarray) -> list[bytes]:
    """One JSON body per input row: ``{"x": [...]}``."""
    return [json.dumps({"x": [float(v) for v in row]}).encode() for row in np.asarray(X, dtype=np.float32)]


def poisson_arrivals(rate: float, n: int, seed: int) -> np.ndarray:
    """``n`` Poisson arrival times (seconds) at ``rate`` per second."""
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError("rate must be positive")
    return np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, int(n)))
