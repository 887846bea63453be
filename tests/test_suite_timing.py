"""sim.suite_timing: the suite-time formula, and one small live probe in fresh interpreters."""
import math

import numpy as np
import pytest

from sim.suite_timing import measure, suite_seconds


def test_suite_seconds_pays_setup_once_when_shared_and_builds_per_test_otherwise():
    s = [{"startup_s": 0.1, "import_s": 2.0, "setup_s": 0.5, "t_shared_s": 1e-3, "t_per_test_s": 4e-3}]
    assert suite_seconds(s, 100, "shared")[0] == pytest.approx(0.1 + 2.0 + 0.5 + 0.1)
    assert suite_seconds(s, 100, "per_test", runner_overhead_s=1.0)[0] == pytest.approx(1.0 + 0.1 + 2.0 + 0.4)
    with pytest.raises(ValueError):
        suite_seconds(s, 1, "module")


@pytest.mark.slow  # two fresh interpreters importing scikit-learn: 5-15 s
def test_live_probe_is_sane():
    from labs.q01_hexagonal_architecture import CODE, CONFIGS

    got = measure(CODE, {k: CONFIGS[k] for k in ("fakes", "sklearn_sqlite")}, repeats=1, rounds=1)
    fake, real = got["fakes"][0], got["sklearn_sqlite"][0]
    for sample in (fake, real):
        assert sample["failures"] == []
        assert all(math.isfinite(sample[k]) and sample[k] >= 0 for k in
                   ("startup_s", "import_s", "setup_s", "t_shared_s", "t_per_test_s"))
    # importing scikit-learn costs more than the core; a real prediction more than a fake's arithmetic
    assert real["import_s"] > fake["import_s"]
    assert real["t_shared_s"] > fake["t_shared_s"]
    assert real["t_per_test_s"] > real["t_shared_s"]  # rebuilding a SQLite store and loading a model per test
    assert np.all(suite_seconds(got["sklearn_sqlite"], 100, "shared") > suite_seconds(got["fakes"], 100, "shared"))
