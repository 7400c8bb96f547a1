"""CLI start-up, side by side in one run: a command that never touches the registry
(`tokenkeys --help`) against one that opens it (`tokenkeys audit verify`), and the
bare interpreter. Run: .venv/bin/python tests/benchmarks/bench_startup.py [N]."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TOKENKEYS_REGISTRY": os.path.join(tmp, "r.sqlite")}
        runs = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "tokenkeys --help (no registry)": [sys.executable, "-m", "tokenkeys", "--help"],
            "tokenkeys audit verify (registry)": [sys.executable, "-m", "tokenkeys",
                                                  "audit", "verify"],
        }
        timed(runs["tokenkeys audit verify (registry)"], env)  # creates the registry once
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(n):  # interleaved: the machine's noise hits every row alike
            for name, args in runs.items():
                samples[name].append(timed(args, env))
    print(f"| what (n={n}, interleaved) | seconds (min / median / max) |\n|---|---|")
    for name, values in samples.items():
        print(f"| {name} | {min(values):.3f} / {statistics.median(values):.3f} / "
              f"{max(values):.3f} |")


if __name__ == "__main__":
    main()
