"""Batch opening on SoftHSM2, side by side in one run.

    .venv/bin/python tests/benchmarks/bench_batch.py [--n 1000] [--rounds 3] [--openssl-n 100]

N envelopes of 4 KB, AES-256-GCM + RSAES-OAEP-SHA256 to an RSA-3072 key on a
throwaway SoftHSM2 token, opened end to end through the CLI (`tokenkeys open
DIR --jobs 1|2`, process start and login included). Compared, in interleaved
rounds, with:
- a bare python-pkcs11 C_Decrypt (CKM_RSA_X_509) loop on one session: the
  device's raw rate, the ceiling for jobs=1;
- a per-file `openssl cms -decrypt` with the libp11 engine (what people
  script today; note that it needs the PIN in argv, as pin-value).
Prints a markdown table for docs/benchmarks.md.
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "123456"  # throwaway token
TOKEN, KEY = "bench", "bench-rsa3072"
ENGINE_CNF = f"""openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
MODULE_PATH = {SOFTHSM}
init = 0
"""


def tokenkeys(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokenkeys", *map(str, args)],
                          capture_output=True, text=True, check=True)


def setup(base: Path, n: int) -> tuple[str, Path, Path]:
    os.environ.update({"TOKENKEYS_PIN": PIN, "TOKENKEYS_SO_PIN": "12345678",
                       "TOKENKEYS_REGISTRY": str(base / "registry.sqlite")})  # its own
    out = subprocess.run([str(ROOT / "softhsm-config" / "setup-tokens.sh"), str(base / "hsm"),
                          TOKEN], env={**os.environ, "PYTHON": sys.executable},
                         capture_output=True, text=True, check=True).stdout
    os.environ["SOFTHSM2_CONF"] = out.strip().split("=", 1)[1]
    uri = f"pkcs11:token={TOKEN}?module-path={SOFTHSM}"
    tokenkeys("key", "generate", "--token", uri, "--name", KEY, "--algorithm", "rsa3072")
    cert = base / "cert.pem"
    tokenkeys("key", "export-cert", KEY, "--token", uri, "-o", cert)

    from cryptography import x509

    from tokenkeys.envelope import SealOptions, seal

    recipient = x509.load_pem_x509_certificate(cert.read_bytes())
    bids = base / "bids"
    bids.mkdir()
    plain = base / "plain.bin"
    for i in range(n):
        plain.write_bytes(os.urandom(4096))
        seal(plain, bids / f"bid-{i:05d}.bin.p7m", [recipient], SealOptions())
    return uri, cert, bids


def time_open(uri: str, bids: Path, out: Path, jobs: int) -> float:
    """Into a new directory each time, the earlier ones kept until the end: on ext4,
    creating a thousand files right after deleting a thousand costs up to 0.5 ms more
    per file (the inode allocator skips the recently deleted ones), which an agent
    opening a new consultation does not pay."""
    out = out.with_name(f"{out.name}-{time.monotonic_ns()}")
    # The run before left a thousand new files to write back; a registry commit would
    # wait for them (ext4 commits its journal whole): every run starts from a clean disk.
    os.sync()
    start = time.perf_counter()
    tokenkeys("open", bids, "-o", out, "--token", uri, "--jobs", str(jobs))
    return time.perf_counter() - start


def time_openssl(cert: Path, bids: Path, out: Path, count: int, cnf: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    inkey = f"pkcs11:token={TOKEN};object={KEY};type=private;pin-value={PIN}"
    env = {**os.environ, "OPENSSL_CONF": str(cnf)}
    files = sorted(bids.iterdir())[:count]
    start = time.perf_counter()
    for f in files:
        subprocess.run(["openssl", "cms", "-decrypt", "-engine", "pkcs11", "-keyform", "engine",
                        "-inkey", inkey, "-recip", str(cert), "-inform", "DER", "-in", str(f),
                        "-out", str(out / f.stem)], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--openssl-n", type=int, default=100)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="tk-bench-batch-"))
    try:
        uri, cert, bids = setup(base, args.n)
        cnf = base / "engine.cnf"
        cnf.write_text(ENGINE_CNF)
        from bench_raw_decrypt import raw_decrypt_rate

        empty = base / "empty"
        empty.mkdir()
        rates: dict[str, list[float]] = {"raw": [], "jobs1": [], "jobs1_steady": [],
                                         "jobs2": [], "jobs2_steady": [], "openssl": []}
        startups = []
        for _ in range(args.rounds):
            rates["raw"].append(raw_decrypt_rate(SOFTHSM, TOKEN, PIN, KEY, args.n)["raw"])
            startups.append(time_open(uri, empty, base / "o0", 1))
            jobs1 = time_open(uri, bids, base / "o1", 1)
            rates["jobs1"].append(args.n / jobs1)
            rates["jobs1_steady"].append(args.n / (jobs1 - startups[-1]))
            jobs2 = time_open(uri, bids, base / "o2", 2)
            rates["jobs2"].append(args.n / jobs2)
            rates["jobs2_steady"].append(args.n / (jobs2 - startups[-1]))
            rates["openssl"].append(args.openssl_n / time_openssl(
                cert, bids, base / "o3", args.openssl_n, cnf))
        for name in ("o1", "o2"):
            for out in base.glob(f"{name}-*"):
                assert len(list(out.iterdir())) == args.n
        raw = statistics.median(rates["raw"])
        print(f"\n{args.n} envelopes x 4 KB, RSA-3072 OAEP-SHA256 + AES-256-GCM, SoftHSM2, "
              f"{args.rounds} interleaved rounds (min / median / max)\n")
        print("| what | envelopes/s | x raw (median) |\n|---|---|---|")
        labels = {
            "raw": "bare C_Decrypt loop (RSA_X_509, one session, no envelope work)",
            "jobs1": "`tokenkeys open --jobs 1` (CLI end to end)",
            "jobs1_steady": "the same, less the start-up of an empty batch "
                            f"({statistics.median(startups):.2f} s: interpreter, login, keys)",
            "jobs2": "`tokenkeys open --jobs 2` (CLI end to end)",
            "jobs2_steady": "the same, less the same start-up (the workers' own start and "
                            "logins stay in)",
            "openssl": f"`openssl cms -decrypt` + libp11 engine, per file ({args.openssl_n} files)",
        }
        for name, values in rates.items():
            lo, med, hi = min(values), statistics.median(values), max(values)
            print(f"| {labels[name]} | {lo:.0f} / {med:.0f} / {hi:.0f} | {med / raw:.2f} |")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
