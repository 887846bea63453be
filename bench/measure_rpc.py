"""Regenerate data/profiles/rpc_loopback.json: encodings and loopback round trips (sim.rpc).

    python bench/measure_rpc.py                  # write the committed profile
    python bench/measure_rpc.py --out /tmp/x.json --rounds 6

Starts three servers (uvicorn, hypercorn, grpcio) on 127.0.0.1, each bounded by a wall time
and a request count and stopped by this command when it ends; times the encoders, every
transport in interleaved rounds, a TCP connect and a TLS 1.3 handshake; stores the samples
with the CPU, library versions, date and load average. Q22 and Q3 read the file.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.rpc import REFERENCE, measure  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REFERENCE)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--per-round", type=int, default=25)
    ap.add_argument("--handshakes", type=int, default=80)
    args = ap.parse_args(argv)
    got = measure(rounds=args.rounds, per_round=args.per_round, handshakes=args.handshakes)
    args.out.write_text(json.dumps(got, indent=1) + "\n", encoding="utf-8")
    t = got["transports"]
    print(f"wrote {args.out}: " + ", ".join(f"{k} p50 {v['p50_us']:.0f} us" for k, v in t.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
