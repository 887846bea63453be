"""Composition root: the only place that chooses adapters and wires them into the core."""
from pathlib import Path

from .core.scoring import Scorer

MODEL = "sklearn"
STORE = "sqlite"


def make_classifier(workdir, kind=MODEL):
    if kind == "sklearn":
        from .adapters.sklearn_model import SklearnClassifier

        return SklearnClassifier(Path(workdir) / "model.pkl")
    raise ValueError(f"unknown model kind {kind!r}")


def make_source(rows, workdir, kind=STORE):
    if kind == "sqlite":
        from .adapters.sqlite_store import SQLiteSource

        return SQLiteSource.create(str(Path(workdir) / "features.db"), rows)
    if kind == "memory":
        from .adapters.memory_store import MemorySource

        return MemorySource(rows)
    raise ValueError(f"unknown store kind {kind!r}")


def build_scorer(rows, workdir):
    return Scorer(make_classifier(workdir), make_source(rows, workdir))
