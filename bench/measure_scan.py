"""Time a real Parquet scan against a CSV scan of the same table and write data/profiles/parquet_scan.json.

    python bench/measure_scan.py                     # the committed profile
    python bench/measure_scan.py --out /tmp/scan.json --repeats 5

One seeded events table (100,000 rows: six id/time/type/price columns and 24 float features) is written by
pyarrow as CSV and as Parquet (snappy) into a temporary folder, removed afterwards; then reads of k columns
(the first k features; k = 30 is every column) alternate between the formats, single-threaded. The file holds
every timing, the bytes each read touches and where it was measured (CPU, versions, load average), so Q17
reads the same numbers on every machine; its ``scan_profile = live`` choice measures this machine instead.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.partitioning import SCAN_COLUMN_COUNTS, SCAN_FEATURES, SCAN_ROWS, measure_scans, scan_provenance  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "data" / "profiles" / "parquet_scan.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args(argv)
    prof = measure_scans(0, SCAN_ROWS, SCAN_FEATURES, SCAN_COLUMN_COUNTS, args.repeats)
    prof["provenance"] = scan_provenance(generated_by="python bench/measure_scan.py")
    Path(args.out).write_text(json.dumps(prof, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
