"""sim.otel: the OpenTelemetry SDK's per-span cost, measured on this machine and disk-cached."""
from __future__ import annotations

import math

import pytest

from sim import otel


def test_measurement_gives_positive_finite_costs_and_recording_costs_more():
    costs = otel.measure(rounds=7, spans=300)
    for mode in otel.MODES:
        c = costs[mode]
        assert c["rounds"] == 7
        assert all(math.isfinite(c[k]) and c[k] > 0 for k in ("median_us", "low_us", "high_us")), c
        assert c["low_us"] <= c["median_us"] <= c["high_us"]
    # a recorded span builds attributes, events and a ReadableSpan and goes through the processor;
    # a non-recording one only carries the context
    assert costs["batch"]["median_us"] > costs["unsampled"]["median_us"]
    assert costs["simple"]["median_us"] > costs["unsampled"]["median_us"]
    assert costs["sdk_version"] == otel.sdk_version() != "none"


def test_sampler_decisions_follow_the_mode():
    # ParentBased(TraceIdRatioBased(0)) drops the root and every child; rate 1 records them all
    for mode, sampled in (("batch", True), ("simple", True), ("unsampled", False)):
        provider = otel._provider(mode)
        try:
            per_span, got = otel._time_round(provider.get_tracer("t"), 10)
        finally:
            provider.shutdown()
        assert got is sampled and per_span > 0


def test_cached_result_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHLAB_CACHE", str(tmp_path))
    calls = []
    real = otel.measure
    monkeypatch.setattr(otel, "measure", lambda *a: calls.append(a) or real(*a))
    first = otel.measure_span_costs.__wrapped__(7, 50)
    second = otel.measure_span_costs.__wrapped__(7, 50)
    assert len(calls) == 1 and first == second  # the second read the disk cache

