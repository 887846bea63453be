"""The two ports the core talks through; adapters implement them, the core never imports an adapter."""
from typing import Mapping, Protocol, Sequence


class Classifier(Protocol):
    """Anything that turns a validated feature vector into a probability of the positive class."""

    name: str

    def probability(self, vector: Sequence[float]) -> float: ...


class FeatureSource(Protocol):
    """Anything that returns one entity's raw feature row, or raises LookupError."""

    def row(self, entity_id: str) -> Mapping[str, float]: ...
