"""Registry write rates on SQLite and a throwaway PostgreSQL 15 cluster.

    .venv/bin/python tests/benchmarks/bench_registry.py [--n 200] [--rounds 3]

Creates N consultations (each a transaction with its policy checks, backup
record and hash-chained audit row) through the services layer: from one process
with one open registry, and from two processes at once with a fresh registry
per consultation (as separate CLI runs would, minus interpreter start-up).
Prints min / median / max consultations per second as a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.pgcluster import PgCluster  # noqa: E402
from tests.registry.conftest import soft_facts  # noqa: E402
from tokenkeys.registry import Registry  # noqa: E402
from tokenkeys.services import consultations  # noqa: E402


def fresh(location: str) -> None:
    with Registry.open(location) as reg:
        reg.add_key("default", soft_facts("K"), "generate")
        reg.add_key("default", soft_facts("B", backup=True), "generate")


def one_process(location: str, n: int) -> float:
    fresh(location)
    with Registry.open(location) as reg:
        start = time.perf_counter()
        for i in range(n):
            consultations.create(reg, "default", f"C-{i}", "K", closes=None, title=None,
                                 no_backup=False)
        return n / (time.perf_counter() - start)


def two_processes(location: str, n: int) -> float:
    fresh(location)
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "tests.registry.worker", location, p,
                               str(n // 2)], cwd=ROOT, stdout=subprocess.DEVNULL)
             for p in ("A", "B")]
    for p in procs:
        assert p.wait() == 0
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cluster = PgCluster()
    cluster.start()
    tmp = Path(tempfile.mkdtemp(prefix="tk-bench-reg-"))
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for r in range(args.rounds):
            for backend in ("sqlite", "postgresql"):
                for mode, fn in (("1 process", one_process), ("2 processes", two_processes)):
                    loc = (str(tmp / f"{backend}-{mode[0]}-{r}.sqlite") if backend == "sqlite"
                           else cluster.url(cluster.new_database()))
                    results.setdefault((backend, mode), []).append(fn(loc, args.n))
    finally:
        cluster.stop()
    print("| backend | writers | consultations/s (min / median / max) |")
    print("|---|---|---|")
    for (backend, mode), rates in results.items():
        print(f"| {backend} | {mode} | {min(rates):.0f} / {statistics.median(rates):.0f} / "
              f"{max(rates):.0f} |")


if __name__ == "__main__":
    main()
