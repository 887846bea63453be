"""The simulator benchmark, reached by faces through labs (sim.bench does the work)."""
from sim.bench import report, run

__all__ = ["report", "run"]
