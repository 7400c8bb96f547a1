"""Large-envelope benchmark: openssl cms vs tokenkeys, side by side.

    .venv/bin/python tests/benchmarks/bench_large.py --size-mb 1024

Steps (each a separate process, measured with /usr/bin/time -v so the peak RSS
is the command's own, not inherited from this script):
  (c) openssl cms -encrypt -stream -aes-256-gcm of SIZE   (also makes the envelope)
  (a) openssl cms -decrypt with the software RSA-3072 key
  (b) tokenkeys open_envelope with the same key          (argv swappable: see OPEN_STEPS)
  (b) `tokenkeys open` (the CLI) with an RSA-3072 key on a throwaway SoftHSM2 token;
      the envelope is sealed to both certificates, so both open the same file
  (d) tokenkeys seal of SIZE to the same certificate
Results are printed as a markdown table. Files live in a temp dir, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
TIME = "/usr/bin/time"

_OPEN_CODE = r"""
import sys
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tokenkeys.envelope import SoftwareIdentity, open_envelope
env, out, key, cert = sys.argv[1:5]
k = serialization.load_pem_private_key(open(key, "rb").read(), None)
c = x509.load_pem_x509_certificate(open(cert, "rb").read())
print(open_envelope(env, out, [SoftwareIdentity(k, c)]).bytes_out)
"""

_SEAL_CODE = r"""
import sys
from cryptography import x509
from tokenkeys.envelope import seal
src, out, cert = sys.argv[1:4]
print(seal(src, out, [x509.load_pem_x509_certificate(open(cert, "rb").read())]))
"""


@dataclass
class Files:
    plain: Path
    envelope: Path
    key: Path
    cert: Path
    out: Path
    token_cert: Path | None = None
    token_uri: str = ""


def tokenkeys_open_software(f: Files) -> list[str]:
    """argv that opens f.envelope into f.out with the software key (step b)."""
    return [sys.executable, "-c", _OPEN_CODE, str(f.envelope), str(f.out), str(f.key),
            str(f.cert)]


def tokenkeys_seal_software(f: Files) -> list[str]:
    return [sys.executable, "-c", _SEAL_CODE, str(f.plain), str(f.out), str(f.cert)]


def tokenkeys_open_token(f: Files) -> list[str]:
    """The CLI, with the RSA step on SoftHSM2 (PIN from TOKENKEYS_PIN)."""
    return [sys.executable, "-m", "tokenkeys", "open", str(f.envelope), "-o", str(f.out.parent
            / "opened"), "--token", f.token_uri]


# Other variants register here: name -> function(Files) -> argv.
OPEN_STEPS: dict[str, Callable[[Files], list[str]]] = {
    "tokenkeys open (software key)": tokenkeys_open_software,
    "tokenkeys open CLI (key on SoftHSM2)": tokenkeys_open_token,
}
ROOT = Path(__file__).resolve().parents[2]
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


def setup_token(d: Path, f: Files) -> None:
    """A throwaway SoftHSM2 token with an RSA-3072 key; its certificate is a recipient."""
    os.environ.update({"TOKENKEYS_PIN": "123456", "TOKENKEYS_SO_PIN": "12345678"})
    out = subprocess.run([str(ROOT / "softhsm-config" / "setup-tokens.sh"), str(d / "hsm"),
                          "bench"], env={**os.environ, "PYTHON": sys.executable},
                         capture_output=True, text=True, check=True).stdout
    os.environ["SOFTHSM2_CONF"] = out.strip().split("=", 1)[1]
    f.token_uri = f"pkcs11:token=bench?module-path={SOFTHSM}"
    f.token_cert = d / "token-cert.pem"
    for args in (["key", "generate", "--name", "big", "--algorithm", "rsa3072"],
                 ["key", "export-cert", "big", "-o", str(f.token_cert)]):
        subprocess.run([sys.executable, "-m", "tokenkeys", *args, "--token", f.token_uri],
                       check=True, capture_output=True)


@dataclass
class Measure:
    name: str
    wall_s: float
    rss_mb: float
    size_mb: float

    def row(self) -> str:
        rate = self.size_mb / self.wall_s if self.wall_s else float("inf")
        return f"| {self.name} | {self.wall_s:.2f} | {self.rss_mb:.1f} | {rate:.0f} MB/s |"


def measure(name: str, argv: list[str], size_mb: float, workdir: Path) -> Measure:
    stats = workdir / "time.txt"
    start = time.perf_counter()
    proc = subprocess.run([TIME, "-f", "%M", "-o", str(stats), *argv], capture_output=True,
                          check=False, cwd=workdir)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{name} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    rss_kb = int(stats.read_text().split()[-1])
    return Measure(name, wall, rss_kb / 1024, size_mb)


def make_inputs(d: Path, size_mb: int) -> Files:
    f = Files(d / "plain.bin", d / "env.der", d / "key.pem", d / "cert.pem", d / "out.bin")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:3072", "-nodes", "-keyout",
                    str(f.key), "-out", str(f.cert), "-subj", "/CN=bench", "-days", "2"],
                   check=True, capture_output=True)
    block = os.urandom(1 << 20)
    with f.plain.open("wb") as out:
        for i in range(size_mb):
            out.write(block[i % 997 :] + block[: i % 997])
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: temp)")
    args = ap.parse_args()
    size = float(args.size_mb)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="tokenkeys-bench-") as tmp:
        d = Path(tmp)
        f = make_inputs(d, args.size_mb)
        setup_token(d, f)
        results = [measure("openssl cms -encrypt -stream (c)",
                           [OPENSSL, "cms", "-encrypt", "-stream", "-aes-256-gcm", "-binary",
                            "-outform", "DER", "-in", str(f.plain), "-out", str(f.envelope),
                            "-recip", str(f.cert), "-recip", str(f.token_cert)], size, d)]
        results.append(measure("openssl cms -decrypt (a)",
                               [OPENSSL, "cms", "-decrypt", "-binary", "-inform", "DER",
                                "-in", str(f.envelope), "-out", str(f.out), "-inkey", str(f.key),
                                "-recip", str(f.cert)], size, d))
        f.out.unlink()
        for name, argv_of in OPEN_STEPS.items():
            results.append(measure(f"{name} (b)", argv_of(f), size, d))
            f.out.unlink(missing_ok=True)
            shutil.rmtree(d / "opened", ignore_errors=True)
        results.append(measure("tokenkeys seal (d)", tokenkeys_seal_software(f), size, d))
    print(f"\nEnvelope of {args.size_mb} MB, AES-256-GCM, two RSA-3072 recipients "
          "(a software key, a SoftHSM2 key)\n")
    print("| step | wall s | peak RSS MB | throughput |")
    print("|---|---|---|---|")
    for m in results:
        print(m.row())
    by = {m.name[-3:]: m for m in results}  # the last (b) is the CLI on the token
    print(f"\nopen/openssl-decrypt wall ratio: {by['(b)'].wall_s / by['(a)'].wall_s:.2f} "
          f"(target <= 0.5); seal/openssl-encrypt: {by['(d)'].wall_s / by['(c)'].wall_s:.2f} "
          "(target <= 1.0)")


if __name__ == "__main__":
    main()
