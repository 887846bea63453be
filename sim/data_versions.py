"""A tabular data set that changes version by version, and the pipeline trained on it (Q20).

``VersionedTable`` draws rows from scikit-learn's ``make_classification`` (seeded) and
applies incremental changes per version: ``update`` (the row is re-measured, features
plus small noise, and re-annotated by a noisy labeller, label drawn uniformly; with
``change_kind="relabel"`` the re-annotation follows a new policy that folds class 1 into 2),
``append`` (new rows from the same generator, new ids) and ``delete``. Its snapshot
is a folder of CSV shards by id range (``part-00000.csv`` ...), rows in id order, as
a data set tracked by DVC as a directory would be. A fixed holdout drawn from the same
generator never changes; every model is scored on it.

The pipeline's transformations are plain functions (``ingest``, ``clean``,
``featurize``, ``split``, ``train``, ``evaluate``); ``run_pipeline`` calls each one
through a ``sim.lineage.Tracker`` or, for the steps named in ``by_hand``, directly,
as a person running a cell in a notebook would.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from .lineage import Artifact, Tracker, artifact
from .rng import Streams

N_FEATURES = 16
N_CLASSES = 3
HOLDOUT_ROWS = 1500
OPS = ("update", "append", "delete")
CHANGE_MIX = {"mixed": (0.5, 0.3, 0.2), "update": (1.0, 0.0, 0.0), "append": (0.0, 1.0, 0.0),
              "relabel": (1.0, 0.0, 0.0)}
STEPS = ("ingest", "clean", "featurize", "split", "train", "evaluate")


def _line(rid: int, x: np.ndarray, y: int) -> bytes:
    return (f"{rid}," + ",".join(f"{v:.3f}" for v in x) + f",{y}\n").encode()


HEADER = ("id," + ",".join(f"f{i:02d}" for i in range(N_FEATURES)) + ",label\n").encode()


class VersionedTable:
    """Rows keyed by id; ``advance()`` applies one version's changes; ``snapshot()`` gives the CSV shards."""

    def __init__(self, seed: int, rows: int, versions: int, change_pct: float, change_kind: str = "mixed",
                 shards: int = 16):
        from sklearn.datasets import make_classification

        if change_kind not in CHANGE_MIX:
            raise ValueError(f"change_kind must be one of {tuple(CHANGE_MIX)}")
        self.streams = Streams(seed)
        self.rows0, self.shards = int(rows), int(shards)
        self.per_version = int(round(change_pct / 100.0 * rows))
        self.mix = np.array(CHANGE_MIX[change_kind])
        self.systematic = change_kind == "relabel"
        pool = HOLDOUT_ROWS + self.rows0 + self.per_version * max(0, versions - 1) + 1
        X, y = make_classification(n_samples=pool, n_features=N_FEATURES, n_informative=6, n_redundant=2,
                                   n_classes=N_CLASSES, n_clusters_per_class=1, class_sep=1.0, flip_y=0.0,
                                   random_state=int(self.streams.fresh("data").integers(2 ** 31)))
        self.holdout = (X[:HOLDOUT_ROWS], y[:HOLDOUT_ROWS])
        self._X, self._y, self._next = X, y, HOLDOUT_ROWS
        self.feat: dict[int, np.ndarray] = {}
        self.label: dict[int, int] = {}
        self.lines: dict[int, bytes] = {}  # insertion order = id order (appends get larger ids)
        self.width = max(1, math.ceil(self.rows0 / self.shards))
        self.next_id = 0
        for _ in range(self.rows0):
            self._append()
        self.version = 0
        self.changes = {op: 0 for op in OPS}

    def _append(self) -> None:
        rid, k = self.next_id, self._next
        self.feat[rid], self.label[rid] = self._X[k].copy(), int(self._y[k])
        self.lines[rid] = _line(rid, self.feat[rid], self.label[rid])
        self.next_id, self._next = rid + 1, k + 1

    def advance(self) -> dict[str, int]:
        """Apply one version's ``per_version`` changes (ops drawn from the mix); the counts per op."""
        rng = self.streams["changes"]
        ops = rng.choice(3, size=self.per_version, p=self.mix)
        counts = {op: int((ops == i).sum()) for i, op in enumerate(OPS)}
        touched = min(counts["update"] + counts["delete"], len(self.lines) - 1)
        ids = np.array(list(self.lines))
        picked = rng.choice(ids, size=max(touched, 0), replace=False) if touched > 0 else np.array([], int)
        upd, dele = picked[:counts["update"]], picked[counts["update"]:]
        for rid in map(int, upd):
            self.feat[rid] = self.feat[rid] + rng.normal(0.0, 0.05, N_FEATURES)
            drawn = int(rng.integers(N_CLASSES))
            # relabel: a new labelling policy folds class 1 into class 2 (a systematic, not a random, error)
            self.label[rid] = (2 if self.label[rid] == 1 else self.label[rid]) if self.systematic else drawn
            self.lines[rid] = _line(rid, self.feat[rid], self.label[rid])
        for rid in map(int, dele):
            del self.lines[rid], self.feat[rid], self.label[rid]
        for _ in range(counts["append"]):
            self._append()
        self.version += 1
        for op in OPS:
            self.changes[op] += counts[op]
        return counts

    def snapshot(self) -> dict[str, bytes]:
        """The current version as ``{relpath: CSV bytes}``, one shard per id range of ``width`` rows."""
        parts: dict[int, list[bytes]] = {}
        for rid, line in self.lines.items():
            parts.setdefault(rid // self.width, []).append(line)
        return {f"part-{k:05d}.csv": HEADER + b"".join(v) for k, v in sorted(parts.items())}


# ------------------------------------------------------------------ the pipeline's transformations
def ingest(files: dict) -> pd.DataFrame:
    """Read every CSV shard of a snapshot into one table."""
    frames = [pd.read_csv(io.BytesIO(files[k])) for k in sorted(files)]
    return pd.concat(frames, ignore_index=True)


def clean(df: pd.DataFrame) -> pd.DataFrame:
    """Drop incomplete rows and repeated ids (last write wins), sort by id."""
    out = df.dropna().drop_duplicates("id", keep="last").sort_values("id", kind="stable")
    return out.reset_index(drop=True)


def featurize(df: pd.DataFrame) -> dict:
    """Standardise the features (statistics of this table, kept for scoring the holdout)."""
    X = df[[c for c in df.columns if c.startswith("f")]].to_numpy(float)
    mean, std = X.mean(axis=0), X.std(axis=0) + 1e-12
    return {"id": df["id"].to_numpy(), "X": (X - mean) / std, "y": df["label"].to_numpy(int),
            "mean": mean, "std": std}


def split(feat: dict, train_pct: int = 80) -> dict:
    """Train rows by a hash of the id (a row stays on its side across versions); the rest is validation."""
    bucket = (feat["id"].astype(np.uint64) * np.uint64(2654435761)) % np.uint64(100)
    keep = bucket < np.uint64(train_pct)
    return {"X": feat["X"][keep], "y": feat["y"][keep], "mean": feat["mean"], "std": feat["std"]}


def train(data: dict, model: str = "logreg", seed: int = 0):
    """Fit a real scikit-learn classifier: lbfgs logistic regression (deterministic) or shuffled SGD."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from threadpoolctl import threadpool_limits

    if model == "logreg":
        est = LogisticRegression(max_iter=300)
    else:
        est = SGDClassifier(loss="log_loss", max_iter=15, tol=None, random_state=int(seed))
    with threadpool_limits(limits=1):  # BLAS threads on a small problem only fight over a shared machine
        est.fit(data["X"], data["y"])
    return {"model": est, "mean": data["mean"], "std": data["std"]}


def evaluate(fitted: dict, holdout: tuple) -> float:
    """Accuracy on the fixed holdout, standardised with the training data's statistics."""
    X, y = holdout
    pred = fitted["model"].predict((X - fitted["mean"]) / fitted["std"])
    return float((pred == y).mean())


TRANSFORMS = (ingest, clean, featurize, split, train, evaluate)


def run_pipeline(files_art: Artifact, holdout_art: Artifact, tracker: Tracker, model: str = "logreg",
                 seed: int = 0, by_hand: tuple[str, ...] = ()) -> tuple[float, Artifact]:
    """Source version → ingest → clean → featurize → split → train → evaluate; returns (accuracy, model).

    Steps in ``by_hand`` run as direct calls: they execute, but the tracker never sees them.
    """
    def step(fn, inputs, output, **kw):
        if fn.__name__ in by_hand:
            return artifact(output, fn(*[a.value for a in inputs], **kw))
        return tracker.run(fn, inputs, output, **kw)

    tracker.record_source(files_art)
    tracker.record_source(holdout_art)
    raw = step(ingest, [files_art], "raw_table")
    cleaned = step(clean, [raw], "cleaned")
    feats = step(featurize, [cleaned], "features")
    parts = step(split, [feats], "train_split")
    fitted = step(train, [parts], "model", model=model, seed=seed)
    acc = step(evaluate, [fitted, holdout_art], "metrics")
    return acc.value, fitted
