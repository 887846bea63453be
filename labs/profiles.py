"""The stored latency profiles a lab reads, and the same models timed on this machine.

Faces reach the real-model layer (``sim.models``, ``sim.profiles``) through here:
``reference(name)`` loads a stored profile with its provenance, ``measure_here``
times the model now (imports torch: only on request) and ``compare`` sets the two
side by side.
"""
from __future__ import annotations


def reference(name: str):
    from sim.profiles import load_reference_profile

    return load_reference_profile(name)


def measure_here(name: str, repeats: int = 60, warmup: int = 10):
    from sim.models import measure_on_this_machine

    return measure_on_this_machine(name, repeats=repeats, warmup=warmup)


def compare(ref, live):
    from sim.profiles import compare_profiles

    return compare_profiles(ref, live)
