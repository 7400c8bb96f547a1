"""What the envelope layer needs to know about an Identity to match recipients."""

from __future__ import annotations

import functools
import threading
import weakref
from dataclasses import dataclass
from typing import Any

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
        key, cert = identity.public_key, identity.certificate
        with _LOCK:
            known = _FACTS.get(identity) if _weakly_held(identity) else None
        if known is not None and known[0] is key and known[1] is cert:
            return cls(identity, *known[2])
        skis = {ski_of(key)}
        issuer, serial = None, None
        if cert is not None:
            issuer, serial, ski = _certificate_facts(
                cert.public_bytes(serialization.Encoding.DER))
            if ski:
                skis.add(ski)
        facts = (issuer, serial, frozenset(skis))
        if _weakly_held(identity):
            with _LOCK:
                _FACTS[identity] = (key, cert, facts)
        return cls(identity, *facts)


# A batch matches the same few identities against every envelope: their facts (a
# DER encoding and a SHA-1 each time) are kept while the identity lives, for as long
# as its key and certificate are the same objects.
_Facts = tuple[a1x509.Name | None, int | None, frozenset[bytes]]
_FACTS: weakref.WeakKeyDictionary[Any, tuple[object, object, _Facts]] = (
    weakref.WeakKeyDictionary())
_LOCK = threading.Lock()


def _weakly_held(identity: object) -> bool:
    try:
        weakref.ref(identity)
        hash(identity)
    except TypeError:
        return False
    return True
