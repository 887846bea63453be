"""Q17: partitioning a skewed events table for parallel training (``sim.partitioning``).

A seeded events table has users drawn Zipf(``zipf_s``) by activity and days weighted by a weekend boost and
growth. It is split three ways on the same rows: one partition per day (as Hive ``dt=`` folders), Spark's
hash partitioner on user_id (Murmur3, seed 42, pmod) and Spark's range partitioner on user_id (bounds from
a sample). Partition skew is the largest partition over the average, with a t interval over independent
tables. The partitions are dealt round-robin to ``workers``; a SimPy model runs synchronous data-parallel
epochs (each step: compute on the worker's shard, a barrier, a ring all-reduce, occasional stragglers)
and gives scaling efficiency against one worker reading everything. The scan comparison times pyarrow
reading k columns of the same table stored as CSV and as Parquet: by default the committed measurement
``data/profiles/parquet_scan.json`` (with its CPU and load), or this machine with ``scan_profile = live``.
``zipf_s = 0`` (uniform users) is the skew control; ``workers = 1`` the scaling control.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

import sim.partitioning as P
from sim.cache import DiskCache
from sim.metrics import t_interval
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .measure import Measurements

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "profiles" / "parquet_scan.json"
CACHE = DiskCache("q17", code=[__file__, P.__file__])
TABLES = 5  # independent tables per run: the skew interval
SAMPLE_PER_PARTITION = 60  # Spark: samplePointsPerPartitionHint 20, oversampled 3x when read from the input
MAX_STEPS = 40_000  # rows × epochs / batch_per_worker: worker-steps simulated per arm
ARMS = ("baseline", "pattern", "range")
PARTS = ("rows", "users", "zipf_s", "partitions", "days", "weekend_boost_pct", "growth_pct")


def _size(p) -> str | None:
    if p.rows * p.epochs / p.batch_per_worker <= MAX_STEPS:
        return None
    return (f"at least {int(np.ceil(p.rows * p.epochs / MAX_STEPS))} with rows={p.rows} and epochs={p.epochs} "
            f"(rows × epochs / batch_per_worker ≤ {MAX_STEPS:,} worker-steps)")


class DataPartitioningLab(Lab):
    id = "q17"
    headline = ("pattern", "partition_skew_x")
    refine_param = "rows"
    arms = (Arm("baseline", "By date", "one partition per day of events"),
            Arm("pattern", "Hash of user_id", "Spark HashPartitioning: pmod(murmur3(user_id), partitions)"),
            Arm("range", "Range of user_id", "Spark RangePartitioner: sorted user_id split at sampled bounds"))
    assumptions = (
        "Users are Zipf(zipf_s) by activity; days carry a weekend boost and linear growth over the period.",
        "Partitions are dealt to workers round-robin; a worker's work per step is proportional to its rows.",
        "A step ends at a barrier for the slowest worker, then a ring all-reduce (no overlap with compute).",
        "A straggler (noisy neighbour, GC pause) slows one worker's step by straggler_factor, independently.",
        "One worker reading everything, with its own stragglers and no all-reduce, is the speed-up reference.",
    )
    rules = (Rule("batch_per_worker", ("batch_per_worker", "rows", "epochs"), _size),)
    parts = {"tables": PARTS, "scan": ("columns_read", "scan_profile")}
    params = (
        Param("rows", 100_000, 10_000, 2_000_000, unit="rows", help="events per table"),
        Param("users", 100_000, 100, 1_000_000, unit="users", help="distinct users"),
        Param("zipf_s", 0.8, 0.0, 1.5, key=True, help="Zipf exponent of user activity (0 = uniform, the control)"),
        Param("partitions", 64, 2, 1024, unit="partitions", key=True, help="partitions for hash and range"),
        Param("days", 91, 7, 365, unit="days", help="days of events (date partitioning: one partition each)"),
        Param("weekend_boost_pct", 30.0, 0.0, 300.0, unit="%", help="extra events on Saturdays and Sundays"),
        Param("growth_pct", 50.0, 0.0, 500.0, unit="%", help="traffic growth from the first day to the last"),
        Param("workers", 16, 1, 512, unit="workers", key=True, help="data-parallel workers"),
        Param("batch_per_worker", 512, 16, 65536, unit="rows", help="rows each worker computes per step"),
        Param("epochs", 5, 2, 20, unit="epochs", help="epochs simulated (the efficiency interval)"),
        Param("row_ms", 1.0, 0.01, 100.0, unit="ms", help="compute per row (forward and backward)"),
        Param("model_mb", 100.0, 0.1, 10_000.0, unit="MB", help="gradient bytes all-reduced per step"),
        Param("bandwidth_gbps", 25.0, 0.1, 400.0, unit="Gbit/s", help="link bandwidth per worker"),
        Param("hop_ms", 0.05, 0.0, 10.0, unit="ms", help="latency of one hop of the ring"),
        Param("straggler_pct", 0.5, 0.0, 50.0, unit="%", key=True, help="chance a worker's step is slowed"),
        Param("straggler_factor", 1.5, 1.0, 10.0, unit="x", help="how much slower a straggling step is"),
        Param("columns_read", 8, choices=P.SCAN_COLUMN_COUNTS, unit="columns", key=True,
              help="columns a scan selects out of 30 (30 = every column)"),
        Param("scan_profile", "reference", choices=("reference", "live"),
              help="reference: the committed measurement; live: time this machine now (cached)"),
    )
    exercises = (
        Exercise("Users are barely skewed (zipf_s = 0.4). How balanced are the hash partitions now?",
                 {"zipf_s": 0.4}, ("pattern", "partition_skew_x"),
                 why="Hashing cannot split a key: the partition holding the busiest user carries that user's whole "
                 "share. With mild skew no user is a sizeable part of a partition, and the hash balances to "
                 "within noise."),
        Exercise("Scale out to 128 workers. What happens to scaling efficiency?",
                 {"workers": 128}, ("pattern", "scaling_efficiency_pct"),
                 why="Each worker's shard shrinks with more workers, but every step still waits at the barrier for "
                 "the slowest worker and pays the all-reduce; with 128 workers some worker straggles in almost "
                 "every step."),
        Exercise("Read every column instead of 8. Does Parquet keep its lead over CSV?",
                 {"columns_read": 30}, ("comparison", "scan_speedup_x"),
                 why="Parquet's lead comes mostly from reading only the selected columns; reading all of them leaves "
                 "only the cheaper decoding of binary values against parsing text."),
    )

    # ------------------------------------------------------------------ parts
    def part_tables(self, seed: int, p) -> dict:
        """Rows per partition under the three schemes, for TABLES independent tables (cached on disk)."""
        key = {"seed": seed, **dict(p), "tables": TABLES, "sample": SAMPLE_PER_PARTITION}
        got = CACHE.get_json("partition_sizes", key)
        if got is None:
            s, got = Streams(seed), []
            for t in range(TABLES):
                rng = s.fresh(f"table_{t}")
                user, day = P.event_keys(rng, p.rows, p.users, p.zipf_s, p.days, p.weekend_boost_pct / 100,
                                         p.growth_pct / 100)
                sample = user[rng.integers(0, p.rows, min(SAMPLE_PER_PARTITION * p.partitions, 1_000_000))]
                ids = {"baseline": (day, p.days), "pattern": (P.hash_partition(user, p.partitions), p.partitions),
                       "range": (P.range_partition(user, P.range_bounds(sample, p.partitions)), p.partitions)}
                got.append({arm: np.bincount(i, minlength=n).tolist() for arm, (i, n) in ids.items()})
            CACHE.put_json("partition_sizes", key, got)
        return {"tables": [{arm: np.asarray(v, dtype=np.int64) for arm, v in t.items()} for t in got]}

    def part_scan(self, seed: int, p) -> dict:
        if p.scan_profile == "reference":
            prof = json.loads(REFERENCE.read_text(encoding="utf-8"))
            return {**prof["grid"][str(p.columns_read)], "rows": prof["rows"], "provenance": prof["provenance"]}
        here = P.scan_provenance()
        key = {"columns_read": p.columns_read, "cpu": here["cpu"], "pyarrow": here["pyarrow"], "rows": P.SCAN_ROWS}
        got = CACHE.get_json("live_scan", key)
        if got is None:
            prof = P.measure_scans(0, P.SCAN_ROWS, P.SCAN_FEATURES, (p.columns_read,), 5)
            got = {**prof["grid"][str(p.columns_read)], "rows": prof["rows"],
                   "provenance": P.scan_provenance(generated_by="q17 scan_profile=live")}
            CACHE.put_json("live_scan", key, got)
        return got

    # ------------------------------------------------------------------ run
    def simulate(self, seed: int, p) -> Outcome:
        m = Measurements(ARMS + ("comparison",))
        tables = self.part("tables", seed, p)["tables"]
        ar = P.ring_allreduce_s(p.workers, p.model_mb, p.bandwidth_gbps, p.hop_ms)
        row_s, q, f = p.row_ms / 1e3, p.straggler_pct / 100, p.straggler_factor
        curves = []
        for arm in ARMS:
            sizes = tables[0][arm]
            n_parts = sizes.size
            m.mean(arm, "partition_skew_x", [t[arm].max() / t[arm].mean() for t in tables])
            m.value(arm, "partitions_used", int(n_parts))
            shards = np.bincount(np.arange(n_parts) % p.workers, weights=sizes, minlength=p.workers)
            m.value(arm, "worker_skew_x", shards.max() / shards.mean())
            eff, wait, busy = [], [], []
            for e in range(p.epochs):
                slow = _stragglers(seed, e, int(np.ceil(sizes.sum() / p.batch_per_worker)), p.workers, q)
                one = P.train_epoch([sizes.sum()], p.batch_per_worker, row_s, 0.0, slow[:, :1], f)["time_s"]
                run = P.train_epoch(shards, p.batch_per_worker, row_s, ar, slow, f)
                eff.append(100 * one / run["time_s"] / p.workers)
                wait.append(100 * run["wait_s"].sum() / (p.workers * run["time_s"]))
                busy.append(100 * run["busy_s"].sum() / (p.workers * run["time_s"]))
            m.mean(arm, "scaling_efficiency_pct", eff)
            m.mean(arm, "barrier_wait_pct", wait)
            m.mean(arm, "compute_busy_pct", busy)
            m.value(arm, "allreduce_ms", 1e3 * ar)
            curves.append(_curve(seed, arm, sizes, p))
        sc = self.part("scan", seed, p)
        self._scan(m, sc)
        notes = [f"{p.rows:,} events of {p.users:,} users (Zipf {p.zipf_s:g}) over {p.days} days; skew is a t "
                 f"interval over {TABLES} independent tables.",
                 f"{p.workers} workers × {p.epochs} epochs of {p.batch_per_worker}-row steps: compute "
                 f"{p.batch_per_worker * p.row_ms:.0f} ms and all-reduce {1e3 * ar:.1f} ms per step.",
                 _scan_note(p, sc)]
        return Outcome(m, {"scaling": pd.concat(curves, ignore_index=True),
                           "partition_sizes": _sizes_frame(tables[0])}, notes=notes)

    def _scan(self, m: Measurements, sc: dict) -> None:
        csv, pq = np.asarray(sc["csv_s"]), np.asarray(sc["parquet_s"])
        log = t_interval(np.log(csv / pq))  # paired reads; a geometric mean shrugs off a read a busy CPU slowed
        m.value("comparison", "scan_speedup_x", np.exp(log.estimate), (np.exp(log.low), np.exp(log.high)))
        m.mean("comparison", "csv_scan_ms", 1e3 * csv)
        m.mean("comparison", "parquet_scan_ms", 1e3 * pq)
        m.value("comparison", "csv_scanned_mb", sc["csv_bytes"] / 1e6)
        m.value("comparison", "parquet_scanned_mb", sc["parquet_bytes"] / 1e6)
        m.value("comparison", "bytes_saving_pct", 100 * (1 - sc["parquet_bytes"] / sc["csv_bytes"]))

    def plots(self, result):
        from .plotting import bar_chart, line_chart

        skew = pd.DataFrame([{"arm": a, "skew_x": result.metrics[a]["partition_skew_x"]} for a in ARMS])
        return [bar_chart(skew, "arm", "skew_x", "Largest partition / average", "skew (x)", color="arm",
                          rules=[(1.5, "1.5x target")]),
                line_chart(result.series["scaling"], "workers", "efficiency_pct", "Scaling efficiency against workers",
                           "workers (log)", "efficiency (%)", log_x=True, points=True, rules=[("y", 80.0, "80%")]),
                bar_chart(result.series["partition_sizes"], "rank", "rows", "Partition sizes, largest first",
                          "rows", color="arm")]


def _scan_note(p, sc: dict) -> str:
    prov = sc["provenance"]
    return (f"Scan of {p.columns_read} of 30 columns, {sc['rows']:,} rows: "
            f"{'committed measurement' if p.scan_profile == 'reference' else 'measured here'} on "
            f"{prov.get('cpu')} ({prov.get('cpu_count')} cores, load {prov.get('loadavg_1m')}, "
            f"pyarrow {prov.get('pyarrow')}, {str(prov.get('date'))[:10]}).")


def _stragglers(seed: int, epoch: int, steps: int, workers: int, q: float) -> np.ndarray:
    """slow[step, worker] for one epoch; every arm and the one-worker reference see the same draws."""
    return Streams(seed).fresh(f"stragglers_{epoch}").random((max(steps, 1), workers)) < q


def _curve(seed: int, arm: str, sizes: np.ndarray, p) -> pd.DataFrame:
    """Efficiency against N for this arm's partitions (the closed form of the simulated epoch, first epoch's
    straggler draws)."""
    rows, row_s = [], p.row_ms / 1e3
    slow = _stragglers(seed, 0, int(np.ceil(sizes.sum() / p.batch_per_worker)), 1, p.straggler_pct / 100)
    one = P.epoch_time_closed_form([sizes.sum()], p.batch_per_worker, row_s, 0.0, slow, p.straggler_factor)
    for n in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        shards = np.bincount(np.arange(sizes.size) % n, weights=sizes, minlength=n)
        steps = int(np.ceil(shards.max() / p.batch_per_worker))
        t = P.epoch_time_closed_form(shards, p.batch_per_worker, row_s,
                                     P.ring_allreduce_s(n, p.model_mb, p.bandwidth_gbps, p.hop_ms),
                                     _stragglers(seed, 0, steps, n, p.straggler_pct / 100), p.straggler_factor)
        rows.append({"workers": n, "efficiency_pct": 100 * one / t / n, "arm": arm})
    return pd.DataFrame(rows)


def _sizes_frame(table: dict) -> pd.DataFrame:
    out = []
    for arm in ARMS:
        sizes = np.sort(table[arm])[::-1][:20]
        out.append(pd.DataFrame({"rank": np.arange(1, sizes.size + 1), "rows": sizes, "arm": arm}))
    return pd.concat(out, ignore_index=True)


LAB = DataPartitioningLab()
