"""One software-keystore PIN derivation: Argon2id (version 2) against scrypt (version 1).

Run: .venv/bin/python tests/benchmarks/bench_kdf.py   (figures go to docs/drivers.md)
"""

from __future__ import annotations

import os
import statistics
import time

from tokenkeys.drivers import software, software_sealing
from tokenkeys.types import Secret


def main() -> None:
    salt = os.urandom(16)
    for name, params in (("argon2id", software.ARGON2ID), ("scrypt", software.SCRYPT)):
        runs = []
        for _ in range(7):
            start = time.perf_counter()
            software_sealing.derive(Secret("benchmark PIN"), salt, params)
            runs.append(time.perf_counter() - start)
        print(f"{name} {params}: min {min(runs):.3f} s, median {statistics.median(runs):.3f} s, "
              f"max {max(runs):.3f} s")


if __name__ == "__main__":
    main()
