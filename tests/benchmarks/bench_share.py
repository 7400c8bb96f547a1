"""Cost of sharing: PKCS#12 export/import (600,000 iterations) and device copy.

    .venv/bin/python tests/benchmarks/bench_share.py [RUNS]

A throwaway SoftHSM2 (softhsm-config/setup-tokens.sh) and software keystores in a
temporary directory; test PIN and passphrase in memory, never argv. Prints
min / median / max seconds per operation, in-process (no interpreter start-up).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
PIN, SO_PIN = "123456", "12345678"


def _times(runs: int, fn: Callable[[int], object]) -> str:
    got = []
    for i in range(runs):
        start = time.perf_counter()
        fn(i)
        got.append(time.perf_counter() - start)
    return f"{min(got):.2f} / {statistics.median(got):.2f} / {max(got):.2f}"


def main(runs: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-share-"))
    env = {**os.environ, "PYTHON": sys.executable, "TOKENKEYS_PIN": PIN,
           "TOKENKEYS_SO_PIN": SO_PIN}
    done = subprocess.run([str(ROOT / "softhsm-config" / "setup-tokens.sh"), str(tmp), "src"],
                          env=env, capture_output=True, text=True, check=True)
    assert "SOFTHSM2_CONF" in done.stdout
    os.environ["SOFTHSM2_CONF"] = str(tmp / "softhsm2.conf")

    from tokenkeys.config import Config
    from tokenkeys.drivers import open_token
    from tokenkeys.drivers.p11.admin import init_token
    from tokenkeys.drivers.software import SoftwareToken
    from tokenkeys.services import share, share_copy, token_keys
    from tokenkeys.types import Algorithm, Secret, given_pin

    pins = given_pin(Secret(PIN))
    secret = Secret("benchmark passphrase, long enough")
    uri = f"pkcs11:token=src?module-path={SOFTHSM}"
    src = open_token(uri, Config())
    src.login(pins)
    token_keys.generate_key(src, "K", algorithm=Algorithm.RSA3072, shareable=True)
    rows = []
    rows.append(("share export, SoftHSM2 RSA-3072 key", _times(runs, lambda i: share.export_pkcs12(
        src, "K", tmp / f"k{i}.p12", lambda: secret))))

    def import_one(i: int) -> None:
        SoftwareToken.init(tmp / f"ks{i}", f"ks{i}", Secret(PIN))
        with open_token(f"soft:{tmp / f'ks{i}'}", Config()) as tok:
            tok.login(pins)
            share.import_pkcs12(tok, tmp / "k0.p12", lambda: secret, name="K")

    rows.append(("share import into a software keystore (with keystore creation)",
                 _times(runs, import_one)))

    def copy_one(i: int) -> None:
        label = f"dst{i}"
        init_token(SOFTHSM, label, Secret(SO_PIN), Secret(PIN))
        with open_token(f"pkcs11:token={label}?module-path={SOFTHSM}", Config()) as dst:
            dst.login(pins)
            start = time.perf_counter()
            share_copy.copy_key(src, "K", dst)
            copies.append(time.perf_counter() - start)

    copies: list[float] = []
    _times(runs, copy_one)
    rows.append(("share copy SoftHSM2 → SoftHSM2, RSA-3072 (RSA-3072 transport key)",
                 f"{min(copies):.2f} / {statistics.median(copies):.2f} / {max(copies):.2f}"))
    src.close()
    print("| operation | seconds (min / median / max) |\n|---|---|")
    for name, figures in rows:
        print(f"| {name} | {figures} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
