"""Opening speed on the emulated OpenPGP card, side by side in one run.

    .venv/bin/python tests/benchmarks/bench_card_open.py [--n 100] [--rounds 3]

A fresh emulated card (tests/smartcard/scard.sh, its own state directory, the
machine-wide smartcard lock) gets an RSA-2048 decryption key (pkcs11-tool,
SO login). N envelopes of 4 KB, AuthEnvelopedData AES-256-GCM with PKCS#1
v1.5 key transport, are sealed to it. Interleaved rounds of:
- a bare PyKCS11 C_Decrypt (CKM_RSA_PKCS) loop over N fresh ciphertexts, one
  session, login excluded, one C_Decrypt per ciphertext as tokenkeys' driver makes:
  the card's own time per decryption;
- `tokenkeys open` of an empty directory (CLI end to end): the start-up;
- `tokenkeys open` of the N envelopes (CLI end to end);
- the same batch through services.opening.open_envelopes in a fresh interpreter,
  timing its outputs: from the first to the last, the steady state without start-up.
Per-envelope cost beyond the card = that steady time per envelope - bare per-decrypt
(also shown from the two CLI times, (open N - open empty) / N - bare, which the
start-up's variation makes noisy).
tokenkeys' bytecode is compiled first (compileall), as a pip install does.
Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SCARD = ROOT / "tests" / "smartcard" / "scard.sh"
LOCK = Path(os.environ.get("TOKENKEYS_SCARD_LOCK", "/tmp/tokenkeys-smartcard.lock"))
MODULE = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
PIN, SO_PIN = "123456", "12345678"  # a fresh emulated card's defaults
URI = f"pkcs11:token=OpenPGP%20card%20(User%20PIN)?module-path={MODULE}"
BARE = r"""
import sys, time, PyKCS11
cts = [bytes.fromhex(line) for line in open(sys.argv[1])]
lib = PyKCS11.PyKCS11Lib(); lib.load(sys.argv[2])
slot = next(s for s in lib.getSlotList(tokenPresent=True)
            if lib.getTokenInfo(s).label.strip() == "OpenPGP card (User PIN)")
session = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION)
session.login(sys.argv[3])
(key,) = session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
                              (PyKCS11.CKA_ID, b"\x02")])
# One C_Decrypt into a buffer, as tokenkeys' driver does: PyKCS11's Session.decrypt
# asks for the length first, and a card then decrypts twice.
low, handle = lib.lib, session.session
mech = PyKCS11.Mechanism(PyKCS11.CKM_RSA_PKCS).to_native()
start = time.perf_counter()
for ct in cts:
    assert low.C_DecryptInit(handle, mech, key) == 0
    out = PyKCS11.ckbytelist(bytes(len(ct)))
    assert low.C_Decrypt(handle, PyKCS11.ckbytelist(ct), out) == 0 and len(out) == 32
print(time.perf_counter() - start)
session.logout(); session.closeSession()
"""


# The batch through the service, in a fresh interpreter as the CLI runs it; prints the
# seconds from the first output to the last: the steady state, without the start-up.
STEADY = r"""
import sys, time
from pathlib import Path
from tokenkeys.config import load_config
from tokenkeys.services import opening, opening_batch
from tokenkeys.types import PinSource
src, out, uri = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
found, unopened = opening_batch.collect([src])
stamps = []
opening.open_envelopes(load_config(), opening_batch.plan(found, out), outdir=out,
                       token_uri=uri, service="default", pins=PinSource(),
                       on_result=lambda _r: stamps.append(time.perf_counter()))
assert len(stamps) == len(found)
print(stamps[-1] - stamps[0])
"""


def steady_per_envelope(src: Path, out: Path, uri: str, env: dict[str, str]) -> float:
    """Seconds per envelope between the batch's first output and its last."""
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", STEADY, str(src), str(out), uri], env=env,
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip()) / (len(list(src.iterdir())) - 1)


def run(*args: str | Path, env: dict[str, str] | None = None) -> str:
    return subprocess.run([*map(str, args)], capture_output=True, text=True, check=True,
                          env=env).stdout


def setup(base: Path, n: int) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    from tokenkeys.envelope.seal import SealOptions, seal

    run("pkcs11-tool", "--module", MODULE, "--login", "--login-type", "so", "--so-pin", SO_PIN,
        "--keypairgen", "--key-type", "rsa:2048", "--id", "02")
    run("pkcs11-tool", "--module", MODULE, "--read-object", "--type", "pubkey", "--id", "02",
        "-o", base / "pub.der")
    public = serialization.load_der_public_key((base / "pub.der").read_bytes())
    assert isinstance(public, rsa.RSAPublicKey)
    ca = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "card")]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")]))
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .sign(ca, hashes.SHA256()))
    envelopes = base / "envelopes"
    envelopes.mkdir()
    (base / "empty").mkdir()
    for i in range(n):
        src = base / f"bid{i}.bin"
        src.write_bytes(os.urandom(4096))
        seal(src, envelopes / f"bid{i}.bin.p7m", [cert], SealOptions(key_transport="pkcs1v15"))
    cts = base / "cts.hex"
    cts.write_text("".join(public.encrypt(os.urandom(32), padding.PKCS1v15()).hex() + "\n"
                           for _ in range(n)))
    return envelopes, cts


def timed_open(src: Path, out: Path, env: dict[str, str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tokenkeys", "open", str(src), "-o", str(out),
                    "--token", URI], env=env, capture_output=True, check=True)
    return time.perf_counter() - start


def spread(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values),
                                                max(values)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path,
                        help="Also profile one `open` of the N envelopes into this file.")
    args = parser.parse_args()
    # As pip installs it: bytecode compiled once (PYTHONDONTWRITEBYTECODE would
    # otherwise make every `tokenkeys` process compile its modules again).
    run(sys.executable, "-m", "compileall", "-q", ROOT / "tokenkeys")
    base = Path(tempfile.mkdtemp(prefix="bench-card-"))
    env = {**os.environ, "SCARD_STATE": str(base / "state"),
           "PATH": os.environ.get("PATH", "") + ":/usr/sbin"}
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            run(SCARD, "up", env=env)
            envelopes, cts = setup(base, args.n)
            cli_env = {**{k: v for k, v in os.environ.items() if not k.startswith("TOKENKEYS_")},
                       "TOKENKEYS_PIN": PIN, "TOKENKEYS_REGISTRY": str(base / "r.sqlite")}
            bare, empty, full, steady = [], [], [], []
            for _ in range(args.rounds):
                out = run(sys.executable, "-c", BARE, cts, MODULE, PIN)
                bare.append(float(out.strip()) / args.n)
                empty.append(timed_open(base / "empty", base / "out0", cli_env))
                full.append(timed_open(envelopes, base / "out", cli_env))
                assert len(list((base / "out").iterdir())) == args.n
                steady.append(steady_per_envelope(envelopes, base / "out1", URI, cli_env))
            if args.profile:
                shutil.rmtree(base / "out")
                subprocess.run([sys.executable, "-m", "cProfile", "-o", str(args.profile), "-m",
                                "tokenkeys", "open", str(envelopes), "-o", str(base / "out"),
                                "--token", URI], env=cli_env, capture_output=True, check=True)
        finally:
            run(SCARD, "down", env=env)
    beyond = [(f - e) / args.n - b for f, e, b in zip(full, empty, bare, strict=True)]
    print(f"| what (n={args.n}, {args.rounds} rounds, min / median / max) | value |")
    print("|---|---|")
    card_ms = spread([b * 1000 for b in bare], ".2f")
    print(f"| bare PyKCS11 `C_Decrypt` (`RSA_PKCS`), ms per decryption | {card_ms} |")
    print(f"| `tokenkeys open` of an empty directory (start-up), s | {spread(empty, '.3f')} |")
    print(f"| `tokenkeys open` of {args.n} envelopes, s | {spread(full, '.3f')} |")
    print(f"| per envelope beyond the card, from the two CLI times, ms | "
          f"{spread([x * 1000 for x in beyond], '.2f')} |")
    print(f"| `open_envelopes` per envelope, first output to last, ms | "
          f"{spread([x * 1000 for x in steady], '.2f')} |")
    beyond_steady = [(s - b) * 1000 for s, b in zip(steady, bare, strict=True)]
    print(f"| **per envelope beyond the card** (that, less the bare decryption), ms | "
          f"{spread(beyond_steady, '.2f')} |")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
