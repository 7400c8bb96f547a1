"""Hostile PKCS#12 files and CA requests: time and traced peak memory of each refusal,
side by side with a normal import (and a normal request) in the same run; then what the
worst file under the iteration ceiling costs to derive (what Ctrl-C must be able to stop).

Run: PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_hostile_p12.py
(figures in docs/benchmarks.md). The service functions are timed in-process, as
`share import` and `ca issue` call them: the refusal side of each command.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.cli import p12_hostile as hostile
from tests.cli.share_support import PASSPHRASE
from tokenkeys.files import MAX_PKCS12, read_limited
from tokenkeys.services import ca, share_pkcs12
from tokenkeys.services.pkcs12_read import MAX_ITERATIONS
from tokenkeys.types import Secret

LIMIT_S, LIMIT_MB = 1.0, 16.0


def measure(work: Callable[[], Any]) -> tuple[float, float, str]:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        work()
        outcome = "accepted"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {str(exc)[:60]}"
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return elapsed, peak, outcome


def import_file(path: Path) -> Callable[[], Any]:
    """What `share import` does before the token: read (bounded), then parse."""
    return lambda: share_pkcs12.parse(read_limited(path, MAX_PKCS12, "PKCS#12 file"),
                                      Secret(PASSPHRASE), path.name)


def request_file(path: Path) -> Callable[[], Any]:
    return lambda: ca.read_request(path)


def main() -> None:
    d = Path(tempfile.mkdtemp())
    key = rsa.generate_private_key(65537, 2048)
    cert = hostile.certificate("Agent", key)
    good = hostile.p12(key, cert)
    (d / "normal.p12").write_bytes(good)
    files: dict[str, Path] = {}
    for i, (name, (data, _, _)) in enumerate(hostile.shapes(key, cert).items()):
        files[name] = d / f"h{i}.p12"
        files[name].write_bytes(data)
    files["BER (NSS, Bouncy Castle)"] = d / "ber.p12"
    files["BER (NSS, Bouncy Castle)"].write_bytes(hostile.ber(good))
    chain, _ = hostile.chain_with_strangers(300)
    files["300 unrelated certificates"] = d / "strangers.p12"
    files["300 unrelated certificates"].write_bytes(chain)
    big = d / "big.p12"
    with big.open("wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GB
    files["1 GB file"] = big
    fifo = d / "fifo"
    os.mkfifo(fifo)
    files["FIFO"] = fifo
    files["/dev/zero"] = Path("/dev/zero")

    requests: dict[str, Path] = {}
    csr = d / "normal.csr"
    csr.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    big_pem = d / "big.csr"
    big_pem.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\n"
                        + b"QUFB" * (50 << 18) + b"\n-----END CERTIFICATE REQUEST-----\n")
    requests["50 MB PEM request"] = big_pem
    requests["request FIFO"] = fifo
    requests["request /dev/zero"] = Path("/dev/zero")

    base_t, base_m, outcome = measure(import_file(d / "normal.p12"))
    print(f"{'normal import (2048 iterations)':34} {base_t:7.3f} s  peak {base_m:6.2f} MB  "
          f"{outcome}")
    worst_t = worst_m = 0.0
    for name, path in files.items():
        t, m, outcome = measure(import_file(path))
        print(f"{name:34} {t:7.3f} s  peak {m:6.2f} MB  {outcome}")
        if not outcome.startswith("accepted"):
            worst_t, worst_m = max(worst_t, t), max(worst_m, m - base_m)
    req_t, req_m, outcome = measure(request_file(csr))
    print(f"{'normal request (public key)':34} {req_t:7.3f} s  peak {req_m:6.2f} MB  {outcome}")
    for name, path in requests.items():
        t, m, outcome = measure(request_file(path))
        print(f"{name:34} {t:7.3f} s  peak {m:6.2f} MB  {outcome}")
        worst_t, worst_m = max(worst_t, t), max(worst_m, m - req_m)
    ok = worst_t <= LIMIT_S and worst_m <= LIMIT_MB
    print(f"slowest refusal {worst_t:.3f} s, most memory above normal {worst_m:.2f} MB: "
          f"{'within' if ok else 'OVER'} {LIMIT_S} s / {LIMIT_MB} MB")
    # The worst honest file: every count at the ceiling (MAC, certificates, key).
    at_ceiling = d / "ceiling.p12"
    at_ceiling.write_bytes(hostile.p12(key, cert, iterations=MAX_ITERATIONS))
    t, m, outcome = measure(import_file(at_ceiling))
    print(f"{'every count at 10,000,000':34} {t:7.3f} s  peak {m:6.2f} MB  {outcome} "
          "(accepted; Ctrl-C stops it: tests/cli/test_hostile_p12.py)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
