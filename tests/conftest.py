"""Suite-wide set-up: new, empty cache and data folders per test session, then the labs' caches.

Tests never read or write the user's cache or data: the controlling process makes one
temporary folder, points ``ARCHLAB_CACHE`` and ``XDG_CACHE_HOME`` at it through
``os.environ`` (also ``ARCHLAB_DATA``, the progress store; xdist workers and notebook kernels inherit them) and
removes it at the end, so every run tests a cold start. It then builds the labs'
expensive caches (trained models, extraction curves) once, in the controller only,
so parallel workers do not race to build the same entries and timed tests run warm.
"""
import os
import shutil
import sys
import tempfile
import time

_MADE: list[str] = []


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker: the controller already did it
        return
    root = tempfile.mkdtemp(prefix="archlab-test-cache-")
    _MADE.append(root)
    os.environ["ARCHLAB_CACHE"] = os.path.join(root, "archlab")
    os.environ["XDG_CACHE_HOME"] = os.path.join(root, "xdg")
    os.environ["ARCHLAB_DATA"] = os.path.join(root, "data")  # progress store: never the user's own
    os.environ["XDG_DATA_HOME"] = os.path.join(root, "xdg-data")
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
