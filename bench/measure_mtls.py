"""Time mutual-TLS 1.3 handshakes on loopback and write data/profiles/mtls_handshake.json.

    python bench/measure_mtls.py                 # 100 interleaved rounds
    python bench/measure_mtls.py --rounds 300 --out /tmp/mtls.json

Three samples per round, back to back (so a noisy moment hits them alike): a new TCP
connection with a one-byte echo, a new mutual-TLS 1.3 connection (trustme CA, client
certificate verified by the server) with the same echo, and the echo on one reused mutual-TLS
connection. The server is ``sim.mtls.LoopbackServer`` on 127.0.0.1 (an ephemeral port),
started and closed by this command. The file keeps every sample (ms) and a provenance record
(CPU, Python, OpenSSL, trustme, date, load average): Q25 reads it as its default profile.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.mtls import REFERENCE, measure  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--out", type=Path, default=REFERENCE)
    args = ap.parse_args(argv)
    got = measure(args.rounds, generated_by="bench/measure_mtls.py")
    args.out.write_text(json.dumps(got, indent=1) + "\n", encoding="utf-8")
    for k, v in got["summary"].items():
        print(f"{k:12s} median {v['median_ms']:.3f} ms  p90 {v['p90_ms']:.3f} ms  n={v['n']}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
