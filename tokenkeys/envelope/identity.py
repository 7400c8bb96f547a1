"""The two tiny interfaces the envelope layer works with (after age).

The envelope layer never imports drivers. A driver KeyHandle satisfies
Identity; a plain `cryptography` private key is adapted by SoftwareIdentity.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

from tokenkeys.i18n import _


@runtime_checkable
class Identity(Protocol):
    """Something that can open a recipient: RSA decrypt or the ECDH step."""

    label: str
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    certificate: x509.Certificate | None

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes: ...

    def derive_ecdh(self, peer_public: ec.EllipticCurvePublicKey) -> bytes: ...


class SoftwareIdentity:
    """Adapts a cryptography private key (and optional certificate) to Identity."""

    def __init__(
        self,
        private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate | None = None,
        label: str = _("software key"),
    ) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.certificate = certificate
        self.label = label

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        if not isinstance(self._key, rsa.RSAPrivateKey):
            raise TypeError(_("not an RSA key"))
        return self._key.decrypt(ciphertext, padding)

    def derive_ecdh(self, peer_public: ec.EllipticCurvePublicKey) -> bytes:
        if not isinstance(self._key, ec.EllipticCurvePrivateKey):
            raise TypeError(_("not an EC key"))
        return self._key.exchange(ec.ECDH(), peer_public)
