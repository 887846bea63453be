"""The injected service, tested with a fake predictor (no ML library needed), plus the real-artifact checks."""
import pytest

from .behaviours import *  # noqa: F401,F403
from .service_injected import ScoringService


class FakePredictor:
    version = "fake-v0"

    def predict(self, rows):
        return [sum(r) % 10 for r in rows]  # deterministic, depends on the input


@pytest.fixture
def service():
    return ScoringService(FakePredictor())
