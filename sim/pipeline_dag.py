"""A real ingest → deploy pipeline as a networkx DAG, with steps cached by input hash + code digest (Q2).

Steps (plain functions on scikit-learn's digits): ``ingest`` (the source snapshot: CSV
bytes), ``validate`` (schema, no missing values, one row per id), ``features`` (pixels
plus row and column ink sums, in a column order the step decides), ``split`` (train/test
by a hash of the id), ``train`` (a random forest), ``evaluate`` (test accuracy),
``register`` (pickle the model, hash it, add a version to a file registry) and
``deploy`` (point the ``champion`` alias at that version and load it back).

Each step's cache key follows DVC's run cache and ``dvc repro`` (REFERENCES §19): the
SHA-256 of its lock entry — the digest of the step's source code, the digests of its
inputs and its parameters (``sim.content_store.step_key``). A step whose key is in the
cache is skipped; a step that reruns but produces the same bytes leaves its dependants
cached (early cut-off, as a changed dep hash is what makes DVC rerun a stage).

The registry follows MLflow's model registry with aliases (REFERENCES §16): versions are
numbered 1, 2, ...; an alias (``champion``) names one version; a rollback moves the alias
back, the stored bytes do not change. Where it differs: a JSON file, no server.

``rebuild_variants`` builds the pipeline from scratch once per combination of the ad hoc
causes and returns each model's SHA-256 and accuracy; ``python -m sim.pipeline_dag`` runs
it in a fresh interpreter, so ``PYTHONHASHSEED`` and unseeded training behave as in a new
job (``--write`` records n such processes in ``data/profiles/q02_rebuilds.json``). The
causes are: ``unseeded`` (random_state=None), ``mutated`` (a "latest" input that changed
since the original: rows appended and relabelled) and ``set_columns`` (feature columns
taken from a Python set, whose order depends on PYTHONHASHSEED).
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import io
import json
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import networkx as nx
import numpy as np
import pandas as pd

from .content_store import content_bytes, digest_bytes, step_key

STEP_NAMES = ("ingest", "validate", "features", "split", "train", "evaluate", "register", "deploy")
EDGES = (("ingest", "validate"), ("validate", "features"), ("features", "split"), ("split", "train"),
         ("split", "evaluate"), ("train", "evaluate"), ("train", "register"), ("evaluate", "register"),
         ("register", "deploy"))
N_TREES = 25


# ------------------------------------------------------------------ the data
def source_bytes(mutated: bool = False, seed: int = 0) -> bytes:
    """The digits data set as CSV (id, 64 pixels, label); ``mutated``: the later "latest" — 10% more rows
    (noisy copies of existing images) and 2% of labels rewritten, as data that kept changing would be."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.data.astype(int), d.target.astype(int)
    if mutated:
        rng = np.random.default_rng(seed + 1)
        extra = rng.choice(len(y), size=len(y) // 10, replace=False)
        X = np.vstack([X, np.clip(X[extra] + rng.integers(-1, 2, X[extra].shape), 0, 16)])
        y = np.concatenate([y, y[extra]])
        flip = rng.choice(len(y), size=len(y) // 50, replace=False)
        y[flip] = rng.integers(0, 10, flip.size)
    df = pd.DataFrame(X, columns=[f"px{i:02d}" for i in range(64)])
    df.insert(0, "id", np.arange(len(y)))
    df["label"] = y
    return df.to_csv(index=False).encode()


# ------------------------------------------------------------------ the steps
def ingest(source: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(source))


def validate(df: pd.DataFrame) -> pd.DataFrame:
    if df.isna().any().any() or "label" not in df or "id" not in df:
        raise ValueError("the input has missing values or lacks id/label")
    return df.drop_duplicates("id", keep="last").sort_values("id", kind="stable").reset_index(drop=True)


def features(df: pd.DataFrame, set_columns: bool = False) -> pd.DataFrame:
    img = df[[f"px{i:02d}" for i in range(64)]].to_numpy().reshape(-1, 8, 8)
    extra = {f"row{r}": img[:, r, :].sum(axis=1) for r in range(8)}
    extra.update({f"col{c}": img[:, :, c].sum(axis=1) for c in range(8)})
    names = {f"px{i:02d}" for i in range(64)} | set(extra)
    order = list(names) if set_columns else sorted(names)  # a set's order follows PYTHONHASHSEED
    table = pd.concat([df, pd.DataFrame(extra, index=df.index)], axis=1)
    return table[["id"] + order + ["label"]]


def split(table: pd.DataFrame, test_pct: int = 25) -> dict:
    bucket = (table["id"].to_numpy().astype(np.uint64) * np.uint64(2654435761)) % np.uint64(100)
    test = bucket < np.uint64(test_pct)
    cols = [c for c in table.columns if c not in ("id", "label")]
    X, y = table[cols].to_numpy(float), table["label"].to_numpy(int)
    return {"columns": cols, "X_train": X[~test], "y_train": y[~test], "X_test": X[test], "y_test": y[test]}


def train(data: dict, seed: int | None = 0, n_trees: int = N_TREES):
    from sklearn.ensemble import RandomForestClassifier
    from threadpoolctl import threadpool_limits

    model = RandomForestClassifier(n_estimators=n_trees, random_state=seed, n_jobs=1)
    with threadpool_limits(limits=1):
        model.fit(data["X_train"], data["y_train"])
    return model


def evaluate(data: dict, model) -> dict:
    return {"accuracy": float((model.predict(data["X_test"]) == data["y_test"]).mean()), "n_test": len(data["y_test"])}


def register(model, metrics: dict, registry: str = "") -> dict:
    blob = pickle.dumps(model, protocol=4)
    entry = {"sha256": hashlib.sha256(blob).hexdigest(), "accuracy": metrics["accuracy"], "bytes": len(blob)}
    if registry:
        Registry(registry).add(blob, entry)
    return entry


def deploy(entry: dict, registry: str = "", replicas: int = 2) -> dict:
    if registry:
        reg = Registry(registry)
        version = reg.version_of(entry["sha256"])
        reg.set_alias("champion", version)
        if hashlib.sha256(reg.load("champion")).hexdigest() != entry["sha256"]:
            raise ValueError("the champion alias does not serve the registered bytes")
    return {"serving": entry["sha256"], "replicas": replicas}


def validate_refactored(df: pd.DataFrame) -> pd.DataFrame:
    """The same checks as ``validate``, rewritten (a refactor: new code, same output)."""
    missing = [c for c in ("id", "label") if c not in df]
    if missing or df.isna().to_numpy().any():
        raise ValueError("the input has missing values or lacks id/label")
    deduped = df.drop_duplicates(subset="id", keep="last")
    return deduped.sort_values(by="id", kind="stable").reset_index(drop=True)


def features_v2(df: pd.DataFrame, set_columns: bool = False) -> pd.DataFrame:
    """``features`` plus the two diagonals' ink (a feature change reaching everything downstream)."""
    table = features(df, set_columns)
    img = df[[f"px{i:02d}" for i in range(64)]].to_numpy().reshape(-1, 8, 8)
    diag = pd.DataFrame({"diag0": np.trace(img, axis1=1, axis2=2),
                         "diag1": np.trace(img[:, :, ::-1], axis1=1, axis2=2)}, index=df.index)
    return pd.concat([table.drop(columns="label"), diag, table[["label"]]], axis=1)


def evaluate_v2(data: dict, model) -> dict:
    """``evaluate`` plus macro-F1 (new metric code: the registered entry changes, the model does not)."""
    from sklearn.metrics import f1_score

    pred = model.predict(data["X_test"])
    return {"accuracy": float((pred == data["y_test"]).mean()), "n_test": len(data["y_test"]),
            "macro_f1": float(f1_score(data["y_test"], pred, average="macro"))}


def ingest_table(source: bytes) -> pd.DataFrame:
    """A generic CSV reader another project can share (ids added when the table has none)."""
    df = pd.read_csv(io.BytesIO(source))
    return df if "id" in df else df.assign(id=np.arange(len(df)))


def features_ratios(df: pd.DataFrame, set_columns: bool = False) -> pd.DataFrame:
    """A tabular project's own features: standardised columns (its bespoke step)."""
    cols = sorted(c for c in df.columns if c not in ("id", "label"))
    z = (df[cols] - df[cols].mean()) / (df[cols].std() + 1e-12)
    return pd.concat([df[["id"]], z, df[["label"]]], axis=1)


def features_logs(df: pd.DataFrame, set_columns: bool = False) -> pd.DataFrame:
    """Another project's own features: log1p of the non-negative columns."""
    cols = sorted(c for c in df.columns if c not in ("id", "label"))
    return pd.concat([df[["id"]], np.log1p(df[cols].clip(lower=0)), df[["label"]]], axis=1)


def dataset_csv(name: str) -> bytes:
    """A shipped data set as CSV with a label column: digits, wine or breast_cancer."""
    if name == "digits":
        return source_bytes()
    from sklearn import datasets

    d = getattr(datasets, f"load_{name}")()
    df = pd.DataFrame(d.data, columns=[f"c{i:02d}" for i in range(d.data.shape[1])])
    df["label"] = d.target
    return df.to_csv(index=False).encode()


STEPS: dict[str, Callable] = {f.__name__: f for f in (ingest, validate, features, split, train, evaluate,
                                                      register, deploy)}


# the change types: what each edits, on top of the original build
CHANGES = {
    "data": {"mutated": True},
    "features_code": {"steps": {"features": features_v2}},
    "hyperparameter": {"params": {"train": {"n_trees": 40}}},
    "evaluation_code": {"steps": {"evaluate": evaluate_v2}},
    "deploy_config": {"params": {"deploy": {"replicas": 3}}},
    "refactor": {"steps": {"validate": validate_refactored}},
}

# the lab's own catalogue of projects: which function each project uses for each step
PROJECTS = {
    "digits": dict(STEPS),
    "wine": {**STEPS, "ingest": ingest_table, "features": features_ratios},
    "breast_cancer": {**STEPS, "ingest": ingest_table, "features": features_logs},
}


def code_reuse(projects) -> tuple[int, int]:
    """(components used by two or more of ``projects``, distinct components), components told apart by code digest."""
    users: dict[str, set] = {}
    for name in projects:
        for fn in PROJECTS[name].values():
            users.setdefault(code_digest(fn), set()).add(name)
    return sum(len(u) >= 2 for u in users.values()), len(users)


def measure_reruns(data_seed: int = 0) -> dict[str, list[str]]:
    """Build once, then apply each change on top of the original: the steps each change really reran."""
    cache = StepCache()
    base = source_bytes(False, data_seed)
    first = run_pipeline(base, cache)
    out = {"first_build": first.ran, "none": run_pipeline(base, cache).ran}
    for name, change in CHANGES.items():
        src = source_bytes(True, data_seed) if change.get("mutated") else base
        out[name] = run_pipeline(src, cache, change.get("steps"), change.get("params")).ran
    return out


def step_graph() -> nx.DiGraph:
    """The pipeline as a DAG of step names."""
    g = nx.DiGraph()
    g.add_nodes_from(STEP_NAMES)
    g.add_edges_from(EDGES)
    assert nx.is_directed_acyclic_graph(g)
    return g


def code_digest(fn: Callable) -> str:
    """SHA-256 of a step's source text (what ``cmd`` is to a DVC stage)."""
    return digest_bytes(inspect.getsource(fn).encode())


# ------------------------------------------------------------------ a registry with aliases
class Registry:
    """Model versions 1, 2, ... with their bytes, and aliases naming a version (MLflow's aliases)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.index = self.folder / "registry.json"

    def _read(self) -> dict:
        return json.loads(self.index.read_text()) if self.index.exists() else {"versions": [], "aliases": {}}

    def _write(self, state: dict) -> None:
        tmp = self.index.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, sort_keys=True))
        os.replace(tmp, self.index)

    def add(self, blob: bytes, entry: dict) -> int:
        state = self._read()
        for k, v in enumerate(state["versions"], start=1):
            if v["sha256"] == entry["sha256"]:
                return k
        (self.folder / f"{entry['sha256']}.pkl").write_bytes(blob)
        state["versions"].append(entry)
        self._write(state)
        return len(state["versions"])

    def version_of(self, sha: str) -> int:
        return 1 + [v["sha256"] for v in self._read()["versions"]].index(sha)

    def set_alias(self, alias: str, version: int) -> None:
        state = self._read()
        if not 1 <= version <= len(state["versions"]):
            raise ValueError(f"no version {version}")
        state["aliases"][alias] = version
        self._write(state)

    def alias(self, alias: str) -> int:
        return self._read()["aliases"][alias]

    def load(self, alias: str) -> bytes:
        state = self._read()
        return (self.folder / f"{state['versions'][state['aliases'][alias] - 1]['sha256']}.pkl").read_bytes()


# ------------------------------------------------------------------ the cached runner
@dataclass
class StepCache:
    """Outputs by step key, in memory (the runner's cache); counts hits."""

    outputs: dict = field(default_factory=dict)


@dataclass
class PipelineRun:
    ran: list[str]
    reused: list[str]
    digests: dict[str, str]
    outputs: dict


def run_pipeline(source: bytes, cache: StepCache, steps: dict[str, Callable] | None = None,
                 params: dict[str, dict] | None = None) -> PipelineRun:
    """Run the DAG in topological order; a step runs only when its key (code, input digests, params) is new."""
    steps = {**STEPS, **(steps or {})}
    params = params or {}
    g = step_graph()
    out, dig, ran, reused = {}, {}, [], []
    for name in nx.topological_sort(g):
        preds = sorted(g.predecessors(name), key=STEP_NAMES.index)
        inputs = {p: dig[p] for p in preds} if preds else {"source": digest_bytes(source)}
        kw = params.get(name, {})
        key = step_key(code_digest(steps[name]), inputs, kw)
        if key in cache.outputs:
            out[name], dig[name] = cache.outputs[key]
            reused.append(name)
            continue
        args = [out[p] for p in preds] if preds else [source]
        value = steps[name](*args, **kw)
        out[name], dig[name] = value, digest_bytes(_identity(name, value))
        cache.outputs[key] = (value, dig[name])
        ran.append(name)
    return PipelineRun(ran, reused, dig, out)


def _identity(name: str, value) -> bytes:
    """Bytes that identify a step's output (a model by its pickle, the rest by content)."""
    if name == "train":
        return pickle.dumps(value, protocol=4)
    return content_bytes(value)


def variant_name(mutated: bool, unseeded: bool, set_columns: bool) -> str:
    return f"m{int(mutated)}u{int(unseeded)}s{int(set_columns)}"


VARIANTS = tuple(variant_name(m, u, s) for m in (0, 1) for u in (0, 1) for s in (0, 1))


def rebuild_variants(data_seed: int = 0) -> dict[str, dict]:
    """Every combination of the three ad hoc causes, built in this process from scratch: model SHA-256 and
    accuracy per variant. Steps with the same code, inputs and parameters are shared (the step cache); an
    unseeded training never is, since no two variants train unseeded on the same inputs."""
    cache, out = StepCache(), {}
    sources = {m: source_bytes(bool(m), data_seed) for m in (0, 1)}
    for name in VARIANTS:
        m, u, s = (int(name[i]) for i in (1, 3, 5))
        run = run_pipeline(sources[m], cache, params={"features": {"set_columns": bool(s)},
                                                      "train": {"seed": None if u else 0}})
        out[name] = {"sha256": run.outputs["register"]["sha256"], "accuracy": run.outputs["evaluate"]["accuracy"]}
    return out


def rebuild_in_subprocess(hashseed: int, data_seed: int = 0, timeout_s: float = 300.0) -> dict:
    """``rebuild_variants`` in a fresh interpreter with ``PYTHONHASHSEED=hashseed``; the child ends with the call."""
    env = {**os.environ, "PYTHONHASHSEED": str(int(hashseed)), "OMP_NUM_THREADS": "1"}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "sim.pipeline_dag", "--data-seed", str(data_seed)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, cwd=root, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def hashseeds(n: int, seed: int = 0) -> list[int]:
    """The PYTHONHASHSEED of each fresh process: an uncontrolled environment, drawn once from ``seed``."""
    return [int(x) for x in np.random.default_rng(seed).integers(1, 2 ** 32 - 1, n)]


def measure_rebuilds(n: int = 8, seed: int = 0) -> dict:
    """``n`` fresh-process builds (the first is the original), each with every variant, plus provenance."""
    from .profiles import _loadavg, cpu_model
    from sklearn import __version__ as skv

    seeds = hashseeds(n, seed)
    builds = [{"hashseed": h, "variants": rebuild_in_subprocess(h)} for h in seeds]
    return {"builds": builds, "provenance": {
        "cpu": cpu_model(), "python": sys.version.split()[0], "sklearn": skv, "numpy": np.__version__,
        "pandas": pd.__version__, "loadavg_1m": _loadavg(), "generated_by": "python -m sim.pipeline_dag --write",
        "date": __import__("datetime").datetime.now(__import__("datetime").timezone.utc).replace(
            microsecond=0).isoformat()}}


REFERENCE = Path(__file__).resolve().parent.parent / "data" / "profiles" / "q02_rebuilds.json"


def reference_rebuilds() -> dict:
    """The committed measurement (every machine reads the same builds, so runs are reproducible)."""
    return json.loads(REFERENCE.read_text())


def live_rebuilds(n: int) -> dict:
    """Builds measured on this machine, kept in the disk cache by CPU model, n and library versions."""
    from .cache import DiskCache
    from .profiles import cpu_model

    cache = DiskCache("q02_rebuilds", code=[__file__])
    key = {"n": int(n), "cpu": cpu_model(), "pandas": pd.__version__}
    hit = cache.get_json("rebuilds", key)
    if hit is None:
        hit = measure_rebuilds(n)
        cache.put_json("rebuilds", key, hit)
    return hit


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Q2 rebuilds: one process's variants, or --write the reference")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="measure n fresh-process builds into data/profiles")
    ap.add_argument("--n", type=int, default=8)
    a = ap.parse_args(argv)
    if a.write:
        REFERENCE.write_text(json.dumps(measure_rebuilds(a.n), indent=1, sort_keys=True) + "\n")
        print(f"wrote {REFERENCE}")
        return
    print(json.dumps(rebuild_variants(a.data_seed)))


if __name__ == "__main__":
    main()
