"""Partitioning a training table: Spark's hash and range partitioners, date partitions, real file scans, and
synchronous data-parallel workers with a barrier.

References. Hash partitioning follows Spark's ``HashPartitioning``: ``pmod(murmur3(key, seed=42), n)`` with
Spark's ``Murmur3_x86_32.hashLong`` (the low 32-bit word mixed first, then the high one, ``fmix`` with length
8). Range partitioning follows Spark's ``RangePartitioner``: sample keys (20 per output partition, oversampled
3x), sort the sample, pick bounds at equal steps of cumulative weight (skipping a bound equal to the previous
one), and send a key to the first partition whose bound is >= the key. Bounds from a sample are only roughly
balanced (each share carries the sample's quantile noise, about 1/sqrt(keys sampled per partition)), and one
key never spans two partitions, so a hot key stays in one partition whatever the bounds. Differences: the
sample is one uniform draw (Spark samples per input partition with reservoirs and reweights), and date
partitioning is one partition per day (Hive-style ``dt=`` directories). Scans read the same table written by
pyarrow as CSV and as Parquet, the CSV parsed whole and the Parquet file read for the selected column chunks
only. Workers follow synchronous data parallelism (PyTorch DDP): every step each worker computes on its own
shard's batch, waits at a barrier for the slowest, then all-reduces gradients with a ring (2(N-1)/N of the
model's bytes over each link plus 2(N-1) hop latencies); a worker out of rows leaves, as with DDP's ``Join``.
Unlike DDP, communication does not overlap the backward pass here.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import simpy

_M32 = np.uint64(0xFFFFFFFF)


# ------------------------------------------------------------------ Spark's Murmur3 (x86_32) on int and long
def _rotl(x, r):
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & _M32


def _mix_k1(k1):
    k1 = (k1 * np.uint64(0xCC9E2D51)) & _M32
    k1 = _rotl(k1, 15)
    return (k1 * np.uint64(0x1B873593)) & _M32


def _mix_h1(h1, k1):
    h1 = _rotl(h1 ^ k1, 13)
    return (h1 * np.uint64(5) + np.uint64(0xE6546B64)) & _M32


def _fmix(h1, length: int):
    h1 = h1 ^ np.uint64(length)
    h1 ^= h1 >> np.uint64(16)
    h1 = (h1 * np.uint64(0x85EBCA6B)) & _M32
    h1 ^= h1 >> np.uint64(13)
    h1 = (h1 * np.uint64(0xC2B2AE35)) & _M32
    h1 ^= h1 >> np.uint64(16)
    return h1


def _signed(h) -> np.ndarray:
    return h.astype(np.int64) - (h >= np.uint64(2**31)).astype(np.int64) * 2**32


def murmur3_int(values, seed: int = 42) -> np.ndarray:
    """Spark's ``Murmur3_x86_32.hashInt`` (what ``hash(int_col)`` returns), as signed 32-bit ints."""
    v = np.asarray(values, dtype=np.int64).astype(np.uint64) & _M32
    h = _mix_h1(np.full(v.shape, np.uint64(seed)), _mix_k1(v))
    return _signed(_fmix(h, 4))


def murmur3_long(values, seed: int = 42) -> np.ndarray:
    """Spark's ``Murmur3_x86_32.hashLong`` (what ``hash(bigint_col)`` returns), as signed 32-bit ints."""
    v = np.asarray(values, dtype=np.int64).view(np.uint64)
    h = _mix_h1(np.full(v.shape, np.uint64(seed)), _mix_k1(v & _M32))
    h = _mix_h1(h, _mix_k1(v >> np.uint64(32)))
    return _signed(_fmix(h, 8))


def hash_partition(keys, partitions: int) -> np.ndarray:
    """Spark ``HashPartitioning`` on a bigint key: pmod(murmur3(key, 42), partitions)."""
    return np.mod(murmur3_long(keys), partitions)


def range_bounds(sample, partitions: int) -> np.ndarray:
    """Spark ``RangePartitioner.determineBounds`` with equal weights: up to ``partitions - 1`` distinct bounds."""
    s = np.sort(np.asarray(sample))
    if partitions <= 1 or s.size == 0:
        return s[:0]
    step = s.size / partitions
    bounds, target, prev = [], step, None
    for i, key in enumerate(s):
        if i + 1 >= target and (prev is None or key > prev):
            bounds.append(key)
            prev = key
            target += step
            if len(bounds) == partitions - 1:
                break
    return np.asarray(bounds, dtype=s.dtype)


def range_partition(keys, bounds) -> np.ndarray:
    """The first partition whose upper bound is >= the key (keys above every bound go to the last)."""
    return np.searchsorted(bounds, np.asarray(keys), side="left")


def partition_skew(partition_of_row, partitions: int) -> float:
    """Max partition size / average partition size over the ``partitions`` declared (empty ones count)."""
    sizes = np.bincount(partition_of_row, minlength=partitions)
    return float(sizes.max() / sizes.mean())


# ------------------------------------------------------------------ the events table
def zipf_probabilities(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=float) ** s
    return w / w.sum()


def event_keys(rng: np.random.Generator, rows: int, users: int, zipf_s: float, days: int, weekend_boost: float,
               growth: float) -> tuple[np.ndarray, np.ndarray]:
    """(user_id, day) per event: users Zipf(s) by activity (ids shuffled, so an id says nothing of activity),
    days weighted by a weekend boost and linear growth over the period (day 0 is a Monday)."""
    ids = rng.permutation(users).astype(np.int64) * 7919 + 10_000  # sparse, unordered ids as in real tables
    user = ids[_draw(rng, zipf_probabilities(users, zipf_s), rows)]
    d = np.arange(days)
    w = (1 + weekend_boost * (d % 7 >= 5)) * (1 + growth * d / max(days - 1, 1))
    return user, _draw(rng, w / w.sum(), rows)


def _draw(rng: np.random.Generator, p: np.ndarray, n: int) -> np.ndarray:
    """n draws of an index with probabilities p (inverse CDF)."""
    cdf = np.cumsum(p)
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), p.size - 1)


def events_table(rng: np.random.Generator, rows: int, users: int, zipf_s: float, days: int, feature_columns: int):
    """A pyarrow table of events: ids, time, type, price and ``feature_columns`` float features."""
    import pyarrow as pa

    user, day = event_keys(rng, rows, users, zipf_s, days, 0.3, 0.5)
    ts = (day.astype(np.int64) * 86_400 + rng.integers(0, 86_400, rows)) + 1_700_006_400
    cols = {"user_id": user, "event_ts": ts, "day": day.astype(np.int32),
            "event_type": pa.array(np.array(["view", "click", "cart", "buy", "refund", "search"])[
                rng.integers(0, 6, rows)]),
            "item_id": rng.integers(1, 2_000_000, rows), "price": np.round(rng.lognormal(3, 1, rows), 2)}
    for j in range(feature_columns):
        cols[f"f{j:02d}"] = rng.standard_normal(rows).astype(np.float32)
    return pa.table(cols)


# ------------------------------------------------------------------ real scans
SCAN_ROWS, SCAN_FEATURES = 100_000, 24
SCAN_COLUMN_COUNTS = (1, 2, 4, 8, 16, 24, 30)  # 30: every column, ids and strings too


def scan_provenance(**extra) -> dict:
    """Where a scan timing was taken: CPU, core count, library versions, date, load (no hostname)."""
    import datetime as dt
    import platform

    import pyarrow as pa

    from .profiles import cpu_model

    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load = None
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "pyarrow": pa.__version__, "numpy": np.__version__,
            "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(), "loadavg_1m": load,
            **extra}


@dataclass
class ScanTiming:
    csv_s: list
    parquet_s: list
    csv_bytes: int
    parquet_bytes: int       # column chunks of the selected columns (what a reader fetches)
    parquet_file_bytes: int
    rows: int


def write_files(table, folder: str) -> tuple[str, str]:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    csv_path, pq_path = os.path.join(folder, "events.csv"), os.path.join(folder, "events.parquet")
    pcsv.write_csv(table, csv_path)
    pq.write_table(table, pq_path, compression="snappy", row_group_size=64 * 1024)
    return csv_path, pq_path


def parquet_column_bytes(path: str, columns) -> int:
    """Compressed bytes of the selected columns' chunks, from the file's footer."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    want, total = set(columns), 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        for c in range(rg.num_columns):
            col = rg.column(c)
            if col.path_in_schema in want:
                total += col.total_compressed_size
    return total


def time_scans(csv_path: str, pq_path: str, columns, repeats: int) -> tuple[list, list]:
    """Wall time of reading ``columns`` from each file, alternating formats, one thread each."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    read_opts = pcsv.ReadOptions(use_threads=False)
    conv = pcsv.ConvertOptions(include_columns=list(columns))
    out_csv, out_pq = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a = pcsv.read_csv(csv_path, read_options=read_opts, convert_options=conv)
        t1 = time.perf_counter()
        b = pq.ParquetFile(pq_path).read(columns=list(columns), use_threads=False)
        t2 = time.perf_counter()
        if a.num_rows != b.num_rows:
            raise RuntimeError("the two files disagree on the row count")
        out_csv.append(t1 - t0)
        out_pq.append(t2 - t1)
    return out_csv, out_pq


def measure_scans(seed: int, rows: int, feature_columns: int, column_counts, repeats: int,
                  folder: str | None = None) -> dict:
    """Write one seeded table as CSV and Parquet (in ``folder`` or a temporary one, removed after) and time
    reads of k columns for each k in ``column_counts``: the first k float features, then the other columns."""
    table = events_table(np.random.default_rng(seed), rows, 50_000, 1.0, 91, feature_columns)
    with tempfile.TemporaryDirectory(dir=folder, prefix="scan-") as tmp:
        csv_path, pq_path = write_files(table, tmp)
        csv_bytes = os.path.getsize(csv_path)
        pq_bytes = os.path.getsize(pq_path)
        grid = {}
        order = [f"f{j:02d}" for j in range(feature_columns)] + [c for c in table.column_names if c[0] != "f"]
        for k in column_counts:
            cols = order[:k]
            c, p = time_scans(csv_path, pq_path, cols, repeats)
            grid[str(k)] = {"columns": cols, "csv_s": c, "parquet_s": p, "csv_bytes": csv_bytes,
                            "parquet_bytes": parquet_column_bytes(pq_path, cols), "parquet_file_bytes": pq_bytes}
    return {"rows": rows, "feature_columns": feature_columns, "total_columns": table.num_columns, "seed": seed,
            "repeats": repeats, "grid": grid}


# ------------------------------------------------------------------ synchronous data-parallel training (SimPy)
class Barrier:
    """A reusable barrier whose parties may leave, like Java's ``Phaser`` (``arriveAndDeregister``): ``wait()``
    returns once every registered party has arrived; ``leave()`` deregisters a party that has no more steps
    (PyTorch DDP's ``Join``: a finished worker shadows the collectives and no longer holds the others up)."""

    def __init__(self, env: simpy.Environment, parties: int):
        self.env, self.parties = env, parties
        self._count, self._event = 0, env.event()

    def _release_if_complete(self) -> None:
        if self._count and self._count >= self.parties:
            ev, self._count, self._event = self._event, 0, self.env.event()
            ev.succeed()

    def wait(self):
        ev = self._event
        self._count += 1
        self._release_if_complete()
        yield ev

    def leave(self) -> None:
        self.parties -= 1
        self._release_if_complete()


def ring_allreduce_s(workers: int, model_mb: float, bandwidth_gbps: float, hop_ms: float) -> float:
    """Ring all-reduce time: 2(N-1)/N of the model's bytes over each link, 2(N-1) latency hops; 0 for N = 1."""
    if workers <= 1:
        return 0.0
    n = workers
    return 2 * (n - 1) / n * model_mb * 8e6 / (bandwidth_gbps * 1e9) + 2 * (n - 1) * hop_ms / 1e3


def step_work(shard_rows, batch: int, row_s: float) -> np.ndarray:
    """Seconds of compute per (step, worker): full batches of ``batch`` rows, then the remainder, then nothing."""
    shard = np.asarray(shard_rows, dtype=np.int64)
    steps = int(np.ceil(shard.max() / batch)) if shard.size and shard.max() > 0 else 0
    done = np.arange(steps)[:, None] * batch
    return np.clip(shard[None, :] - done, 0, batch) * row_s


def train_epoch(shard_rows, batch: int, row_s: float, allreduce_s: float, slow: np.ndarray,
                slow_factor: float) -> dict:
    """One epoch of synchronous data parallelism in SimPy: each worker runs steps of ``batch`` rows over its
    shard (times ``slow_factor`` where ``slow[step, worker]``), meets the others still working at a barrier,
    then all-reduces; a worker out of rows leaves the barrier. Returns the epoch time, busy and waiting time."""
    env = simpy.Environment()
    work = step_work(shard_rows, batch, row_s)
    n = work.shape[1]
    steps_of = (work > 0).sum(axis=0)
    barrier = Barrier(env, int((steps_of > 0).sum()))
    busy, waited = np.zeros(n), np.zeros(n)

    def worker(i):
        for s in range(steps_of[i]):
            w = work[s, i] * (slow_factor if slow[s, i] else 1.0)
            busy[i] += w
            yield env.timeout(w)
            t = env.now
            yield from barrier.wait()
            waited[i] += env.now - t
            yield env.timeout(allreduce_s)
        barrier.leave()

    for i in range(n):
        if steps_of[i]:
            env.process(worker(i))
    env.run()
    return {"time_s": env.now, "busy_s": busy, "wait_s": waited, "steps": work.shape[0]}


def epoch_time_closed_form(shard_rows, batch: int, row_s: float, allreduce_s: float, slow: np.ndarray,
                           slow_factor: float) -> float:
    """The same epoch without the simulator: per step the slowest worker still working, plus the all-reduce."""
    work = step_work(shard_rows, batch, row_s)
    per = work * np.where(slow[:work.shape[0], :work.shape[1]], slow_factor, 1.0)
    return float(per.max(axis=1).sum() + work.shape[0] * allreduce_s) if work.size else 0.0
