"""Injected model predictors: a dependency-injector container, swap strategies under load, variant routing.

The container follows the pattern dependency-injector documents for configuration-driven
choices: ``providers.Selector(config.model.kind, sklearn=..., torch=...)`` picks one of two
``providers.Singleton`` providers, each building a real predictor from an artifact path and a
version string in configuration. A Singleton builds on first call and keeps its instance until
``reset()``; the Selector reads the configuration on every call, so flipping
``config.model.kind`` changes what the next call returns. MLflow's registry moved from stages
to aliases that point at a version (REFERENCES §16); the configured kind/version pair plays the
alias here.

``ModelServer`` serves predictions from one reference that request threads read. Two ways to
change it, both driven by the container:

* ``warm_atomic``: build the new predictor through its provider and run one prediction
  (warm-up), flip the configuration, then replace the reference in one assignment. The old
  singleton stays built, so flipping back is another assignment (rollback warm).
* ``unload_load``: drop the reference and ``reset()`` the old singleton (free its memory
  first, as a memory-bound server must), flip the configuration and build the new one. A
  request that arrives in between finds no model: an error. Flipping back rebuilds the old
  one (rollback evicted).

``swap_under_load`` runs either strategy under a bounded threaded load (``threads`` client
threads, ``requests`` requests in all, a wall-clock cap) while a controller flips the model and
flips it back, and returns the per-request log. ``VariantRouter`` splits traffic over variants
by a hash of the request id (deterministic per id, like a sticky assignment); ``split_test``
checks a split with Pearson's chi-square (as ``scipy.stats.chisquare``).
"""
from __future__ import annotations

import hashlib
import pickle
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("sklearn", "torch")
STRATEGIES = ("warm_atomic", "unload_load")
HIDDEN = 128


class NotLoaded(RuntimeError):
    """The server has no model at this moment (between an unload and a load)."""


# ------------------------------------------------------------------ artifacts and predictors
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return train_test_split(X.astype(np.float32), y, test_size=0.25, random_state=0, stratify=y)


def make_artifacts(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Train a scikit-learn and a torch classifier on the digits and write their artifacts (once)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"sklearn": folder / f"logreg-{seed}.pkl", "torch": folder / f"mlp-{seed}.pt"}
    if all(p.exists() for p in paths.values()):
        return paths
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xtr, _, ytr, _ = digits()
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)).fit(Xtr, ytr)
    _atomic_write(paths["sklearn"], pickle.dumps(est, protocol=pickle.HIGHEST_PROTOCOL))
    from .profiles import torch_threads

    with torch.random.fork_rng(), torch_threads(1):  # one thread: reproducible and not starved on a shared box
        torch.manual_seed(seed)
        net = _mlp(torch)
        X, y = torch.tensor(Xtr / 16.0), torch.tensor(ytr)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(40):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(X), y)
            loss.backward()
            opt.step()
    import io

    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    _atomic_write(paths["torch"], buf.getvalue())
    return paths


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _mlp(torch):
    return torch.nn.Sequential(torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10))


class SklearnPredictor:
    def __init__(self, path: str, version: str):
        with open(path, "rb") as fh:
            self.model = pickle.load(fh)
        self.version = version
        self.nbytes = Path(path).stat().st_size

    def predict(self, X) -> np.ndarray:
        return self.model.predict(np.asarray(X, dtype=np.float32).reshape(-1, 64))


class TorchPredictor:
    def __init__(self, path: str, version: str):
        import torch

        self.torch = torch
        self.net = _mlp(torch)
        self.net.load_state_dict(torch.load(path, weights_only=True))
        self.net.eval()
        self.version = version
        self.nbytes = sum(p.numel() * p.element_size() for p in self.net.parameters())

    def predict(self, X) -> np.ndarray:
        with self.torch.no_grad():
            x = self.torch.tensor(np.asarray(X, dtype=np.float32).reshape(-1, 64) / 16.0)
            return self.net(x).argmax(dim=1).numpy()


def make_container(paths: dict[str, Path], kind: str = "sklearn"):
    """The container: a Selector over two Singletons, each a predictor built from configured path and version."""
    from dependency_injector import containers, providers

    class Container(containers.DeclarativeContainer):
        config = providers.Configuration()
        model = providers.Selector(
            config.model.kind,
            sklearn=providers.Singleton(SklearnPredictor, path=config.sklearn.path, version=config.sklearn.version),
            torch=providers.Singleton(TorchPredictor, path=config.torch.path, version=config.torch.version),
        )

    c = Container()
    c.config.from_dict({"model": {"kind": kind},
                        "sklearn": {"path": str(paths["sklearn"]), "version": "recommend-v1.2-sklearn"},
                        "torch": {"path": str(paths["torch"]), "version": "recommend-v1.3-torch"}})
    return c


# ------------------------------------------------------------------ serving and swapping
class ModelServer:
    """Request threads call ``predict``; a controller calls ``swap(kind)`` with one of ``STRATEGIES``."""

    def __init__(self, container, strategy: str):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.container, self.strategy = container, strategy
        self.current = container.model()
        self.warm_x = np.full((1, 64), 8.0, dtype=np.float32)

    def predict(self, x):
        model = self.current  # one read: a request uses one model from start to end
        if model is None:
            raise NotLoaded("no model loaded")
        return model.version, model.predict(x)

    def swap(self, kind: str) -> float:
        """Make ``kind`` the served model; returns the seconds from the command to the new model serving."""
        t0 = time.perf_counter()
        c = self.container
        old = c.config.model.kind()
        if self.strategy == "warm_atomic":
            new = c.model.providers[kind]()  # built (or already built) off the request path
            new.predict(self.warm_x)  # warm-up
            c.config.model.kind.from_value(kind)
            self.current = c.model()
        else:
            self.current = None
            if old != kind:
                c.model.providers[old].reset()  # the last reference goes: CPython frees it now
            c.config.model.kind.from_value(kind)
            self.current = c.model()
        return time.perf_counter() - t0


@dataclass
class SwapLog:
    t: np.ndarray  # request end, seconds from the start
    version: np.ndarray  # served version ('' for an error)
    ok: np.ndarray
    swaps: list  # (t_command, kind, seconds to serving)


def swap_under_load(paths: dict[str, Path], strategy: str, threads: int = 4, requests: int = 1200,
                    flips: tuple[str, ...] = ("torch", "sklearn"), max_wall_s: float = 20.0,
                    think_s: float = 0.0005) -> SwapLog:
    """Flip the model (and back) while ``threads`` clients send ``requests`` predictions in all."""
    _, Xte, _, _ = digits()
    server = ModelServer(make_container(paths), strategy)
    server.predict(Xte[:1])
    log_t, log_v = np.full(requests, np.nan), np.empty(requests, dtype=object)
    counter, lock, stop = [0], threading.Lock(), threading.Event()
    t0 = time.perf_counter()
    deadline = t0 + max_wall_s

    def client():
        while not stop.is_set():
            with lock:
                i = counter[0]
                counter[0] += 1
            if i >= requests or time.perf_counter() > deadline:
                return
            try:
                v, _ = server.predict(Xte[i % len(Xte)])
            except NotLoaded:
                v = ""
            log_t[i], log_v[i] = time.perf_counter() - t0, v
            time.sleep(think_s)

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    swaps = []
    for k, kind in enumerate(flips):
        target = requests * (k + 1) // (len(flips) + 1)
        while counter[0] < target and time.perf_counter() < deadline:
            time.sleep(0.001)
        at = time.perf_counter() - t0
        swaps.append((at, kind, server.swap(kind)))
    for w in workers:
        w.join(timeout=max_wall_s)
    stop.set()
    done = np.isfinite(log_t)
    order = np.argsort(log_t[done], kind="stable")
    version = np.where(log_v[done] == None, "", log_v[done])[order].astype(str)  # noqa: E711
    return SwapLog(log_t[done][order], version, version != "", swaps)


def load_seconds(paths: dict[str, Path], kind: str, repeats: int = 5) -> list[float]:
    """Seconds to build a predictor from its artifact and answer one warm-up prediction."""
    cls = SklearnPredictor if kind == "sklearn" else TorchPredictor
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cls(str(paths[kind]), kind).predict(np.zeros((1, 64), np.float32))
        out.append(time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------ variants
class VariantRouter:
    """Weighted split of request ids over variants by a hash of the id (the same id always lands alike)."""

    def __init__(self, weights, salt: str = "experiment"):
        w = np.asarray(weights, dtype=float)
        if w.ndim != 1 or w.size == 0 or np.any(w < 0) or w.sum() <= 0:
            raise ValueError("weights must be a non-empty list of non-negative numbers with a positive sum")
        self.cum = np.cumsum(w / w.sum())
        self.salt = salt.encode()

    def route(self, request_id: int) -> int:
        h = hashlib.blake2b(self.salt + str(request_id).encode(), digest_size=8).digest()
        u = int.from_bytes(h, "big") / 2 ** 64
        return int(min(np.searchsorted(self.cum, u, side="right"), self.cum.size - 1))


def split_test(counts, weights) -> tuple[float, float]:
    """Pearson's chi-square of observed counts against the configured weights: (statistic, p-value).

    The same numbers as ``scipy.stats.chisquare(counts, expected)``, from ``scipy.special.chdtrc``
    (scipy.stats costs seconds to import on a busy machine).
    """
    from scipy.special import chdtrc

    counts = np.asarray(counts, dtype=float)
    w = np.asarray(weights, dtype=float)
    live = w > 0  # a variant configured at 0% must get nothing; any request there rejects the split outright
    if counts[~live].sum() > 0:
        return float("inf"), 0.0
    counts, w = counts[live], w[live]
    expected = counts.sum() * w / w.sum()
    stat = float(np.sum((counts - expected) ** 2 / expected))
    return stat, float(chdtrc(counts.size - 1, stat)) if counts.size > 1 else 1.0


# ------------------------------------------------------------------ the measured profile
REFERENCE = Path(__file__).resolve().parent.parent / "data" / "profiles" / "di_swap.json"


def _cache():
    from .cache import DiskCache

    return DiskCache("injection", code=[__file__])


def artifacts_folder() -> Path:
    """Trained artifacts, per library versions (the cache folder) and this file's code."""
    cache = _cache()
    return cache.folder / f"artifacts-{cache.code[:16]}"


def versions() -> dict:
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("dependency-injector", "torch", "scikit-learn", "numpy"):
        out[dist] = metadata.version(dist)
    return out


def measure(repeats: int = 5, requests: int = 1200, threads: int = 4, suites: bool = True,
            generated_by: str = "sim.injection.measure") -> dict:
    """Swap runs per strategy, load times per kind, and the sample suite with the ML libraries blocked."""
    import datetime as dt
    import os

    from .mtls import cpu_model
    from .profiles import torch_threads

    paths = make_artifacts(artifacts_folder())
    out: dict = {"swaps": {}, "load_s": {}, "size_bytes": {}}
    with torch_threads(1):
        for kind in KINDS:
            out["load_s"][kind] = load_seconds(paths, kind, repeats=max(3, repeats))
            cls = SklearnPredictor if kind == "sklearn" else TorchPredictor
            out["size_bytes"][kind] = int(cls(str(paths[kind]), kind).nbytes)
        for strategy in STRATEGIES:
            runs = []
            for _ in range(repeats):
                log = swap_under_load(paths, strategy, threads=threads, requests=requests)
                versions_, counts = np.unique(log.version[log.ok], return_counts=True)
                runs.append({"requests": int(log.t.size), "errors": int((~log.ok).sum()),
                             "per_version": {str(v): int(c) for v, c in zip(versions_, counts)},
                             "swap_s": [round(s, 6) for _, _, s in log.swaps],
                             "wall_s": round(float(log.t[-1]), 4) if log.t.size else 0.0})
            out["swaps"][strategy] = runs
    if suites:
        from .di_sample import run_suite

        out["suite"] = {style: run_suite(style, True, paths) for style in ("injected", "hardwired")}
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        load = None
    out["provenance"] = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), **versions(), "loadavg_1m": load,
                         "threads": threads, "requests": requests, "repeats": repeats,
                         "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
                         "generated_by": generated_by}
    return out


def reference_profile() -> dict:
    import json

    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def live_profile(repeats: int = 3) -> dict:
    """This machine's measurement, kept in the disk cache per CPU and library versions."""
    from .mtls import cpu_model

    key = {"cpu": cpu_model(), **versions(), "repeats": repeats}
    cache = _cache()
    got = cache.get_json("profile", key)
    if got is None:
        got = measure(repeats=repeats, generated_by="sim.injection.live_profile")
        cache.put_json("profile", key, got)
    return got
