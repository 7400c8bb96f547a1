"""Baseline for batch opening: a bare python-pkcs11 C_Decrypt loop on one session.

    PYTHON=.venv/bin/python .venv/bin/python tests/benchmarks/bench_raw_decrypt.py [N]

Without SOFTHSM2_CONF a throwaway SoftHSM2 is set up in a temporary directory.
PIN from TOKENKEYS_PIN (default 123456 for the throwaway token), never argv.
The batch benchmark imports raw_decrypt_rate() and compares against it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


def _rate(n: int, fn: object) -> float:
    call = fn  # type: ignore[assignment]
    start = time.perf_counter()
    for _ in range(n):
        call()  # type: ignore[operator]
    return n / (time.perf_counter() - start)


def raw_decrypt_rate(
    module: str, token_label: str, pin: str, key_label: str, n: int = 300
) -> dict[str, float]:
    """ops/s of RSA_X_509 and of on-device OAEP-SHA1, bare python-pkcs11, plus the driver.

    `pin` is a throwaway test PIN passed in memory. Keys: `raw`, `oaep_sha1` (bare
    loops) and `driver_oaep_sha1`, `driver_oaep_sha256` (P11Key.decrypt).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from pkcs11 import MGF, Mechanism, ObjectClass

    from tokenkeys.config import Config
    from tokenkeys.drivers.p11.python_pkcs11 import load_lib
    from tokenkeys.drivers.p11.token import P11Token
    from tokenkeys.uri import parse_pkcs11

    lib = load_lib(module)
    token = next(t for t in lib.get_tokens(token_label=token_label))
    session = token.open(user_pin=pin)
    try:
        priv = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key_label)
        pub = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=key_label)
        block = b"\x00" + os.urandom(pub.key_length // 8 - 1)
        ct_raw = pub.encrypt(block, mechanism=Mechanism.RSA_X_509)
        ct_oaep = pub.encrypt(b"k" * 32, mechanism=Mechanism.RSA_PKCS_OAEP,
                              mechanism_param=(Mechanism.SHA_1, MGF.SHA1, None))
        oaep_param = (Mechanism.SHA_1, MGF.SHA1, None)
        rates = {
            "raw": _rate(n, lambda: priv.decrypt(ct_raw, mechanism=Mechanism.RSA_X_509)),
            "oaep_sha1": _rate(n, lambda: priv.decrypt(
                ct_oaep, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=oaep_param)),
        }
        uri = parse_pkcs11(f"pkcs11:token={token_label}?module-path={module}")
        with P11Token.open(uri, Config()) as tok:
            key = tok.find_key(label=key_label)  # already logged in through `session`
            for name, h in (("driver_oaep_sha1", hashes.SHA1()),
                            ("driver_oaep_sha256", hashes.SHA256())):
                pad = padding.OAEP(padding.MGF1(h), h, None)
                ct = key.public_key.encrypt(b"k" * 32, pad)  # type: ignore[union-attr]
                rates[name] = _rate(n, lambda ct=ct, pad=pad: key.decrypt(ct, pad))
        return rates
    finally:
        session.close()


def _throwaway(pin: str) -> tuple[str, str]:
    base = tempfile.mkdtemp(prefix="tk-bench-")
    env = {**os.environ, "PYTHON": sys.executable, "TOKENKEYS_PIN": pin}
    env.setdefault("TOKENKEYS_SO_PIN", "12345678")
    subprocess.run([str(ROOT / "softhsm-config" / "setup-tokens.sh"), base, "bench"],
                   env=env, check=True, capture_output=True)
    os.environ["SOFTHSM2_CONF"] = f"{base}/softhsm2.conf"
    return "bench", "bench-rsa3072"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    pin = os.environ.get("TOKENKEYS_PIN", "123456")
    token_label = os.environ.get("BENCH_TOKEN", "bench")
    key_label = os.environ.get("BENCH_KEY", "bench-rsa3072")
    if "SOFTHSM2_CONF" not in os.environ:
        token_label, key_label = _throwaway(pin)
    from tokenkeys.config import Config
    from tokenkeys.drivers.p11.token import P11Token
    from tokenkeys.errors import KeyNotFound
    from tokenkeys.types import Algorithm, KeySpec, PinSource
    from tokenkeys.uri import parse_pkcs11

    uri = parse_pkcs11(f"pkcs11:token={token_label}?module-path={SOFTHSM}")
    os.environ["TOKENKEYS_PIN"] = pin
    with P11Token.open(uri, Config()) as tok:
        tok.login(PinSource(interactive=False))
        try:
            tok.find_key(label=key_label)
        except KeyNotFound:
            tok.generate_keypair(KeySpec(key_label, Algorithm.RSA3072))
    rates = raw_decrypt_rate(SOFTHSM, token_label, pin, key_label, n)
    for name, rate in rates.items():
        print(f"{name:20s} {rate:8.1f} ops/s")
    ratio = rates["driver_oaep_sha1"] / rates["oaep_sha1"]
    print(f"driver OAEP-SHA1 / bare OAEP-SHA1 = {ratio:.2f}")
    print(f"driver OAEP-SHA256 / bare raw     = {rates['driver_oaep_sha256'] / rates['raw']:.2f}")


if __name__ == "__main__":
    main()
