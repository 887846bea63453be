"""Suite-wide set-up: new, empty cache and data folders per test session, then the labs' caches.

Tests never read or write the user's cache or data: the controlling process makes
one temporary folder, points ``ARCHLAB_CACHE``, ``ARCHLAB_DATA`` and the XDG folders
at it through ``os.environ`` (xdist workers and notebook kernels started later
inherit them) and removes it at the end, so every run tests a cold start. When the
run covers whole folders (the CI command), it then builds the labs' expensive caches
(trained models, extraction curves) once, in the controller, so parallel workers do
not build the same entries twice; a run of named test files skips that.
"""
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (CI must not turn on a new random example);
# a test that wants more variety sets its own seed or example count.
settings.register_profile("archlab", derandomize=True, deadline=None)
settings.load_profile("archlab")

_MADE: list[str] = []


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker: the controller already did it
        return
    root = tempfile.mkdtemp(prefix="archlab-test-")
    _MADE.append(root)
    for var, sub in (("ARCHLAB_CACHE", "archlab-cache"), ("ARCHLAB_DATA", "archlab-data"),
                     ("XDG_CACHE_HOME", "xdg-cache"), ("XDG_DATA_HOME", "xdg-data")):
        os.environ[var] = os.path.join(root, sub)
    if not any(Path(a.split("::")[0]).is_dir() for a in config.args):
        return
    from labs import all_labs

    for lab in all_labs():
        t0 = time.perf_counter()
        lab.prepare(seed=0)
        spent = time.perf_counter() - t0
        if spent > 1:
            print(f"conftest: prepared {lab.id} caches in {spent:.1f} s", file=sys.stderr)


def pytest_unconfigure(config):
    if hasattr(config, "workerinput"):
        return
    while _MADE:
        shutil.rmtree(_MADE.pop(), ignore_errors=True)


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest leaves its script installed as ``__main__``; multiprocessing's spawn would then
    re-run that script in every child (a Dask nanny, a model server). Put the real one back after each test."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
