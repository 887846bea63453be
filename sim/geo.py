"""Round-trip times between user areas and cloud regions, each entry with its provenance.

The measured figures are Azure's inter-region round-trip statistics
(``MicrosoftDocs/azure-docs`` ``articles/networking/azure-network-latency.md``,
dataset taken July 2, 2026: the 30-day P50 of one-minute probes between
regions; the pairs used are the ones ArchLab's REFERENCES.md section 13 lists).
Region coordinates are those ``az account list-locations`` prints (read in a
copy quoted by the ``yokawasa/azping`` README).

A user area is modelled as a population living next to one Azure region, its
*home region*. A user's round trip to region R is

    access_rtt_ms  +  backbone RTT(home region, R)

where ``access_rtt_ms`` (last mile plus metro network to the nearby cloud
edge) is an assumption the caller supplies, and the backbone RTT is:

* ``same_region`` when R is the home region: 0 (only the access RTT remains);
* ``table`` when the pair (home region, R) is in the measured table: the P50,
  or the midpoint when the two directions differ (e.g. 234-237 -> 235.5);
* ``derived`` otherwise: ``intercept_ms + ms_per_km * great-circle km``, a
  least-squares line fitted to *all* measured pairs. Its residuals on the
  measured pairs (kept in the file) say how far off a derived entry may be;
  routes that detour far from the great circle are where it is worst.

``data/rtt_matrix.json`` stores the inputs (coordinates, measured pairs, user
areas) and the matrix built from them; :func:`load_rtt_matrix` rebuilds the
matrix from the inputs and refuses a file whose stored matrix disagrees, so no
derived number is ever typed in by hand. Regenerate the file with
``python3 -m sim.geo --write`` after editing its inputs.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "data" / "rtt_matrix.json"
EARTH_RADIUS_KM = 6371.0
SOURCES = ("same_region", "table", "derived")
_TOLERANCE_MS = 0.051  # stored values are rounded to 0.1 ms


class GeoDataError(ValueError):
    """The RTT file is malformed or its stored matrix does not follow from its inputs."""


def great_circle_km(lat1, lon1, lat2, lon2):
    """Haversine distance in km between points given in degrees (numpy-broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


@dataclass(frozen=True)
class DistanceFit:
    """RTT = intercept_ms + ms_per_km * distance_km, fitted by least squares."""

    intercept_ms: float
    ms_per_km: float
    residuals_ms: tuple[float, ...]  # measured - fitted, one per measured pair

    def predict(self, distance_km):
        return self.intercept_ms + self.ms_per_km * np.asarray(distance_km, dtype=float)

    @property
    def rmse_ms(self) -> float:
        r = np.asarray(self.residuals_ms)
        return float(np.sqrt(np.mean(r**2)))

    @property
    def max_abs_residual_ms(self) -> float:
        return float(np.max(np.abs(self.residuals_ms)))


def fit_distance_model(distance_km: Sequence[float], rtt_ms: Sequence[float]) -> DistanceFit:
    d = np.asarray(distance_km, dtype=float)
    r = np.asarray(rtt_ms, dtype=float)
    if d.size < 2 or d.shape != r.shape:
        raise ValueError("need at least two (distance, rtt) pairs of equal length")
    design = np.column_stack([np.ones_like(d), d])
    (a, b), *_ = np.linalg.lstsq(design, r, rcond=None)
    return DistanceFit(float(a), float(b), tuple(float(x) for x in r - (a + b * d)))


def _pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def build_matrix(inputs: dict) -> dict:
    """Compute the ``derivation`` and ``matrix`` sections from the file's input sections.

    ``inputs`` needs ``region_coordinates`` {region: [lat, lon]}, ``measured_pairs``
    [{"a", "b", "rtt_ms": [low, high]}], ``user_areas`` [{"name", "home_region"}] and
    ``candidate_regions`` [region, ...].
    """
    coords = inputs["region_coordinates"]
    pairs = inputs["measured_pairs"]
    for p in pairs:
        for end in (p["a"], p["b"]):
            if end not in coords:
                raise GeoDataError(f"measured pair {p['a']} - {p['b']}: no coordinates for {end!r}")
        lo, hi = p["rtt_ms"]
        if not 0 < lo <= hi:
            raise GeoDataError(f"measured pair {p['a']} - {p['b']}: bad range {p['rtt_ms']!r}")

    def dist(a: str, b: str) -> float:
        (la1, lo1), (la2, lo2) = coords[a], coords[b]
        return float(great_circle_km(la1, lo1, la2, lo2))

    measured = {_pair_key(p["a"], p["b"]): p for p in pairs}
    fit = fit_distance_model([dist(p["a"], p["b"]) for p in pairs],
                             [sum(p["rtt_ms"]) / 2 for p in pairs])
    matrix: dict[str, dict] = {}
    for area in inputs["user_areas"]:
        home = area["home_region"]
        if home not in coords:
            raise GeoDataError(f"user area {area['name']}: no coordinates for home region {home!r}")
        row = {}
        for region in inputs["candidate_regions"]:
            if region not in coords:
                raise GeoDataError(f"candidate region {region!r} has no coordinates")
            km = round(dist(home, region))
            if region == home:
                row[region] = {"rtt_ms": 0.0, "source": "same_region", "distance_km": km}
            elif _pair_key(home, region) in measured:
                p = measured[_pair_key(home, region)]
                row[region] = {"rtt_ms": round(sum(p["rtt_ms"]) / 2, 1), "source": "table",
                               "pair": f"{p['a']} - {p['b']}", "table_rtt_ms": list(p["rtt_ms"]),
                               "distance_km": km}
            else:
                row[region] = {"rtt_ms": round(float(fit.predict(dist(home, region))), 1),
                               "source": "derived", "distance_km": km}
        matrix[area["name"]] = row
    derivation = {
        "method": "least-squares line RTT = intercept_ms + ms_per_1000_km * distance / 1000 over all "
                  "measured pairs (great-circle distance between the regions' coordinates)",
        "intercept_ms": round(fit.intercept_ms, 2),
        "ms_per_1000_km": round(fit.ms_per_km * 1000, 3),
        "rmse_ms": round(fit.rmse_ms, 1),
        "max_abs_residual_ms": round(fit.max_abs_residual_ms, 1),
        "residuals_ms": {f"{p['a']} - {p['b']}": round(r, 1) for p, r in zip(pairs, fit.residuals_ms)},
    }
    return {"derivation": derivation, "matrix": matrix}


@dataclass(frozen=True)
class RttMatrix:
    """Backbone RTTs (ms) from each user area's home region to each candidate region.

    ``backbone_ms[a, r]`` excludes the access RTT; ``user_rtt_ms(access)`` adds it.
    ``source[a, r]`` is one of ``SOURCES``; ``distance_km[a, r]`` is the great-circle
    distance between the area's home region and the region (used by geographic routing).
    """

    areas: tuple[str, ...]
    home_regions: tuple[str, ...]
    regions: tuple[str, ...]
    backbone_ms: np.ndarray
    source: np.ndarray
    distance_km: np.ndarray
    raw: dict

    def user_rtt_ms(self, access_rtt_ms: float) -> np.ndarray:
        return self.backbone_ms + float(access_rtt_ms)

    def region_index(self, name: str) -> int:
        return self.regions.index(name)

    def area_index(self, name: str) -> int:
        return self.areas.index(name)

    def count(self, source: str, regions: Sequence[int] | None = None) -> int:
        cols = slice(None) if regions is None else list(regions)
        return int(np.sum(self.source[:, cols] == source))

    def measured_between(self, area: str, region: str) -> tuple[float, float] | None:
        """The table's (low, high) RTT for the pair (area's home region, region), if measured."""
        entry = self.raw["matrix"][area][region]
        return tuple(entry["table_rtt_ms"]) if entry["source"] == "table" else None


def nearest_by_distance(matrix: RttMatrix, deployed: Sequence[int]) -> np.ndarray:
    """Geographic routing (GeoDNS, geoproximity with no bias): each area's closest deployed region."""
    deployed = np.asarray(deployed, dtype=int)
    return deployed[np.argmin(matrix.distance_km[:, deployed], axis=1)]


def _parse(raw: dict) -> RttMatrix:
    try:
        areas = tuple(a["name"] for a in raw["user_areas"])
        homes = tuple(a["home_region"] for a in raw["user_areas"])
        regions = tuple(raw["candidate_regions"])
        cells = [[raw["matrix"][a][r] for r in regions] for a in areas]
    except (KeyError, TypeError) as exc:
        raise GeoDataError(f"rtt matrix: missing or malformed field {exc}") from None
    backbone = np.array([[c["rtt_ms"] for c in row] for row in cells], dtype=float)
    source = np.array([[c["source"] for c in row] for row in cells])
    bad = set(source.ravel()) - set(SOURCES)
    if bad:
        raise GeoDataError(f"rtt matrix: unknown source {sorted(bad)}; expected one of {SOURCES}")
    distance = np.array([[c["distance_km"] for c in row] for row in cells], dtype=float)
    return RttMatrix(areas, homes, regions, backbone, source, distance, raw)


def check_consistent(raw: dict) -> None:
    """Raise GeoDataError unless the stored matrix is what ``build_matrix`` gives from the inputs."""
    built = build_matrix(raw)
    for area, row in built["matrix"].items():
        for region, cell in row.items():
            stored = raw.get("matrix", {}).get(area, {}).get(region)
            if stored is None:
                raise GeoDataError(f"rtt matrix: no entry for {area} -> {region}")
            if stored["source"] != cell["source"] or abs(stored["rtt_ms"] - cell["rtt_ms"]) > _TOLERANCE_MS:
                raise GeoDataError(
                    f"rtt matrix: {area} -> {region} is stored as {stored['rtt_ms']} ms ({stored['source']}) "
                    f"but the inputs give {cell['rtt_ms']} ms ({cell['source']}); run python3 -m sim.geo --write")


def load_rtt_matrix(path: str | Path = DEFAULT_PATH) -> RttMatrix:
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    check_consistent(raw)
    return _parse(raw)


def write_rtt_matrix(path: str | Path = DEFAULT_PATH) -> dict:
    """Recompute the derived sections of the file in place from its inputs; returns the new content."""
    path = Path(path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw.update(build_matrix(raw))
    path.write_text(json.dumps(raw, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return raw


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m sim.geo", description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="recompute the matrix section of the file")
    ap.add_argument("--path", default=str(DEFAULT_PATH))
    args = ap.parse_args(argv)
    if args.write:
        write_rtt_matrix(args.path)
    m = load_rtt_matrix(args.path)
    width = max(len(a) for a in m.areas)
    print(" " * width + "".join(f"{r[:14]:>16}" for r in m.regions))
    for i, a in enumerate(m.areas):
        cells = "".join(f"{m.backbone_ms[i, j]:>11.1f} {m.source[i, j][:4]:>4}" for j in range(len(m.regions)))
        print(f"{a:<{width}}{cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
