"""Named, seeded random streams for common random numbers.

Every source of randomness (arrivals, service times, faults, ...) gets its own
numpy Generator derived from one root seed and the stream's *name*, not from the
order in which streams are requested. A baseline arm and a pattern arm that ask
for ``streams["arrivals"]`` therefore see exactly the same draws, so the
difference between the arms is the pattern's and not the dice's.
"""
from __future__ import annotations

import zlib

import numpy as np


def _name_key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


class Streams:
    """A family of independent numpy Generators keyed by name, all from one seed.

    Requesting the same name twice returns the same Generator object, so draws
    continue rather than repeat; ``fresh(name)`` returns a new Generator at the
    start of the stream (use it to give a second arm identical draws).
    """

    def __init__(self, seed: int = 0):
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self._cache: dict[str, np.random.Generator] = {}

    def seed_sequence(self, name: str) -> np.random.SeedSequence:
        return np.random.SeedSequence(entropy=self.seed, spawn_key=(_name_key(name),))

    def fresh(self, name: str) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(self.seed_sequence(name)))

    def __getitem__(self, name: str) -> np.random.Generator:
        gen = self._cache.get(name)
        if gen is None:
            gen = self._cache[name] = self.fresh(name)
        return gen
