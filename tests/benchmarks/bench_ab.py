"""A/B: `tokenkeys open` of two source trees, interleaved on the same envelopes and token.

    git archive BASE_COMMIT | tar -x -C /tmp/base
    .venv/bin/python tests/benchmarks/bench_ab.py --base /tmp/base [--n 1000] [--rounds 3]

For a machine too busy for absolute figures: both trees run the CLI end to end
(`open DIR --jobs 1|2`) in alternation, so load changes hit both alike. N
envelopes of 4 KB, AES-256-GCM + RSAES-OAEP-SHA256, RSA-3072 key on a throwaway
SoftHSM2 token. Prints envelopes/s, min / median / max.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
URI = "pkcs11:token=bench?module-path=/usr/lib/softhsm/libsofthsm2.so"


def tk(root: Path, *args: str | Path) -> None:
    # The tree is the working directory: `python -m tokenkeys` imports it first.
    subprocess.run([sys.executable, "-m", "tokenkeys", *map(str, args)], cwd=root,
                   capture_output=True, text=True, check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="tk-bench-ab-"))
    os.environ.update({"TOKENKEYS_PIN": "123456", "TOKENKEYS_SO_PIN": "12345678",
                       "PYTHON": sys.executable})
    out = subprocess.run([str(ROOT / "softhsm-config" / "setup-tokens.sh"), str(base / "hsm"),
                          "bench"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    os.environ["SOFTHSM2_CONF"] = out.strip().split("=", 1)[1]
    tk(ROOT, "key", "generate", "--token", URI, "--name", "k", "--algorithm", "rsa3072")
    tk(ROOT, "key", "export-cert", "k", "--token", URI, "-o", base / "c.pem")
    from cryptography import x509

    from tokenkeys.envelope import SealOptions, seal

    cert = x509.load_pem_x509_certificate((base / "c.pem").read_bytes())
    bids = base / "bids"
    bids.mkdir()
    for i in range(args.n):
        seal(io.BytesIO(os.urandom(4096)), bids / f"b{i:05d}.p7m", [cert], SealOptions())
    rates: dict[tuple[str, int], list[float]] = {}
    for r in range(args.rounds):
        for name, tree in (("base", args.base), ("this tree", ROOT)):
            for jobs in (1, 2):
                start = time.perf_counter()
                tk(tree, "open", bids, "-o", base / f"o-{r}-{name}-{jobs}", "--token", URI,
                   "--jobs", str(jobs))
                rates.setdefault((name, jobs), []).append(args.n / (time.perf_counter() - start))
    print("| tree | --jobs | envelopes/s (min / median / max) |\n|---|---|---|")
    for (name, jobs), values in sorted(rates.items()):
        print(f"| {name} | {jobs} | {min(values):.0f} / {statistics.median(values):.0f} / "
              f"{max(values):.0f} |")


if __name__ == "__main__":
    main()
