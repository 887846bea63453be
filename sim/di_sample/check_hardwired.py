"""The hard-wired service: its tests can only run against the model it builds itself."""
import pytest

from .behaviours import *  # noqa: F401,F403
from .service_hardwired import ScoringService


@pytest.fixture(scope="module")
def service():
    return ScoringService()
