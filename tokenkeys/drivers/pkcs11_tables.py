"""PKCS#11 tables without a binding: token flag words, PIN-tries words, and the
small format conversions (ECDSA r||s, ECDH peer point) of drivers/p11.

Numbers are from the PKCS#11 v2.40 headers, so no binding is imported here.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tokenkeys.i18n import N_

# CK_TOKEN_INFO.flags -> the words `token list` / `info()` show.
TOKEN_FLAGS: dict[int, str] = {
    0x00000001: "rng",
    0x00000002: "write-protected",
    0x00000004: "login-required",
    0x00000008: "user-pin-initialized",
    0x00000020: "restore-key-not-needed",
    0x00000040: "clock-on-token",
    0x00000100: "protected-auth-path",
    0x00000200: "dual-crypto-operations",
    0x00000400: "token-initialized",
    0x00000800: "secondary-authentication",
    0x00010000: "user-pin-count-low",
    0x00020000: "user-pin-final-try",
    0x00040000: "user-pin-locked",
    0x00080000: "user-pin-to-be-changed",
    0x00100000: "so-pin-count-low",
    0x00200000: "so-pin-final-try",
    0x00400000: "so-pin-locked",
    0x00800000: "so-pin-to-be-changed",
    0x01000000: "error-state",
}

# What PinIncorrect(tries_left) says, most severe first.
PIN_TRIES_WORDS: tuple[tuple[str, str], ...] = (
    ("user-pin-locked", N_("the PIN is now locked")),
    ("user-pin-final-try", N_("final try")),
    ("user-pin-count-low", N_("count low")),
)


def token_flag_words(flags: int) -> tuple[str, ...]:
    return tuple(word for bit, word in TOKEN_FLAGS.items() if flags & bit)


def tries_left(flags: int) -> str | None:
    """After a failed C_Login: what the token says about the remaining tries, or None."""
    words = token_flag_words(flags)
    return next((hint for word, hint in PIN_TRIES_WORDS if word in words), None)


def ecdsa_der(raw: bytes) -> bytes:
    """PKCS#11 returns ECDSA as r||s; X.509 and CMS want the DER SEQUENCE."""
    half = len(raw) // 2
    return encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                int.from_bytes(raw[half:], "big"))


def ec_point_of(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed point CKM_ECDH1_DERIVE takes as the peer's public data."""
    return public_key.public_bytes(serialization.Encoding.X962,
                                   serialization.PublicFormat.UncompressedPoint)
