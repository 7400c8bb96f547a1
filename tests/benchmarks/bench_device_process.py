"""Where the device's own process starts paying for itself: `open --jobs 1` of N
envelopes with and without it, interleaved, on one SoftHSM2 token.

    .venv/bin/python tests/benchmarks/bench_device_process.py [--sizes 16 48 100 200 400]
        [--rounds 3]

Envelopes as in bench_batch.py (4 KB, AES-256-GCM + RSAES-OAEP-SHA256, RSA-3072). Each
run is the CLI end to end (process start, login, audit rows) into a new directory from
a synced disk; the CLI runs with services.opening_device.MIN_ENVELOPES set to 1
("with") or out of reach ("without": the device's calls stay on a thread). Prints
seconds (median) and the difference: what the second process costs (its fork, token
opening and login) against what it saves per envelope.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

# The CLI, with or without the device's process (argv: "with" | "without", then the CLI's).
CLI = r"""
import sys
from tokenkeys.services import opening_device
opening_device.MIN_ENVELOPES = 1 if sys.argv.pop(1) == "with" else 10**9
from tokenkeys.cli.main import entry
sys.argv[0] = "tokenkeys"
entry()
"""


def timed(mode: str, uri: str, bids: Path, base: Path) -> float:
    out = base / f"out-{time.monotonic_ns()}"
    os.sync()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", CLI, mode, "open", str(bids), "-o", str(out),
                    "--token", uri], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 48, 100, 200, 400])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import bench_batch

    base = Path(tempfile.mkdtemp(prefix="tk-bench-devproc-"))
    try:
        uri, _cert, bids = bench_batch.setup(base, max(args.sizes))
        everyone = sorted(bids.iterdir())
        sets = {}
        for n in args.sizes:
            sets[n] = base / f"bids-{n}"
            sets[n].mkdir()
            for src in everyone[:n]:
                os.link(src, sets[n] / src.name)
        times: dict[tuple[int, str], list[float]] = {}
        for r in range(args.rounds):
            for n in args.sizes:
                for mode in ("with", "without") if r % 2 else ("without", "with"):
                    times.setdefault((n, mode), []).append(timed(mode, uri, sets[n], base))
        print(f"\n`tokenkeys open --jobs 1`, RSA-3072 on SoftHSM2, {args.rounds} interleaved "
              "rounds (median seconds)\n")
        print("| envelopes | device calls on a thread | in a process of their own | "
              "difference |\n|---|---|---|---|")
        for n in args.sizes:
            without = statistics.median(times[(n, "without")])
            with_ = statistics.median(times[(n, "with")])
            print(f"| {n} | {without:.3f} | {with_:.3f} | {with_ - without:+.3f} |")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
