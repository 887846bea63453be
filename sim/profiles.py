"""Latency profiles of real models: measured wall time per ``predict()`` call.

A :class:`Profile` holds, for each batch size, the raw measured seconds of one
``model.predict(X[:batch])`` call, plus the accuracy of the model and a
provenance record (CPU, library versions, torch threads, date) so a reader can
tell where the numbers came from. ``Profile.service_time(b)`` turns the samples
into a :class:`sim.dist.Empirical` that a simulated server draws from.

Two ways to get a profile:

* ``load_reference_profile(name)`` reads ``data/profiles/<name>.json``, the
  committed reference measurements (regenerate them with
  ``python3 bench/measure_profiles.py``). Tests, labs and notebooks use these
  so their results do not depend on the machine they run on.
* ``measure_profile(model)`` times a model live on this machine (the
  explorer's "measure on this machine" button goes through
  ``sim.models.measure_on_this_machine``).

This module imports torch only inside ``measure_profile``/``provenance`` so that
reading reference profiles stays cheap.
"""
from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import platform
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from sim.cache import cpu_model  # noqa: F401  (re-exported: labs read it from here)
from sim.dist import Empirical

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
#: Where the committed reference profiles live (the repository's data/profiles).
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "data" / "profiles"
#: Reference files keep at most this many samples per batch size.
MAX_SAMPLES_PER_BATCH = 200
#: Samples are stored in the JSON files in microseconds with this many decimals
#: (1 -> 0.1 us resolution, far below the timer noise of a Python call).
JSON_DECIMALS_US = 1
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- provenance
def library_versions() -> dict[str, str]:
    import sklearn
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
    }


def provenance(**extra: Any) -> dict[str, Any]:
    """Where and how a measurement was taken (no hostname, on purpose)."""
    import torch

    rec: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        **library_versions(),
        "torch_threads": torch.get_num_threads(),
        "torch_quantized_engine": torch.backends.quantized.engine,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    rec.update(extra)
    return rec


def _loadavg() -> float | None:
    """1-minute load average (runnable processes), where the OS reports it."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


@contextmanager
def torch_threads(n: int = 1):
    """Run a block with ``torch.set_num_threads(n)``, restoring the old count.

    ArchLab trains and times models single-threaded. For training, a fixed
    thread count of 1 makes the floating-point reduction order (and so the
    trained weights) bit-for-bit reproducible; with several threads, BLAS/OpenMP
    may split sums differently from run to run. For timing, one thread gives a
    stable per-call cost that does not depend on how many cores the measuring
    machine happens to have or what else is running on them, and it matches the
    simulator's model of a server worker as one core serving one call at a time.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------- Profile
def _summary(arr: np.ndarray) -> dict[str, float]:
    return {
        "n": int(arr.size),
        "mean": float(arr.mean()),
        "p50": float(np.quantile(arr, 0.50)),
        "p95": float(np.quantile(arr, 0.95)),
        "p99": float(np.quantile(arr, 0.99)),
    }


@dataclass(eq=False)
class Profile:
    """Measured seconds per ``predict`` call, for each batch size.

    ``samples[b]`` is a 1-D array of wall times (seconds) of calls with batch
    size ``b``. ``summary()`` gives p50/p95/p99/mean per batch size.
    """

    model: str
    batch_sizes: tuple[int, ...]
    samples: dict[int, np.ndarray]
    accuracy: float
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.batch_sizes = tuple(sorted(int(b) for b in self.batch_sizes))
        self.samples = {int(b): np.asarray(v, dtype=float).ravel() for b, v in self.samples.items()}
        if set(self.samples) != set(self.batch_sizes):
            raise ValueError("samples must have exactly one entry per batch size")
        for b, arr in self.samples.items():
            if b < 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
                raise ValueError(f"batch {b}: need >= 1 finite, positive sample")

    # ---- statistics
    def summary(self) -> dict[int, dict[str, float]]:
        """Per batch size: n, mean, p50, p95, p99 (seconds)."""
        return {b: _summary(self.samples[b]) for b in self.batch_sizes}

    def quantile(self, batch_size: int, q: float) -> float:
        return float(np.quantile(self._samples_for(batch_size), q))

    def median(self, batch_size: int) -> float:
        """Median seconds per call; interpolated between measured batch sizes
        exactly as ``service_time`` does (see there)."""
        b = int(batch_size)
        if b in self.samples:
            return float(np.median(self.samples[b]))
        return self._interpolated_median(b)

    def _interpolated_median(self, b: int) -> float:
        bs = self.batch_sizes
        if b < bs[0]:
            raise ValueError(f"batch size {b} is below the smallest measured ({bs[0]})")
        med = {x: float(np.median(self.samples[x])) for x in bs}
        if b > bs[-1]:
            if len(bs) == 1:  # nothing to take a slope from: cost proportional to batch
                return med[bs[0]] * b / bs[0]
            lo, hi = bs[-2], bs[-1]
        else:
            lo = max(x for x in bs if x < b)
            hi = min(x for x in bs if x > b)
        slope = (med[hi] - med[lo]) / (hi - lo)
        return max(med[lo] + slope * (b - lo), 1e-12)

    def service_time(self, batch_size: int) -> Empirical:
        """The distribution of one call's seconds at ``batch_size``.

        A measured batch size resamples its own samples. For a batch size that
        was not measured, the target median is interpolated linearly in batch
        size between the two neighbouring measured medians (above the largest
        measured size: extrapolated along the last two), and the samples of the
        nearest *lower* measured batch size are multiplied by the ratio
        ``target median / that batch's median``. The result keeps the measured
        shape (spread, tail) and moves its location. Batch sizes below the
        smallest measured raise ``ValueError``.
        """
        b = int(batch_size)
        if b in self.samples:
            return Empirical(self.samples[b])
        target = self._interpolated_median(b)
        lo = max(x for x in self.batch_sizes if x < b)
        base = self.samples[lo]
        return Empirical(base * (target / float(np.median(base))))

    def _samples_for(self, b: int) -> np.ndarray:
        return self.service_time(b).samples

    # ---- serialisation
    def to_dict(self) -> dict[str, Any]:
        scale = 1e6
        return {
            "format": FORMAT_VERSION,
            "model": self.model,
            "accuracy": round(float(self.accuracy), 6),
            "unit": "us",
            "batch_sizes": list(self.batch_sizes),
            "provenance": self.provenance,
            # informational only (recomputed from the samples on load)
            "summary_us": {
                str(b): {k: (v if k == "n" else round(v * scale, 2)) for k, v in s.items()}
                for b, s in self.summary().items()
            },
            "samples_us": {
                str(b): [round(float(x) * scale, JSON_DECIMALS_US) for x in self.samples[b]]
                for b in self.batch_sizes
            },
        }

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The profile as JSON text (samples in microseconds, 0.1 us
        resolution); also written to ``path`` if given."""
        # Top-level dicts get one line per entry (one line of samples per batch
        # size): small, readable and diff-able files.
        parts = []
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                rows = ",\n".join(f"  {json.dumps(str(k))}: {json.dumps(v)}" for k, v in value.items())
                text_v = "{\n" + rows + "\n }" if rows else "{}"
            else:
                text_v = json.dumps(value)
            parts.append(f" {json.dumps(key)}: {text_v}")
        text = "{\n" + ",\n".join(parts) + "\n}"
        if path is not None:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text(text + "\n", encoding="utf-8")
            os.replace(tmp, p)
        return text

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Profile":
        if d.get("unit", "us") != "us":
            raise ValueError(f"unsupported unit {d.get('unit')!r}")
        return cls(
            model=d["model"],
            batch_sizes=tuple(int(b) for b in d["batch_sizes"]),
            samples={int(b): np.asarray(v, dtype=float) * 1e-6 for b, v in d["samples_us"].items()},
            accuracy=float(d["accuracy"]),
            provenance=dict(d.get("provenance", {})),
        )

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> "Profile":
        """Parse JSON text, or read it from a path."""
        if isinstance(text_or_path, os.PathLike) or (
            isinstance(text_or_path, str) and not text_or_path.lstrip().startswith("{")
        ):
            text = Path(text_or_path).read_text(encoding="utf-8")
        else:
            text = text_or_path
        return cls.from_dict(json.loads(text))


def width_profile_name(model: str, hidden: int) -> str:
    """The reference file stem of ``model`` (mlp or mlp_int8) at hidden width ``hidden``: ``mlp_w1024``."""
    return f"{model}_w{int(hidden)}"


def load_reference_profile(name: str) -> Profile:
    """The committed reference profile ``data/profiles/<name>.json``."""
    path = REFERENCE_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in REFERENCE_DIR.glob("*.json"))
        raise KeyError(f"no reference profile {name!r} (have {known})")
    return Profile.from_json(path)


# --------------------------------------------------------------------------- measuring
def compare_profiles(reference: Profile, live: Profile) -> "pd.DataFrame":
    """Medians per batch size (µs) of a stored profile and a live one, with their ratio."""
    import pandas as pd

    rows = [{"model": reference.model, "batch_size": b,
             "reference_p50_us": reference.median(b) * 1e6, "this_machine_p50_us": live.median(b) * 1e6}
            for b in reference.batch_sizes if b in live.batch_sizes]
    df = pd.DataFrame(rows)
    df["this_machine_over_reference"] = df["this_machine_p50_us"] / df["reference_p50_us"]
    return df


def measure_profile(
    model,
    batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES,
    repeats: int = 200,
    warmup: int = 10,
    X: np.ndarray | None = None,
    threads: int = 1,
) -> Profile:
    """Time ``model.predict(batch)`` on this machine.

    ``model`` is a :class:`sim.models.TrainedModel` (anything with ``name``,
    ``family``, ``accuracy``, ``predict`` and ``X_test`` works). Inputs are
    consecutive rows of ``X`` (default ``model.X_test``), cycling through it so
    successive calls see different data. Each timed value is the
    ``time.perf_counter`` wall time of one whole ``predict`` call, input
    conversion included, as a server would pay it.

    ``warmup`` untimed calls per batch size come first (first calls pay for
    lazy initialisation and cold caches). The timed calls then go round-robin
    over the batch sizes, ``repeats`` rounds, so slow drift of the machine
    (frequency scaling, a noisy neighbour) spreads over all batch sizes instead
    of biasing whichever was measured last. torch models run under
    ``torch.inference_mode()``; torch's thread pool and the BLAS/OpenMP pools
    that numpy and scikit-learn use are limited to ``threads`` (1 by default:
    see :func:`torch_threads`). The input rows are prepared before timing.
    The GC stays enabled, as it would be in a server.

    Keep ``repeats * len(batch_sizes)`` calls affordable: at ~40 ms a call,
    the forest's 7 x 27 calls already take ~8 s.
    """
    batch_sizes = tuple(sorted({int(b) for b in batch_sizes}))
    if not batch_sizes or batch_sizes[0] < 1:
        raise ValueError("batch sizes must be positive integers")
    if repeats < 1 or warmup < 0:
        raise ValueError("need repeats >= 1 and warmup >= 0")
    X = np.asarray(model.X_test if X is None else X)
    n = X.shape[0]
    if n == 0:
        raise ValueError("need at least one input row")
    # Pre-build every input batch so slicing/copying is not timed.
    n_batches = repeats + warmup
    inputs = {}
    for b in batch_sizes:
        rows = (np.arange(n_batches * b) % n).reshape(n_batches, b)
        inputs[b] = [np.ascontiguousarray(X[r]) for r in rows]

    from threadpoolctl import threadpool_limits  # ships with scikit-learn

    if model.family == "torch":
        import torch

        ctx = torch.inference_mode
    else:
        ctx = nullcontext

    @contextmanager
    def threads_ctx():
        # BLAS/OpenMP pools (numpy, scikit-learn) and torch's own pool alike
        with threadpool_limits(limits=threads), torch_threads(threads):
            yield
    predict = model.predict
    out = {b: np.empty(repeats) for b in batch_sizes}
    clock = time.perf_counter
    load_before = _loadavg()
    with threads_ctx(), ctx():
        for b in batch_sizes:
            for i in range(warmup):
                predict(inputs[b][repeats + i])
        gc.collect()
        for r in range(repeats):
            for b in batch_sizes:
                x = inputs[b][r]
                t0 = clock()
                predict(x)
                out[b][r] = clock() - t0
        width = {"hidden": int(model.hidden)} if getattr(model, "hidden", None) else {}
        prov = provenance(
            **width,
            repeats=repeats,
            warmup=warmup,
            threads=threads,
            # other work on the machine inflates wall times; say how busy it was
            loadavg_1m_before=load_before,
            loadavg_1m_after=_loadavg(),
            method="perf_counter wall time of one predict() call; warm-up first; "
            "round-robin over batch sizes",
        )
    return Profile(
        model=model.name,
        batch_sizes=batch_sizes,
        samples=out,
        accuracy=float(model.accuracy),
        provenance=prov,
    )
