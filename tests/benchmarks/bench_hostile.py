"""Hostile envelope shapes at full size (16 MB): time and traced peak memory to refuse them,
against the time to open a normal envelope of the same size.

Run: .venv/bin/python tests/benchmarks/bench_hostile.py   (figures in docs/benchmarks.md)
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.envelope.conftest import _make
from tests.envelope.test_hostile import SHAPES
from tokenkeys.envelope import open_envelope, seal

SIZE = 16 << 20


def main() -> None:
    d = Path(tempfile.mkdtemp())
    pair = _make("rsa", rsa.generate_private_key(65537, 2048), d)
    seal(io.BytesIO(b"bid"), d / "small", [pair.cert])
    seal(io.BytesIO(os.urandom(SIZE)), d / "normal", [pair.cert])
    start = time.perf_counter()
    open_envelope(d / "normal", d / "normal.out", [pair.identity()])
    normal = time.perf_counter() - start
    print(f"normal {SIZE >> 20} MB envelope: {normal:.3f} s")
    for i, (name, shape) in enumerate(SHAPES.items()):
        env = d / f"h{i}"
        env.write_bytes(shape((d / "small").read_bytes(), SIZE))
        tracemalloc.start()
        start = time.perf_counter()
        try:
            open_envelope(env, d / f"h{i}.out", [pair.identity()])
            outcome = "opened"
        except Exception as exc:
            outcome = str(exc)[:70]
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{name:32} {env.stat().st_size >> 20:3} MB  {elapsed:7.3f} s (traced, "
              f"{elapsed / normal:5.1f}x normal)  peak {peak / 2**20:7.1f} MB  {outcome}")


if __name__ == "__main__":
    main()
