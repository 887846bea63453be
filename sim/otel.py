"""What one span costs in the OpenTelemetry Python SDK on this machine: measured, not assumed.

``measure_span_costs`` times the in-request cost of spans made the way instrumented
code makes them (``tracer.start_as_current_span`` with two attributes: create, attach
the context, set attributes, end, detach), inside a sampled or unsampled root span,
under a ``TracerProvider`` with ``ParentBased(TraceIdRatioBased(rate))`` (the SDK's
``parentbased_traceidratio``) and three set-ups:

* ``batch``: recorded spans, ``BatchSpanProcessor`` (on end the span is queued; a
  background thread exports batches of up to 512: the SDK's default processor);
* ``simple``: recorded spans, ``SimpleSpanProcessor`` (on end the exporter is called
  synchronously, in the request's thread);
* ``unsampled``: rate 0, so the root is dropped and every child follows it
  (``ParentBased``): non-recording spans, context still propagated.

The exporter is a ``SpanExporter`` that discards what it is given, so the figures are
the SDK's own work; a real remote exporter adds its round trip to every span in
``simple`` mode and nothing in the request path in ``batch`` mode. The three set-ups are
timed in ``rounds`` interleaved rounds of ``spans`` spans (round k of each runs back to back, so
a noisy moment on a shared machine hits them alike; about 1 s in all); the result is the median
per span with a distribution-free 95% interval from the rounds' order statistics. Results are
kept in the disk cache (``sim.cache``) keyed by the SDK and Python versions and this file's
bytes, so only the first run on a machine pays; a file lock makes concurrent first runs agree.
OpenTelemetry is imported only when a measurement runs.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from .cache import DiskCache
from .metrics import order_statistic_interval

MODES = ("batch", "simple", "unsampled")
CACHE = DiskCache("otel", code=[__file__])


def sdk_version() -> str:
    try:
        return metadata.version("opentelemetry-sdk")
    except metadata.PackageNotFoundError:
        return "none"


def _provider(mode: str):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (BatchSpanProcessor, SimpleSpanProcessor, SpanExporter,
                                                SpanExportResult)
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    class DiscardingExporter(SpanExporter):
        """Accepts every batch and keeps nothing: the SDK's cost without any transport."""

        def export(self, spans):
            return SpanExportResult.SUCCESS

        def shutdown(self):
            return None

    rate = 0.0 if mode == "unsampled" else 1.0
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(rate)))
    exporter = DiscardingExporter()
    processor = SimpleSpanProcessor(exporter) if mode == "simple" else BatchSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return provider


def _time_round(tracer, spans: int) -> tuple[float, bool]:
    """Seconds per child span (``spans`` made one after another under one root), and whether sampled."""
    with tracer.start_as_current_span("request") as root:
        t0 = time.perf_counter()
        for i in range(spans):
            with tracer.start_as_current_span("call", attributes={"rpc.service": "svc", "i": i}) as span:
                pass
        elapsed = time.perf_counter() - t0
        if span.get_span_context().trace_flags.sampled != root.get_span_context().trace_flags.sampled:
            raise RuntimeError("a child span did not follow its parent's sampling decision")
    return elapsed / spans, root.get_span_context().trace_flags.sampled


def time_modes(rounds: int = 9, spans: int = 400) -> dict[str, list[float]]:
    """Per-span seconds of ``rounds`` rounds per set-up, interleaved (round k of every set-up runs
    back to back, so a noisy moment on a shared machine hits them alike), after a warm-up round."""
    providers = {m: _provider(m) for m in MODES}
    try:
        tracers = {m: pr.get_tracer("archlab.sim.otel") for m, pr in providers.items()}
        for m, tracer in tracers.items():
            _, sampled = _time_round(tracer, spans)  # warm-up: caches, the batch worker thread
            if sampled != (m != "unsampled"):
                raise RuntimeError(f"{m}: the sampler decided sampled={sampled}")
        gc.collect()
        out: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(rounds):
            for m, tracer in tracers.items():
                out[m].append(_time_round(tracer, spans)[0])
        return out
    finally:
        for pr in providers.values():
            pr.shutdown()


def summarise(per_span_s: list[float]) -> dict:
    """Median per span (us) with a distribution-free 95% interval over the rounds."""
    us = np.asarray(per_span_s) * 1e6
    iv = order_statistic_interval(us, 50, min_n=6)
    return {"median_us": float(np.median(us)), "low_us": iv.low, "high_us": iv.high, "rounds": int(us.size)}


def measure(rounds: int = 9, spans: int = 400) -> dict:
    """Fresh measurement of every set-up (no cache): {mode: {median_us, low_us, high_us, rounds}, ...}."""
    out: dict = {m: summarise(v) for m, v in time_modes(rounds, spans).items()}
    out["sdk_version"] = sdk_version()
    return out


@functools.lru_cache(maxsize=4)
def measure_span_costs(rounds: int = 9, spans: int = 400) -> dict:
    """The measured costs, from the disk cache when this machine has measured them already.

    In one process the answer never changes (``lru_cache``), so repeated runs agree.
    """
    key = {"sdk": sdk_version(), "python": platform.python_version(), "rounds": rounds, "spans": spans}
    got = CACHE.get_json("span_costs", key)
    if got is None or not all(m in got for m in MODES):
        with _lock():  # two processes starting on an empty cache measure once, and agree
            got = CACHE.get_json("span_costs", key)
            if got is None or not all(m in got for m in MODES):
                got = measure(rounds, spans)
                CACHE.put_json("span_costs", key, got)
    return got


@contextlib.contextmanager
def _lock():
    try:
        import fcntl

        CACHE.folder.mkdir(parents=True, exist_ok=True)
        handle = open(CACHE.folder / "span_costs.lock", "w")
    except (ImportError, OSError):  # no locking here (or no writable cache): just measure
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


REFERENCE = Path(__file__).resolve().parent.parent / "data" / "profiles" / "otel_spans.json"


@functools.lru_cache(maxsize=1)
def reference_span_costs() -> dict:
    """The committed measurement (``data/profiles/otel_spans.json``, with its provenance): every machine
    reads the same numbers; ``measure_span_costs`` gives this machine's own."""
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def _provenance() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "machine": platform.machine(), "python": platform.python_version(),
            "sdk_version": sdk_version(), "loadavg_1m": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "generated_by": "python -m sim.otel --write"}


if __name__ == "__main__":  # python -m sim.otel [--write]: measure again (no cache); --write stores the reference
    import sys

    got = {**measure(rounds=15), "provenance": _provenance()}
    if "--write" in sys.argv:
        REFERENCE.write_text(json.dumps(got, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(got, indent=1))
