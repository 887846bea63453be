"""The behaviours both styles must show; each check module supplies the ``service`` fixture and ``LABELS``."""
import math
import os

import pytest

from . import MAX_VARIANTS

GOOD = [8.0] * 64


def test_scores_valid_features(service):
    out = service.score(GOOD)
    assert 0 <= out["label"] <= 9 and out["version"]


def test_rejects_wrong_length(service):
    with pytest.raises(ValueError):
        service.score([1.0] * 63)


def test_rejects_nan(service):
    with pytest.raises(ValueError):
        service.score([math.nan] + [1.0] * 63)


def test_rejects_negative_pixels(service):
    with pytest.raises(ValueError):
        service.score([-1.0] + [1.0] * 63)


def test_rejects_pixels_above_sixteen(service):
    with pytest.raises(ValueError):
        service.score([17.0] + [1.0] * 63)


def test_accepts_the_range_edges(service):
    assert "label" in service.score([0.0] * 32 + [16.0] * 32)


def test_batch_answers_each_row(service):
    assert len(service.score_batch([GOOD, GOOD, [0.0] * 64])) == 3


def test_empty_batch(service):
    assert service.score_batch([]) == []


def test_one_bad_row_rejects_the_batch(service):
    with pytest.raises(ValueError):
        service.score_batch([GOOD, [1.0] * 10])


def test_response_names_the_version(service):
    assert all(r["version"] == service.score(GOOD)["version"] for r in service.score_batch([GOOD, GOOD]))


def test_same_input_same_answer(service):
    assert service.score(GOOD) == service.score(GOOD)


def test_labels_are_plain_ints(service):
    assert isinstance(service.score(GOOD)["label"], int)


@pytest.mark.parametrize("k", range(MAX_VARIANTS))
def test_variant_artifact(k):
    """Each configured variant's real artifact loads and is accurate: needs the real libraries."""
    from sim.injection import SklearnPredictor, TorchPredictor, digits

    kind = "sklearn" if k % 2 == 0 else "torch"
    cls = SklearnPredictor if kind == "sklearn" else TorchPredictor
    model = cls(os.environ[f"DI_SAMPLE_{kind.upper()}"], f"v{k}")
    _, X, _, y = digits()
    assert (model.predict(X) == y).mean() > 0.9
