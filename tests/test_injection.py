"""sim.injection: the container builds real predictors from configuration; swaps under load; routing; the suite."""
import threading

import numpy as np
import pytest

from sim import injection as inj


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return inj.make_artifacts(tmp_path_factory.mktemp("di"), seed=0)


def test_container_builds_each_configured_predictor_and_keeps_it(paths):
    c = inj.make_container(paths, "sklearn")
    first = c.model()
    assert isinstance(first, inj.SklearnPredictor) and c.model() is first  # a Singleton
    c.config.model.kind.from_value("torch")
    t = c.model()
    assert isinstance(t, inj.TorchPredictor) and t.version == "recommend-v1.3-torch"
    c.config.model.kind.from_value("sklearn")
    assert c.model() is first  # flipping back finds the built one
    c.model.providers["sklearn"].reset()
    assert c.model() is not first  # reset: built again


def test_both_real_predictors_are_accurate(paths):
    _, X, _, y = inj.digits()
    for cls, kind in ((inj.SklearnPredictor, "sklearn"), (inj.TorchPredictor, "torch")):
        model = cls(str(paths[kind]), kind)
        assert (model.predict(X) == y).mean() > 0.9 and model.nbytes > 0


def _blocking_server(paths, strategy):
    """A server whose torch predictor takes until ``release`` is set to build."""
    from dependency_injector import providers

    started, release = threading.Event(), threading.Event()

    class Slow(inj.TorchPredictor):
        def __init__(self, path, version):
            started.set()
            release.wait(5)
            super().__init__(path, version)

    c = inj.make_container(paths)
    c.model.providers["torch"].override(providers.Singleton(Slow, str(paths["torch"]), "slow-torch"))
    return inj.ModelServer(c, strategy), started, release


@pytest.mark.parametrize("strategy, fails", [("warm_atomic", False), ("unload_load", True)])
def test_a_request_during_the_build_is_served_only_by_warm_then_atomic(paths, strategy, fails):
    server, started, release = _blocking_server(paths, strategy)
    swapper = threading.Thread(target=server.swap, args=("torch",))
    swapper.start()
    assert started.wait(5)
    x = np.zeros((1, 64), np.float32)
    if fails:
        with pytest.raises(inj.NotLoaded):
            server.predict(x)
    else:
        assert server.predict(x)[0] == "recommend-v1.2-sklearn"  # the old model answers meanwhile
    release.set()
    swapper.join(5)
    assert server.predict(x)[0] == "slow-torch"


def test_warm_then_atomic_swaps_under_load_fail_no_request(paths):
    for _ in range(3):
        log = inj.swap_under_load(paths, "warm_atomic", threads=4, requests=600)
        assert log.ok.all() and log.t.size == 600
        assert set(log.version) == {"recommend-v1.2-sklearn", "recommend-v1.3-torch"}
        assert [k for _, k, _ in log.swaps] == ["torch", "sklearn"]
        assert all(0 < s < 5 for _, _, s in log.swaps)


def test_unload_then_load_fails_requests_that_meet_the_gap(paths):
    errors = [(~inj.swap_under_load(paths, "unload_load", threads=4, requests=600).ok).sum() for _ in range(5)]
    assert max(errors) > 0


def test_load_seconds_are_positive_and_finite(paths):
    for kind in inj.KINDS:
        x = inj.load_seconds(paths, kind, repeats=2)
        assert all(np.isfinite(x)) and min(x) > 0


def test_router_is_sticky_and_honours_weights():
    r = inj.VariantRouter([0.5, 0.25, 0.25])
    assert [r.route(i) for i in range(50)] == [r.route(i) for i in range(50)]
    counts = np.bincount([r.route(i) for i in range(20000)], minlength=3)
    assert np.allclose(counts / 20000, [0.5, 0.25, 0.25], atol=0.015)
    assert inj.split_test(counts, [0.5, 0.25, 0.25])[1] > 0.001
    assert inj.split_test(counts, [0.4, 0.3, 0.3])[1] < 1e-6


def test_split_test_matches_scipy():
    from scipy.stats import chisquare

    counts, w = np.array([480.0, 260.0, 260.0]), np.array([0.5, 0.25, 0.25])
    ref = chisquare(counts, counts.sum() * w)
    assert inj.split_test(counts, w) == pytest.approx((ref.statistic, ref.pvalue))


def test_split_test_with_a_variant_at_zero_percent():
    assert inj.split_test([100, 0, 0], [1.0, 0.0, 0.0]) == (0.0, 1.0)
    assert inj.split_test([99, 1, 0], [1.0, 0.0, 0.0])[1] == 0.0


def test_router_refuses_bad_weights():
    with pytest.raises(ValueError):
        inj.VariantRouter([0.0, 0.0])


def test_reference_profile_has_its_provenance_and_zero_warm_errors():
    ref = inj.reference_profile()
    assert ref["provenance"]["cpu"] and ref["provenance"]["generated_by"] == "bench/measure_di_swap.py"
    assert all(r["errors"] == 0 for r in ref["swaps"]["warm_atomic"])
    assert sum(r["errors"] for r in ref["swaps"]["unload_load"]) > 0


@pytest.mark.slow
def test_sample_suite_without_ml_libraries(paths):
    from sim.di_sample import MAX_VARIANTS, run_suite

    injected = run_suite("injected", True, paths)
    unit = [t for t in injected if not t.startswith("test_variant_artifact")]
    assert unit and all(injected[t] == "passed" for t in unit)
    assert sum(t.startswith("test_variant_artifact") and v != "passed" for t, v in injected.items()) == MAX_VARIANTS
    assert run_suite("hardwired", True, paths) == {"<collection>": "failed"}
    assert set(run_suite("injected", False, paths).values()) == {"passed"}
