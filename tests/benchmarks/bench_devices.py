"""Decryptions per second on every device, the same envelopes in one run.

    .venv/bin/python tests/benchmarks/bench_devices.py [--n 100] [--rounds 3] [--card]

Devices: SoftHSM2 (its own token directory), an emulated TPM 2.0 (swtpm +
tpm2-abrmd + tpm2-pkcs11, tests/devices/harness.py), opencryptoki's software
token (pkcsslotd; skipped, with the reason, when it cannot run or its token is
not the tests' own), the software keystore and, with --card, the emulated
OpenPGP card (tests/smartcard/scard.sh, the machine-wide smartcard lock). Each
gets an RSA-2048 key (`tokenkeys key generate`; on the card, pkcs11-tool in
slot 02 with a certificate from a throw-away CA, imported with `tokenkeys key
import-cert`). N envelopes of 4 KB
(AuthEnvelopedData AES-256-GCM) are sealed ONCE to every device's certificate
(one RecipientInfo per device): the same files are opened on each device.
Two sets: RSA-OAEP SHA-256 (the card opens v1.5 only: not in this set) and
PKCS#1 v1.5. Interleaved rounds of `tokenkeys open` (CLI end to end) of an
empty directory and of each set; decryptions per second = N / (median open N -
median open empty). The route each device takes is doctor's
(services/device_caps.py). Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
from bench_card_open import LOCK as CARD_LOCK  # noqa: E402
from bench_card_open import MODULE as CARD_MODULE  # noqa: E402
from bench_card_open import spread  # noqa: E402

PIN, SO_PIN = "123456", "12345678"
SOFT_PIN = "bench keystore PIN 2026"
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
SETS = ("oaep-sha256", "pkcs1v15")


@dataclass
class Device:
    name: str
    uri: str
    env: dict[str, str]
    cert: Path | None = None
    kinds: tuple[str, ...] = SETS
    route: dict[str, str] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)


def tk(env: dict[str, str], *args: str | Path) -> str:
    done = subprocess.run([sys.executable, "-m", "tokenkeys", *map(str, args)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"tokenkeys {' '.join(map(str, args))} (exit {done.returncode}): "
                           f"{done.stderr.strip() or done.stdout.strip()[-2000:]}")
    return done.stdout


def base_env(base: Path, pin: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENKEYS_")}
    return {**env, "TOKENKEYS_PIN": pin, "TOKENKEYS_SO_PIN": SO_PIN, "PYTHONPATH": str(ROOT),
            "TOKENKEYS_REGISTRY": str(base / "registry.sqlite"),
            "XDG_CONFIG_HOME": str(base / "xdg")}


def keyed(dev: Device, base: Path) -> Device:
    """An RSA-2048 key with a self-signed certificate, and doctor's routes for it."""
    tk(dev.env, "key", "generate", "--token", dev.uri, "--name", "BENCH", "--algorithm",
       "rsa2048")
    dev.cert = base / f"{dev.name.split()[0].lower()}.pem"
    tk(dev.env, "key", "export-cert", "BENCH", "--token", dev.uri, "-o", dev.cert)
    return dev


def routes(dev: Device) -> None:
    from tokenkeys.config import Config
    from tokenkeys.drivers import open_token
    from tokenkeys.services.device_caps import token_capabilities

    saved = dict(os.environ)
    os.environ.update(dev.env)
    try:
        with open_token(dev.uri, Config()) as tok:
            dev.route = token_capabilities(tok).key_types[0].opens
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def devices(base: Path, card: bool) -> Iterator[list[Device]]:
    from tests.devices import harness

    found: list[Device] = []
    with contextlib.ExitStack() as stack:
        (base / "softhsm").mkdir()
        (base / "softhsm.conf").write_text(f"directories.tokendir = {base / 'softhsm'}\n")
        env = {**base_env(base / "softhsm", PIN), "SOFTHSM2_CONF": str(base / "softhsm.conf")}
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench",
                        "--pin", PIN, "--so-pin", SO_PIN], env=env, check=True,
                       capture_output=True)
        found.append(keyed(Device("SoftHSM2", f"pkcs11:token=bench?module-path={SOFTHSM}",
                                  env), base))
        try:
            tpm = harness.start_tpm(base / "tpm")
            stack.callback(tpm.stop)
            env = {**base_env(base / "tpm", tpm.pin), **tpm.env}
            tk(env, "token", "init", "--token", f"pkcs11:?module-path={tpm.module}",
               "--label", "bench")
            found.append(keyed(Device("TPM 2.0 (swtpm)", tpm.uri("bench"), env), base))
        except harness.Unavailable as exc:
            print(f"TPM 2.0 left out: {exc}", file=sys.stderr)
        try:
            ock = harness.start_opencryptoki()
            stack.callback(ock.stop)
            import pytest

            from tests.conftest import reset_opencryptoki
            try:
                uri = reset_opencryptoki(ock)
            except pytest.skip.Exception as exc:
                raise harness.Unavailable(str(exc)) from None
            found.append(keyed(Device("opencryptoki (soft token)", uri,
                                      base_env(base / "ock", ock.pin)), base))
        except harness.Unavailable as exc:
            print(f"opencryptoki left out: {exc}", file=sys.stderr)
        env = base_env(base / "ks", SOFT_PIN)
        tk(env, "token", "init", "--token", f"soft:{base / 'ks'}", "--label", "bench")
        found.append(keyed(Device("software keystore", f"soft:{base / 'ks'}", env), base))
        if card:
            try:
                found.append(stack.enter_context(emulated_card(base)))
            except harness.Unavailable as exc:
                print(f"OpenPGP card left out: {exc}", file=sys.stderr)
        yield found


@contextlib.contextmanager
def emulated_card(base: Path) -> Iterator[Device]:
    """The emulated OpenPGP card: a key in slot 02, a certificate from a throw-away CA
    imported onto the card (`tokenkeys key import-cert`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    env = {**base_env(base / "card", PIN), "SCARD_STATE": str(base / "card-state"),
           "PATH": os.environ.get("PATH", "") + ":/usr/sbin"}
    scard = ROOT / "tests" / "smartcard" / "scard.sh"
    with open(CARD_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        up = subprocess.run([scard, "up"], env=env, capture_output=True, text=True)
        if up.returncode != 0:
            raise harness_unavailable(f"scard.sh up: {(up.stdout + up.stderr).strip()}")
        try:
            p11 = ["pkcs11-tool", "--module", CARD_MODULE]
            subprocess.run([*p11, "--login", "--login-type", "so", "--so-pin", SO_PIN,
                            "--keypairgen", "--key-type", "rsa:2048", "--id", "02"],
                           env=env, check=True, capture_output=True)
            subprocess.run([*p11, "--read-object", "--type", "pubkey", "--id", "02", "-o",
                            base / "card.der"], env=env, check=True, capture_output=True)
            public = serialization.load_der_public_key((base / "card.der").read_bytes())
            assert isinstance(public, rsa.RSAPublicKey)
            ca = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            now = datetime.now(UTC)
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "card")])
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")]))
                .public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=1))
                .not_valid_after(now + timedelta(days=1)).sign(ca, hashes.SHA256()))
            (base / "card.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            uri = f"pkcs11:token=OpenPGP%20card%20(User%20PIN)?module-path={CARD_MODULE}"
            # Onto the card, as a user does: the key then names its own recipient (a
            # certificate-less key has to try every v1.5 block of its size).
            key_uri = uri.replace("?", ";id=%02?")
            tk(env, "key", "import-cert", key_uri, base / "card.pem", "--token", uri)
            yield Device("OpenPGP card (emulated)", uri, env, base / "card.pem",
                         kinds=("pkcs1v15",))
        finally:
            subprocess.run([scard, "down"], env=env, check=False, capture_output=True)


def harness_unavailable(reason: str) -> Exception:
    from tests.devices.harness import Unavailable

    return Unavailable(reason)


def seal_sets(base: Path, found: list[Device], n: int) -> dict[str, Path]:
    """N envelopes per set, each sealed once to every device that opens the set."""
    from cryptography import x509

    from tokenkeys.envelope.seal import SealOptions, seal

    dirs = {}
    for kind in SETS:
        certs = [x509.load_pem_x509_certificate(d.cert.read_bytes()) for d in found
                 if kind in d.kinds and d.cert is not None]
        dirs[kind] = base / f"in-{kind}"
        dirs[kind].mkdir()
        for i in range(n):
            src = base / "plain.bin"
            src.write_bytes(os.urandom(4096))
            seal(src, dirs[kind] / f"bid{i}.p7m", certs, SealOptions(key_transport=kind))
    (base / "empty").mkdir()
    return dirs


def timed_open(dev: Device, src: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    tk(dev.env, "open", src, "-o", out, "--token", dev.uri)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--card", action="store_true", help="also the emulated OpenPGP card")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", ROOT / "tokenkeys"], check=True)
    base = Path(tempfile.mkdtemp(prefix="bench-devices-"))
    try:
        with devices(base, args.card) as found:
            dirs = seal_sets(base, found, args.n)
            for dev in found:
                routes(dev)
            for _ in range(args.rounds):
                for dev in found:  # interleaved: load changes hit every device alike
                    dev.times.setdefault("empty", []).append(
                        timed_open(dev, base / "empty", base / "out"))
                    for kind in dev.kinds:
                        dev.times.setdefault(kind, []).append(
                            timed_open(dev, dirs[kind], base / "out"))
                        assert len(list((base / "out").iterdir())) == args.n
    finally:
        shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"n={args.n} envelopes of 4 KB per set, {args.rounds} rounds, min / median / max; "
          f"load average {load:.1f}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print(f"| device | set | route | open empty (start-up), s | open {args.n}, s | "
          "**decryptions per second** |")
    print("|---|---|---|---|---|---|")
    for dev in found:
        empty = statistics.median(dev.times["empty"])
        for kind in dev.kinds:
            # Medians: start-up varies with the load as much as N envelopes take.
            rate = args.n / (statistics.median(dev.times[kind]) - empty)
            print(f"| {dev.name} | {kind} | {dev.route.get(kind, '?')} | "
                  f"{spread(dev.times['empty'], '.2f')} | {spread(dev.times[kind], '.2f')} | "
                  f"**{rate:.0f}** |")


if __name__ == "__main__":
    main()
