"""What the envelope layer needs to know about an Identity to match recipients."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from asn1crypto import x509 as a1x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tokenkeys import keyalg
from tokenkeys.envelope.identity import Identity
from tokenkeys.i18n import _

_ATTR_NAMES = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
               "2.5.4.11": "OU", "2.5.4.5": "serialNumber", "1.2.840.113549.1.9.1": "emailAddress",
               "2.5.4.97": "organizationIdentifier"}


def format_name(name: a1x509.Name) -> str:
    parts = []
    for rdn in name.chosen:
        for atv in rdn:
            key = _ATTR_NAMES.get(atv["type"].dotted, atv["type"].dotted)
            parts.append(f"{key}={atv['value'].native}")
    return ",".join(parts) or _("(empty name)")


def ski_of(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    """RFC 5280 method 1: SHA-1 of the subjectPublicKey BIT STRING value (keyalg)."""
    return keyalg.key_id(public_key)


@functools.lru_cache(maxsize=256)
def _certificate_facts(der: bytes) -> tuple[a1x509.Name, int, bytes | None]:
    # A batch opens thousands of envelopes with the same few certificates, and
    # parsing one with asn1crypto costs more than the rest of the matching.
    cert = a1x509.Certificate.load(der)
    ski = bytes(cert.key_identifier) if cert.key_identifier else None
    return cert.issuer, int(cert.serial_number), ski


@dataclass
class IdentityView:
    """Facts about one Identity used for matching."""

    identity: Identity
    issuer: a1x509.Name | None = None
    serial: int | None = None
    skis: frozenset[bytes] = frozenset()

    @property
    def label(self) -> str:
        return self.identity.label

    @property
    def is_rsa(self) -> bool:
        return isinstance(self.identity.public_key, rsa.RSAPublicKey)

    @classmethod
    def of(cls, identity: Identity) -> IdentityView:
        skis = {ski_of(identity.public_key)}
        if identity.certificate is None:
            return cls(identity, None, None, frozenset(skis))
        der = identity.certificate.public_bytes(serialization.Encoding.DER)
        issuer, serial, ski = _certificate_facts(der)
        if ski:
            skis.add(ski)
        return cls(identity, issuer, serial, frozenset(skis))
