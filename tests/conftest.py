"""Suite-wide set-up: build the labs' caches once, before any worker starts.

Some labs cache expensive work on disk (trained models, extraction curves).
Building those caches here, in the controlling process only, keeps parallel
workers from racing to build the same files and keeps timed tests warm.
"""
import sys
import time


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker: the controller already did it
        return
    from labs import all_labs

    for lab in all_labs():
        t0 = time.perf_counter()
        lab.prepare(seed=0)
        spent = time.perf_counter() - t0
        if spent > 1:
            print(f"conftest: prepared {lab.id} caches in {spent:.1f} s", file=sys.stderr)
