"""Certificates signed ON the token: the signer objects and self-signed certificates.

cryptography (>= 50) `CertificateBuilder.sign` accepts any RSAPrivateKey /
EllipticCurvePrivateKey subclass; ours forwards `sign` to KeyHandle.sign and
refuses everything that would need the private key material.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding, PKCS1v15
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from tokenkeys import keyalg
from tokenkeys.certificates import Signer, build_certificate, common_name, validity
from tokenkeys.drivers.base import KeyHandle
from tokenkeys.errors import UsageError
from tokenkeys.i18n import _


def _refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise UsageError(_("the private key stays on the token: only signing is possible"))


def _hash_of(algorithm: Any) -> hashes.HashAlgorithm:
    if isinstance(algorithm, Prehashed):
        raise UsageError(_("pre-hashed signing is not supported by token keys"))
    if not isinstance(algorithm, hashes.HashAlgorithm):
        raise UsageError(_("unsupported signature algorithm"))
    return algorithm


class TokenRSAKey(rsa.RSAPrivateKey):
    def __init__(self, key: KeyHandle) -> None:
        assert isinstance(key.public_key, rsa.RSAPublicKey)
        self._key = key
        self._public = key.public_key

    def sign(self, data: bytes, padding: AsymmetricPadding, algorithm: Any) -> bytes:
        if not isinstance(padding, PKCS1v15):
            raise UsageError(_("token keys sign with PKCS#1 v1.5 only"))
        return self._key.sign(data, _hash_of(algorithm))

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    decrypt = _refuse
    private_numbers = _refuse
    private_bytes = _refuse
    __copy__ = _refuse
    __deepcopy__ = _refuse


class TokenECKey(ec.EllipticCurvePrivateKey):
    def __init__(self, key: KeyHandle) -> None:
        assert isinstance(key.public_key, ec.EllipticCurvePublicKey)
        self._key = key
        self._public = key.public_key

    def sign(
        self,
        data: bytes | bytearray | memoryview,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
    ) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UsageError(_("token EC keys sign with ECDSA only"))
        return self._key.sign(bytes(data), _hash_of(signature_algorithm.algorithm))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    exchange = _refuse
    private_numbers = _refuse
    private_bytes = _refuse
    __copy__ = _refuse
    __deepcopy__ = _refuse


def signer_for(key: KeyHandle) -> Signer:
    """A cryptography private key that signs on the device, and its hash (keyalg)."""
    signer: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        TokenRSAKey(key) if isinstance(key.public_key, rsa.RSAPublicKey) else TokenECKey(key))
    return signer, keyalg.signature_hash(key.public_key)


def self_signed(key: KeyHandle, cn: str, days: int, not_before: datetime | None = None, *,
                ca: bool = False) -> x509.Certificate:
    """A self-signed certificate for `key` (a CA's with `ca`), signed on its device.
    Requires login."""
    if days < 1:
        raise UsageError(_("validity must be at least one day, not {days}").format(days=days))
    name = common_name(cn)
    return build_certificate(key.public_key, name, validity(days, not_before), signer_for(key),
                             ca=ca)
