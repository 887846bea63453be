"""Q20: versioning a training data set — what dedup costs on disk, and what pinning buys a retrain.

A tabular data set (make_classification rows in CSV shards) gets ``versions`` versions, each
changing ``change_pct`` % of its rows (updates, appends, deletes). Every version is committed for
real to three stores in a temporary folder: full copies, whole-file dedup as DVC does it (MD5 per
file, ``.dir`` manifest) and content-defined chunk dedup (a Gear/FastCDC chunker, SHA-256 chunks,
the lab's own design). Storage overhead = bytes on disk ÷ the latest version's size.
Reproduction: a model trained on version k is retrained ``versions_elapsed`` versions later,
either on the pinned version read back from the content-addressed store or on the mutable
"latest" folder; the spread is |accuracy then − accuracy now| on a fixed holdout. Every step
runs as an OpenLineage-shaped run; completeness is checked against a profiler's count of the
transformations that really executed, including any a person ran by hand.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pandas as pd

import sim.content_store as cs
import sim.data_versions as dv
import sim.lineage as ln
from sim.cache import DiskCache
from sim.metrics import batch_means
from sim.rng import Streams

from .contract import Arm, Exercise, Lab, Outcome, Param, Rule
from .measure import Measurements
from .plotting import bar_chart, line_chart

CACHE = DiskCache("q20_versions", code=[__file__, cs, dv, ln])
MAX_ROW_VERSIONS = 600_000  # rows × versions pushed through the stores in one run
BY_HAND_ORDER = ("clean", "split", "featurize", "evaluate", "ingest", "train")  # notebook steps go first
STORE_ARMS = {"baseline": "copies", "file_dedup": "file_dedup", "pattern": "chunk_dedup"}


def _size(p) -> str | None:
    if p.rows * p.versions <= MAX_ROW_VERSIONS:
        return None
    return f"at most {MAX_ROW_VERSIONS // p.rows} with rows = {p.rows} (rows × versions ≤ {MAX_ROW_VERSIONS:,})"


def _elapsed(p) -> str | None:
    return None if p.versions_elapsed < p.versions else f"< versions = {p.versions}"


def _workdir(tag: str):
    """A temporary folder for the stores: RAM-backed /dev/shm when writable (file creation on a shared
    disk costs milliseconds), else the system's temp dir; never the repository. Sizes do not depend on it."""
    root = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix=f"archlab-q20-{tag}-", dir=root)


def _cached(kind: str, seed: int, p, compute):
    key = {"seed": seed, **dict(p)}
    hit = CACHE.get_json(kind, key)
    if hit is None:
        hit = compute()
        CACHE.put_json(kind, key, hit)
    return hit


class DataVersioningLab(Lab):
    id = "q20"
    headline = ("pattern", "storage_overhead_x")
    refine_param = "reproductions"
    # retrained accuracies come from floating point: another CPU kind may flip a holdout row (0.067 points)
    cpu_tolerance = {("baseline", "reproducibility_variance_pct"): 0.5, ("baseline", "accuracy_pct"): 0.01,
                     ("pattern", "accuracy_pct"): 0.01}
    arms = (Arm("baseline", "Copies + mutable latest", "a full copy per version; a retrain reads whatever 'latest' "
                "holds now, with the steps a person runs by hand left out of the lineage"),
            Arm("file_dedup", "Whole-file dedup (DVC)", "one object per distinct file by MD5 and a .dir manifest per "
                "version: a changed shard is stored again whole"),
            Arm("pattern", "Chunk dedup + pinned", "content-defined chunks by SHA-256; a retrain reads the pinned "
                "version by its id and every step runs as a tracked OpenLineage run"))
    assumptions = (
        "Each version changes change_pct % of the first version's row count; the mix (mixed: 50% updates, 30% "
        "appends, 20% deletes) is assumed, not observed.",
        "An update re-measures a row (features + N(0, 0.05) noise) and a noisy labeller redraws its label "
        "uniformly over the 3 classes; change_kind = relabel instead applies a new policy folding class 1 into 2.",
        "Shards are id ranges, rows in id order, CSV with 3 decimals; nothing is compressed.",
        "Sizes are apparent file sizes (bytes written), not disk blocks; manifests and chunk indexes count.",
        "The holdout (1,500 rows from the same generator) never changes; every model is scored on it.",
        "untracked_steps of the pipeline are run by hand in the baseline (the order: clean, split, featurize, "
        "evaluate, ingest, train); the pattern's store serves data only to tracked runs.",
    )
    rules = (Rule("versions", ("versions", "rows"), _size),
             Rule("versions_elapsed", ("versions_elapsed", "versions"), _elapsed))
    _data = ("rows", "versions", "change_pct", "change_kind", "shards")
    parts = {"storage": _data + ("avg_chunk_kib", "chunker"),
             "retrain": _data + ("versions_elapsed", "reproductions", "model", "training_seed", "untracked_steps")}
    params = (
        Param("versions", 100, 2, 300, unit="versions", key=True, help="versions committed to every store"),
        Param("rows", 1500, 200, 20000, unit="rows", help="rows in the first version"),
        Param("change_pct", 0.5, 0.0, 20.0, unit="%", key=True,
              help="rows changed per version, as a share of the first version's rows"),
        Param("change_kind", "mixed", choices=tuple(dv.CHANGE_MIX),
              help="what a change does: mixed, update, append, or relabel (a systematic new labelling policy)"),
        Param("shards", 16, 1, 64, unit="files", help="CSV files the data set is split into (by id range)"),
        Param("avg_chunk_kib", 2.0, 0.0625, 64.0, unit="KiB", key=True,
              help="target average chunk size (min = avg/4, max = 8 x avg, as FastCDC)"),
        Param("chunker", "gear_cdc", choices=("gear_cdc", "fixed"),
              help="content-defined Gear chunks or fixed-size blocks"),
        Param("versions_elapsed", 20, 1, 299, unit="versions", key=True,
              help="versions committed between the original training and its reproduction"),
        Param("reproductions", 8, 2, 40, unit="retrains", help="original trainings reproduced per arm"),
        Param("model", "logreg", choices=("logreg", "sgd"),
              help="lbfgs logistic regression (deterministic) or shuffled SGD (depends on its seed)"),
        Param("training_seed", "pinned", choices=("pinned", "fresh"),
              help="the reproduction reuses the original training seed, or draws a new one"),
        Param("untracked_steps", 2, 0, 6, unit="steps", help="pipeline steps the baseline's team runs by hand"),
    )
    exercises = (
        Exercise("Make every version an append (change_kind = append). How much disk does whole-file dedup need now?",
                 {"change_kind": "append"}, ("file_dedup", "storage_overhead_x"),
                 why="When versions only append rows and shards are id ranges, only the last shard changes, so "
                 "whole-file dedup stores little more than the new shard each time."),
        Exercise("Shrink the chunks to 256 bytes. Does the chunk store get smaller or larger?",
                 {"avg_chunk_kib": 0.25}, ("pattern", "storage_overhead_x"),
                 why="A small change rewrites the chunk it lands in; smaller chunks mean fewer unchanged bytes "
                 "rewritten with it, until the per-chunk index entries start to dominate."),
        Exercise("Retrain with shuffled SGD and a fresh seed. Does pinning the data still reproduce the accuracy?",
                 {"model": "sgd", "training_seed": "fresh"}, ("pattern", "reproducibility_variance_pct"),
                 why="Pinning the data fixes the input, not the training: shuffled SGD with a fresh seed gives a "
                 "different model from the same bytes."),
    )

    def prepare(self, seed: int = 0) -> None:
        """Commit the default versions and run the default retrains into the disk cache."""
        p = self.settings()
        self.part("storage", seed, p)
        self.part("retrain", seed, p)

    # ------------------------------------------------------------------ real file work
    def part_storage(self, seed: int, p) -> dict:
        """Commit every version to the three stores on disk; bytes per store, per version, and a restore check."""
        def compute():
            table = dv.VersionedTable(seed, p.rows, p.versions, p.change_pct, p.change_kind, p.shards)
            with _workdir("storage") as tmp:
                stores = {"copies": cs.CopyStore(f"{tmp}/copies"), "file_dedup": cs.FileDedupStore(f"{tmp}/dvc"),
                          "chunk_dedup": cs.ChunkStore(f"{tmp}/chunks", int(p.avg_chunk_kib * 1024), p.chunker)}
                grown = {k: [] for k in stores}
                digests, raw = [], 0
                for v in range(p.versions):
                    if v:
                        table.advance()
                    snap = table.snapshot()
                    raw = sum(len(b) for b in snap.values())
                    digests.append(cs.digest_bytes(b"".join(snap[k] for k in sorted(snap))))
                    for name, store in stores.items():
                        store.commit(snap)
                        grown[name].append(store.written)
                on_disk = {k: s.size_bytes() for k, s in stores.items()}
                probe = Streams(seed)["restore"].choice(p.versions, size=min(8, p.versions), replace=False)
                restored = {k: sum(cs.digest_bytes(b"".join(f[r] for r in sorted(f))) == digests[v]
                                   for v in map(int, probe) for f in [s.checkout(s.versions[v])])
                            for k, s in stores.items()}
                chunk = stores["chunk_dedup"]
            return {"raw": raw, "first": grown["copies"][0], "grown": grown, "on_disk": on_disk,
                    "restored": restored, "probed": len(probe), "chunks_seen": chunk.chunks_seen,
                    "chunks_written": chunk.chunks_written}
        return _cached("storage", seed, p, compute)

    def part_retrain(self, seed: int, p) -> dict:
        """Original trainings, then their reproductions from the pinned store and from the mutable latest folder."""
        def compute():
            s = Streams(seed)
            table = dv.VersionedTable(seed, p.rows, p.versions, p.change_pct, p.change_kind, p.shards)
            holdout = ln.artifact("holdout", table.holdout)
            originals = np.sort(s["originals"].integers(0, p.versions - p.versions_elapsed, p.reproductions))
            seeds = s["train_seeds"].integers(2 ** 31, size=p.reproductions)
            fresh = s["fresh_seeds"].integers(2 ** 31, size=p.reproductions)
            by_hand = BY_HAND_ORDER[:p.untracked_steps]
            track = {"pattern": ln.Tracker("pinned"), "baseline": ln.Tracker("adhoc")}
            first = ln.Tracker("original")  # the original trainings, before anyone tries to reproduce them
            trace = {arm: ln.ExecutionTrace(dv.TRANSFORMS) for arm in track}
            rows = []
            with _workdir("retrain") as tmp:
                store, latest = cs.FileDedupStore(f"{tmp}/store"), cs.CopyStore(f"{tmp}/latest")
                for v in range(p.versions):
                    if v:
                        table.advance()
                    snap = table.snapshot()
                    vid = store.commit(snap)
                    shutil.rmtree(latest.root)  # "latest" is one folder, overwritten in place
                    latest = cs.CopyStore(latest.root)
                    latest.commit(snap)
                    for r in np.flatnonzero(originals == v):
                        data = ln.artifact(f"dataset@{vid}", store.checkout(vid), vid)
                        acc, _ = dv.run_pipeline(data, holdout, first, p.model, int(seeds[r]))
                        rows.append({"r": int(r), "version": v, "vid": vid, "acc0": acc})
                    for r in np.flatnonzero(originals + p.versions_elapsed == v):
                        row = rows[[x["r"] for x in rows].index(int(r))]
                        again = int(seeds[r] if p.training_seed == "pinned" else fresh[r])
                        pinned = store.checkout(row["vid"])
                        now = latest.checkout(latest.versions[-1])
                        now_id = cs.tree_md5({k: cs.md5_bytes(b) for k, b in now.items()})
                        with trace["pattern"]:
                            acc_p, m_p = dv.run_pipeline(ln.artifact(f"dataset@{row['vid']}", pinned, row["vid"]),
                                                         holdout, track["pattern"], p.model, again)
                        with trace["baseline"]:
                            acc_b, m_b = dv.run_pipeline(ln.artifact("dataset@latest", now, now_id), holdout,
                                                         track["baseline"], p.model, again, by_hand)
                        row.update(acc_pattern=acc_p, acc_baseline=acc_b, same_pattern=row["vid"] == cs.tree_md5(
                            {k: cs.md5_bytes(b) for k, b in pinned.items()}), same_baseline=now_id == row["vid"],
                            traced_pattern=track["pattern"].traces_to_source(m_p),
                            traced_baseline=track["baseline"].traces_to_source(m_b))
            lineage = {arm: list(ln.completeness(track[arm].completed_runs(), trace[arm].calls)) for arm in track}
            return {"rows": rows, "lineage": lineage,
                    "well_formed": {arm: t.well_formed() for arm, t in track.items()},
                    "events": {arm: len(t.events) for arm, t in track.items()}}
        return _cached("retrain", seed, p, compute)

    # ------------------------------------------------------------------ metrics
    def simulate(self, seed: int, p) -> Outcome:
        st, rt = self.part("storage", seed, p), self.part("retrain", seed, p)
        m = Measurements(self.arm_names + ("comparison",))
        raw, V = st["raw"], p.versions
        series = []
        for arm, store in STORE_ARMS.items():
            grown = np.asarray(st["grown"][store], float)
            steps = np.diff(grown)
            iv = batch_means(steps) if len(steps) >= 40 else None
            lo_hi = None if iv is None else tuple((grown[0] + len(steps) * b) / raw for b in (iv.low, iv.high))
            m.value(arm, "storage_overhead_x", st["on_disk"][store] / raw, lo_hi)
            m.value(arm, "new_kib_per_version", float(steps.mean()) / 1024 if len(steps) else 0.0,
                    None if iv is None else (iv.low / 1024, iv.high / 1024))
            m.share(arm, "restored_identical_pct", st["restored"][store], st["probed"])
            series.append(pd.DataFrame({"version": np.arange(V), "stored_mb": grown / 1e6, "arm": arm}))
        m.saving_pct("comparison", "chunk_vs_copies_saving_pct", ("pattern", "storage_overhead_x"),
                     ("baseline", "storage_overhead_x"))
        m.share("pattern", "chunks_reused_pct", st["chunks_seen"] - st["chunks_written"], st["chunks_seen"],
                missing="no file was chunked")
        rows = rt["rows"]
        spread = {arm: 100 * np.array([abs(r[f"acc_{arm}"] - r["acc0"]) for r in rows])
                  for arm in ("baseline", "pattern")}
        for arm in ("baseline", "pattern"):
            iv = _mean_interval(spread[arm])
            m.value(arm, "reproducibility_variance_pct", iv[0], iv[1:])
            m.share(arm, "same_data_pct", sum(r[f"same_{arm}"] for r in rows), len(rows))
            hit, done = rt["lineage"][arm]
            m.value(arm, "lineage_completeness_pct", 100.0 * hit / done, (100.0 * hit / done,) * 2,
                    missing="no transformation ran")  # a census of every execution, not a sample
            m.share(arm, "model_traced_pct", sum(r[f"traced_{arm}"] for r in rows), len(rows))
            m.value(arm, "accuracy_pct", 100 * float(np.mean([r[f"acc_{arm}"] for r in rows])))
        reps = pd.DataFrame([{"reproduction": f"v{r['version']}→v{r['version'] + p.versions_elapsed}", "arm": arm,
                              "delta_pct": 100 * (r[f"acc_{arm}"] - r["acc0"])} for r in rows
                             for arm in ("baseline", "pattern")])
        notes = [f"Latest version {raw / 1024:,.0f} KiB of CSV shards; "
                 f"{V} versions: copies {st['on_disk']['copies'] / 1e6:.1f} MB, DVC-style "
                 f"{st['on_disk']['file_dedup'] / 1e6:.1f} MB, chunks {st['on_disk']['chunk_dedup'] / 1e6:.1f} MB.",
                 f"Lineage: {rt['events']['pattern']} OpenLineage events (pinned), "
                 f"{rt['events']['baseline']} (ad hoc); "
                 f"by hand in the baseline: {', '.join(BY_HAND_ORDER[:p.untracked_steps]) or 'nothing'}."]
        return Outcome(m, series={"storage": pd.concat(series, ignore_index=True), "reproductions": reps}, notes=notes)

    def plots(self, result):
        out = []
        if "storage" in result.series:
            out.append(line_chart(result.series["storage"], "version", "stored_mb", "Bytes on disk as versions accrue",
                                  "version", "stored (MB)"))
        if "reproductions" in result.series:
            out.append(bar_chart(result.series["reproductions"], "reproduction", "delta_pct",
                                 "Reproduced − original accuracy", "accuracy change (points)", color="arm"))
        return out


def _mean_interval(x: np.ndarray) -> tuple[float, float, float]:
    """Mean with a t interval; identical samples give a zero-width interval (every retrain agreed)."""
    from sim.metrics import t_interval

    if len(x) and np.all(x == x[0]):
        return float(x[0]), float(x[0]), float(x[0])
    iv = t_interval(x)
    return iv.estimate, iv.low, iv.high


LAB = DataVersioningLab()
