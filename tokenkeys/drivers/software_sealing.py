"""The software keystore's sealing (docs/drivers.md): PIN derivation, the master key,
each private key's seal, and the PIN strength rule.

Version 2: `keystore.json` holds a random master key sealed (AES-256-GCM) under a
key derived from the PIN by Argon2id, with the KDF parameters stored in the file;
each private key (PKCS#8 DER) is sealed under HKDF(master, key id). Version 1
(scrypt per key, PIN verifier) is still read, and written for keys added to a
version 1 keystore before its upgrade. The parameters new seals use (ARGON2ID) are
the keystore's choice: tokenkeys.drivers.software passes them in.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tokenkeys.errors import PinIncorrect, UsageError
from tokenkeys.i18n import N_, _
from tokenkeys.types import Secret

FORMAT = "tokenkeys-softkey-v1"
FORMAT_V2 = "tokenkeys-softkey-v2"
# Version 1 only: scrypt N=2^15, r=8: 32 MiB and ~0.12 s per derivation.
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
MIN_PIN_LENGTH = 8
MIN_PIN_DISTINCT = 4
NOT_ACCEPTED = N_("the software keystore has no try counter; the PIN is not accepted")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def derive(pin: Secret, salt: bytes, params: dict[str, Any]) -> bytes:
    """The PIN-derived key: Argon2id (version 2) or scrypt (version 1 files)."""
    secret = pin.reveal().encode("utf-8")
    if params.get("name") == "argon2id":
        return Argon2id(salt=salt, length=32, iterations=int(params["iterations"]),
                        lanes=int(params["lanes"]),
                        memory_cost=int(params["memory_cost"])).derive(secret)
    kdf = Scrypt(salt=salt, length=32, n=params["n"], r=params["r"], p=params["p"])
    return kdf.derive(secret)


def key_kek(master: bytes, key_id: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"tokenkeys-softkey-v2 " + key_id
                ).derive(master)


def check_pin_strength(pin: Secret) -> None:
    """Refuse a PIN for a new keystore (or a PIN change) that falls to offline guessing.

    Without a try counter, anyone with a copy of the directory can guess at
    the cost of one derivation (~0.5 s on one core): 10^4 PINs fall in about
    1.5 core-hours and 10^6 in a week; 10^8 (8 digits) cost 1.6 core-years.
    """
    value = pin.reveal()
    if len(value) < MIN_PIN_LENGTH or len(set(value)) < MIN_PIN_DISTINCT:
        raise UsageError(
            _("a software keystore PIN needs at least {MIN_PIN_LENGTH} characters, "
              "{MIN_PIN_DISTINCT} of them different: it has no try counter, so a short PIN "
              "falls to offline guessing (see docs/drivers.md)")
            .format(MIN_PIN_LENGTH=MIN_PIN_LENGTH, MIN_PIN_DISTINCT=MIN_PIN_DISTINCT))


def seal_master(pin: Secret, master: bytes, kdf: dict[str, Any]) -> dict[str, Any]:
    """keystore.json's sealed master key, under `pin` derived with the `kdf` parameters."""
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    kek = derive(pin, salt, kdf)
    return {"kdf": {**kdf, "salt": b64(salt)}, "master_nonce": b64(nonce),
            "master": b64(AESGCM(kek).encrypt(nonce, master, b"tokenkeys-master"))}


def open_master(meta: dict[str, Any], pin: Secret) -> bytes | None:
    """Check the PIN against keystore.json (`meta`); the master key of a version 2
    keystore, None for version 1."""
    if "kdf" in meta:
        kek = derive(pin, unb64(meta["kdf"]["salt"]), meta["kdf"])
        try:
            return AESGCM(kek).decrypt(unb64(meta["master_nonce"]), unb64(meta["master"]),
                                       b"tokenkeys-master")
        except InvalidTag:
            raise PinIncorrect(NOT_ACCEPTED) from None
    key = derive(pin, unb64(meta["salt"]), meta["scrypt"])
    check = hmac.new(key, b"tokenkeys-pin-check", "sha256").digest()
    if not hmac.compare_digest(check, unb64(meta["pin_check"])):
        raise PinIncorrect(NOT_ACCEPTED)
    return None


def seal_key(master: bytes, record: dict[str, Any], der: bytes) -> dict[str, Any]:
    """A key file's record (version 2): `der` sealed under the master key."""
    key_id = bytes.fromhex(record["id"])
    nonce = secrets.token_bytes(12)
    out = {k: v for k, v in record.items() if k not in ("salt", "scrypt")}
    out.update(format=FORMAT_V2, nonce=b64(nonce),
               ciphertext=b64(AESGCM(key_kek(master, key_id)).encrypt(nonce, der, key_id)))
    return out


def seal_key_v1(pin: Secret, record: dict[str, Any], der: bytes) -> dict[str, Any]:
    """A key file's record (version 1): `der` sealed under a key derived from the PIN."""
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    sealed = AESGCM(derive(pin, salt, SCRYPT)).encrypt(nonce, der, bytes.fromhex(record["id"]))
    return {**record, "salt": b64(salt), "scrypt": SCRYPT, "nonce": b64(nonce),
            "ciphertext": b64(sealed)}


def unseal_key(record: dict[str, Any], *, master: bytes | None = None,
               pin: Secret | None = None) -> bytes:
    """The PKCS#8 DER of a key file's record: a version 2 record needs the master key,
    a version 1 record the PIN."""
    key_id = bytes.fromhex(record["id"])
    if record["format"] == FORMAT_V2:
        assert master is not None
        key = key_kek(master, key_id)
    else:
        assert pin is not None
        key = derive(pin, unb64(record["salt"]), record["scrypt"])
    try:
        return AESGCM(key).decrypt(unb64(record["nonce"]), unb64(record["ciphertext"]), key_id)
    except InvalidTag:
        raise PinIncorrect(NOT_ACCEPTED) from None
