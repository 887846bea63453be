"""sim.geo: distances, the distance fit, and the provenance of data/rtt_matrix.json."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sim.geo import (DEFAULT_PATH, GeoDataError, build_matrix, fit_distance_model, great_circle_km,
                     load_rtt_matrix, nearest_by_distance)


@pytest.fixture(scope="module")
def geo():
    return load_rtt_matrix()


def test_great_circle_known_distances():
    assert great_circle_km(0, 0, 0, 1) == pytest.approx(2 * np.pi * 6371 / 360, rel=1e-9)
    assert great_circle_km(0, 0, 0, 180) == pytest.approx(np.pi * 6371, rel=1e-9)
    assert great_circle_km(51.5074, -0.1278, 48.8566, 2.3522) == pytest.approx(344, abs=2)  # London-Paris
    assert great_circle_km(10, 20, 10, 20) == 0


def test_fit_recovers_an_exact_line():
    d = np.array([100.0, 1000.0, 5000.0, 12000.0])
    fit = fit_distance_model(d, 7.0 + 0.015 * d)
    assert fit.intercept_ms == pytest.approx(7.0)
    assert fit.ms_per_km == pytest.approx(0.015)
    assert fit.rmse_ms == pytest.approx(0.0, abs=1e-9)


def test_file_is_consistent_with_its_inputs(geo):
    raw = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    rebuilt = build_matrix(raw)
    assert rebuilt["derivation"] == raw["derivation"]
    assert rebuilt["matrix"] == raw["matrix"]
    assert geo.backbone_ms.shape == (len(geo.areas), len(geo.regions))


def test_measured_entries_are_the_table_values(geo):
    raw = geo.raw
    table = {frozenset((p["a"], p["b"])): p["rtt_ms"] for p in raw["measured_pairs"]}
    for i, home in enumerate(geo.home_regions):
        for j, region in enumerate(geo.regions):
            src = geo.source[i, j]
            if region == home:
                assert src == "same_region" and geo.backbone_ms[i, j] == 0
            elif frozenset((home, region)) in table:
                lo, hi = table[frozenset((home, region))]
                assert src == "table" and geo.backbone_ms[i, j] == pytest.approx((lo + hi) / 2)
            else:
                assert src == "derived"
    # a few pairs REFERENCES.md section 13 lists, read back through the user areas
    us_east, europe = geo.area_index("US East"), geo.area_index("Europe")
    assert geo.backbone_ms[us_east, geo.region_index("Southeast Asia")] == 235.5
    assert geo.backbone_ms[us_east, geo.region_index("Japan East")] == 171
    assert geo.backbone_ms[europe, geo.region_index("Southeast Asia")] == 171
    assert geo.backbone_ms[geo.area_index("India"), geo.region_index("West Europe")] == 138
    assert geo.measured_between("US East", "West Europe") == (85, 87)
    assert geo.measured_between("India", "Southeast Asia") is None


def test_derived_entries_follow_the_fit(geo):
    fit = geo.raw["derivation"]
    derived = geo.source == "derived"
    expected = fit["intercept_ms"] + fit["ms_per_1000_km"] * geo.distance_km[derived] / 1000
    # rounding of the stored coefficients (0.01 ms, 0.001 ms/1000 km) and of distances (1 km) only
    assert np.allclose(geo.backbone_ms[derived], expected, atol=0.2)
    assert derived.sum() > 0 and (geo.source == "table").sum() >= 10
    assert fit["rmse_ms"] < 20  # the line is a usable stand-in for the missing pairs


def test_tampered_file_is_refused(tmp_path):
    raw = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    raw["matrix"]["US West"]["West Europe"]["rtt_ms"] += 10
    bad = tmp_path / "rtt.json"
    bad.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(GeoDataError, match="US West -> West Europe"):
        load_rtt_matrix(bad)


def test_nearest_by_distance(geo):
    all_regions = np.arange(len(geo.regions))
    homes = nearest_by_distance(geo, all_regions)
    assert [geo.regions[r] for r in homes] == list(geo.home_regions)
    three = nearest_by_distance(geo, [0, 1, 2])
    assert geo.regions[three[geo.area_index("India")]] == "Southeast Asia"
    assert geo.regions[three[geo.area_index("Brazil")]] == "East US"
