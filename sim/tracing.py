"""Distributed-tracing primitives: head sampling by trace id, and the critical path of a trace.

Two references, each followed where its semantics matter:

* **Sampler: OpenTelemetry ``TraceIdRatioBased``** (opentelemetry-python,
  ``opentelemetry-sdk/src/opentelemetry/sdk/trace/sampling.py``). The decision
  reads only the 64 low-order bits of the 128-bit trace id: with
  ``TRACE_ID_LIMIT = 2**64 - 1`` and ``bound = round(rate * 2**64)``, a trace is
  RECORD_AND_SAMPLE when ``trace_id & TRACE_ID_LIMIT < bound`` and DROP
  otherwise. Because the decision is a threshold on the id, a trace sampled at a
  low rate is also sampled at every higher rate (sampled sets are nested), and
  every service that sees the same id decides the same way. In practice it is
  wrapped in ``ParentBased(root=TraceIdRatioBased(rate))`` (the SDK's
  ``parentbased_traceidratio``): only the root decides; child spans follow the
  parent's sampled flag, so a request is traced entirely or not at all. That is
  what ``TraceIdRatioBased.sample`` models when it is applied once per request.
  A dropped span is still created as a non-recording span and the context is
  still propagated, so it costs a little but records nothing.

* **Critical path: Jaeger UI** (jaegertracing/jaeger-ui,
  ``packages/jaeger-ui/src/components/TracePage/CriticalPath/index.ts`` with
  ``utils/findLastFinishingChildSpan.ts`` and
  ``utils/sanitizeOverFlowingChildren.ts``). Children are first clipped to
  their parent's interval (a child entirely outside it is dropped with its
  subtree). Starting at the root, the span's last-finishing child (LFC) is
  found; the part of the span after the LFC's end is on the critical path and
  the walk descends into the LFC. When a span has no (remaining) child, the
  part from its start is on the path and the walk returns to the parent with
  the child's start time; the parent then looks for the child that finished
  strictly *before* that time (``childEnd < returningChildStartTime``) and so
  on. A span's *exclusive time on the critical path* is the sum of its
  sections: this is what a trace view shows as "self time on the critical
  path", and what the Q14 lab compares against a baseline window.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.stats import gamma  # at import, not inside a lab's timed run

TRACE_ID_LIMIT = (1 << 64) - 1


@dataclass(frozen=True)
class TraceIdRatioBased:
    """OpenTelemetry's ratio sampler: sample when the id's low 64 bits are below ``round(rate * 2**64)``."""

    rate: float

    def __post_init__(self):
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("Probability must be in range [0.0, 1.0].")

    @property
    def bound(self) -> int:
        return round(self.rate * (TRACE_ID_LIMIT + 1))

    @property
    def description(self) -> str:
        return f"TraceIdRatioBased{{{self.rate}}}"

    def should_sample(self, trace_id: int) -> bool:
        """The decision for one trace id (a Python int, up to 128 bits)."""
        return (int(trace_id) & TRACE_ID_LIMIT) < self.bound

    def sample(self, low_bits: np.ndarray) -> np.ndarray:
        """Vectorised decisions for the low 64 bits of many trace ids (``uint64`` array)."""
        ids = np.asarray(low_bits, dtype=np.uint64)
        bound = self.bound
        if bound > TRACE_ID_LIMIT:  # rate 1.0: every id is below 2**64
            return np.ones(ids.shape, dtype=bool)
        return ids < np.uint64(bound)


def random_trace_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Low 64 bits of ``n`` random trace ids (W3C trace-context ids are random), as ``uint64``."""
    return rng.integers(0, TRACE_ID_LIMIT, size=n, dtype=np.uint64, endpoint=True)


@dataclass(frozen=True)
class Span:
    """A finished span: id, parent id (None for the root), start and end time."""

    span_id: str
    parent_id: str | None
    start: float
    end: float


@dataclass(frozen=True)
class Section:
    """A stretch of the critical path spent in one span's own work."""

    span_id: str
    start: float
    end: float


def _sanitize(spans: Sequence[Span]) -> tuple[dict[str, Span], dict[str, list[str]], str]:
    """Jaeger's sanitizeOverFlowingChildren: clip children to the parent, drop those outside it."""
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if s.parent_id is None or s.parent_id not in by_id]
    if len(roots) != 1:
        raise ValueError(f"a trace needs exactly one root span, found {len(roots)}")
    root = roots[0]
    children: dict[str, list[str]] = {s.span_id: [] for s in spans}
    for s in spans:
        if s is not root:
            children[s.parent_id].append(s.span_id)
    kept: dict[str, Span] = {root.span_id: root}
    stack = [root.span_id]
    while stack:  # parents are clipped before their children
        pid = stack.pop()
        parent = kept[pid]
        survivors = []
        for cid in children[pid]:
            c = by_id[cid]
            if c.start >= parent.end or c.end <= parent.start:
                continue  # outside the parent: dropped, and its subtree with it
            kept[cid] = Span(cid, pid, max(c.start, parent.start), min(c.end, parent.end))
            survivors.append(cid)
            stack.append(cid)
        children[pid] = survivors
    return kept, {k: v for k, v in children.items() if k in kept}, root.span_id


def critical_path(spans: Sequence[Span]) -> list[Section]:
    """Critical-path sections of one trace, latest first, by Jaeger UI's last-finishing-child walk."""
    kept, children, root = _sanitize(spans)
    sections: list[Section] = []
    span_id: str | None = root
    returning: float | None = None
    while span_id is not None:
        span = kept[span_id]
        upto = span.end if returning is None else returning
        lfc = None
        for cid in children[span_id]:
            c = kept[cid]
            if (returning is None or c.end < returning) and (lfc is None or c.end > kept[lfc].end):
                lfc = cid
        if lfc is not None:
            if kept[lfc].end != upto:
                sections.append(Section(span_id, kept[lfc].end, upto))
            span_id, returning = lfc, None
        else:
            if span.start != upto:
                sections.append(Section(span_id, span.start, upto))
            span_id, returning = span.parent_id if span_id != root else None, span.start
    return sections


def critical_path_self_time(spans: Sequence[Span]) -> dict[str, float]:
    """Each span's exclusive time on the critical path (0 for spans off the path)."""
    out = {s.span_id: 0.0 for s in spans}
    for sec in critical_path(spans):
        out[sec.span_id] += sec.end - sec.start
    return out


def by_service(self_time: Mapping[str, float], service_of: Mapping[str, str],
               services: Iterable[str]) -> dict[str, float]:
    """Sum span-level critical-path time per service."""
    out = {s: 0.0 for s in services}
    for span_id, t in self_time.items():
        out[service_of[span_id]] += t
    return out


# ---------------------------------------------------------------- naming a culprit from sampled traces
class ShiftDetector:
    """Running z-scores of the first k post-change observations against a baseline, per column.

    ``post`` (K, S) and ``base`` (B, S) hold one row per sampled trace, one column per service.
    ``kind="mean"`` (a continuous signal such as critical-path self time): with the mean m and
    sample variance v of the first nb baseline rows (v floored at (rel_floor m)^2 and 1e-10, so a
    constant baseline does not make every wobble infinite), z = (mean_k - m) / sqrt(v (1/k + 1/nb)),
    Welch's statistic with the baseline variance for both sides. ``kind="count"`` (0/1 events such
    as "the error originates here"): with the Laplace rate q = (count + 1) / (nb + 2), z = (O_k - k q)
    / sqrt(k q (1 - q) + 1), the +1 keeping one stray event from reaching a high threshold.
    """

    def __init__(self, post: np.ndarray, base: np.ndarray, kind: str = "mean", rel_floor: float = 0.05):
        if kind not in ("mean", "count"):
            raise ValueError(f"kind must be 'mean' or 'count', got {kind!r}")
        post, base = np.asarray(post, dtype=float), np.asarray(base, dtype=float)
        self.kind, self.rel_floor = kind, rel_floor
        self.k = np.arange(1, post.shape[0] + 1)[:, None]
        self.post_cum = np.cumsum(post, axis=0)
        self.base_cum, self.base_cum2 = np.cumsum(base, axis=0), np.cumsum(base * base, axis=0)
        self._z: dict[int, np.ndarray] = {}

    @property
    def baseline_size(self) -> int:
        return self.base_cum.shape[0]

    def z(self, nb: int) -> np.ndarray:
        """z-scores (K, S): row k-1 compares the first k post rows with the first ``nb`` (>= 2) baseline rows."""
        if not 2 <= nb <= self.baseline_size:
            raise ValueError(f"need 2 to {self.baseline_size} baseline rows, got {nb}")
        if nb not in self._z:
            k, total = self.k, self.base_cum[nb - 1]
            if self.kind == "mean":
                mean = total / nb
                var = (self.base_cum2[nb - 1] - nb * mean**2) / (nb - 1)
                var = np.maximum(var, np.maximum((self.rel_floor * mean) ** 2, 1e-10))
                self._z[nb] = (self.post_cum / k - mean) / np.sqrt(var * (1.0 / k + 1.0 / nb))
            else:
                q = (total + 1.0) / (nb + 2.0)
                self._z[nb] = (self.post_cum - k * q) / np.sqrt(k * q * (1 - q) + 1.0)
        return self._z[nb]

    def alarms(self, nb: int, threshold: float, min_k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per k: whether the largest z reaches ``threshold`` with k >= ``min_k``, and which column it is."""
        z = self.z(nb)
        return (z.max(axis=1) >= threshold) & (self.k[:, 0] >= min_k), z.argmax(axis=1)

    def first_alarm(self, nb: int, threshold: float, min_k: int, times=None, start: float = -np.inf,
                    end: float = np.inf) -> tuple[int, int] | None:
        """(k, column) of the first alarm, or None. With ``times`` (arrival of each post row), only rows
        in by ``end`` count, and a reader opening the analysis at ``start`` first sees the state after
        the last row in by then (an earlier alarm that has faded since is not seen)."""
        ok, arg = self.alarms(nb, threshold, min_k)
        lo, hi = 0, ok.size
        if times is not None:
            lo = max(int(np.searchsorted(times, start, side="right")), 1) - 1
            hi = int(np.searchsorted(times, end, side="right"))
        hit = np.flatnonzero(ok[lo:hi])
        return None if hit.size == 0 else (lo + int(hit[0]) + 1, int(arg[lo + hit[0]]))


def rate_for_events(k: float, window_s: float, fraction: float = 1.0, prob: float = 0.95) -> float:
    """Poisson arrival rate at which a ``fraction``-thinned stream brings ``k`` events within
    ``window_s`` with probability ``prob``: the k-th arrival of a unit-rate stream is Gamma(k, 1),
    so rate = Gamma(k).ppf(prob) / (fraction x window_s). NaN when k is not a positive number."""
    if not (k > 0 and window_s > 0 and fraction > 0):
        return float("nan")
    return float(gamma.ppf(prob, k) / (fraction * window_s))


def lowest_sufficient(values, ok) -> float:
    """The smallest of ``values`` from which every larger value is ``ok`` (NaN if the largest is not)."""
    order = np.argsort(values)
    v, good = np.asarray(values, dtype=float)[order], np.asarray(ok, dtype=bool)[order]
    if v.size == 0 or not good[-1]:
        return float("nan")
    bad = np.flatnonzero(~good)
    return float(v[bad[-1] + 1] if bad.size else v[0])
