"""A service's keys as a platform page asks for them, by value: no file paths.

The assistant's API lists the keys of a service from the registry (no device, no
PIN), generates a key and gives back its certificate (or its public key while it
awaits one), and stores a CA-issued certificate given as PEM text. The workflows
are key_inventory's, the same the CLI runs; only the transport differs (PEM in and
out instead of files).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tokenkeys.config import Config
from tokenkeys.drivers import KeyHandle, Token
from tokenkeys.errors import CertificateRefused
from tokenkeys.i18n import _
from tokenkeys.registry import Consultation, KeyRow
from tokenkeys.services import consultations, key_inventory
from tokenkeys.services import keys as key_policy
from tokenkeys.services.access import open_registry
from tokenkeys.services.envelope_kinds import beside_registry
from tokenkeys.services.key_certs import CHAINS_DIR
from tokenkeys.types import Algorithm

EXPIRES_SOON = timedelta(days=30)
MAX_PEM = 64 * 1024


def expiry_status(row: KeyRow, now: datetime | None = None) -> str:
    """"awaiting certificate", "expired", "expires soon" (30 days) or "valid"."""
    if row.not_after is None or row.awaiting_certificate:
        return "awaiting certificate"
    now = now or datetime.now(UTC)
    ends = datetime.fromisoformat(row.not_after.replace("Z", "+00:00"))
    if ends.tzinfo is None:
        ends = ends.replace(tzinfo=UTC)
    if ends <= now:
        return "expired"
    return "expires soon" if ends - now <= EXPIRES_SOON else "valid"


def _pem(cert: x509.Certificate | None) -> str | None:
    return None if cert is None else cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class ServiceKey:
    row: KeyRow

    def to_json(self) -> dict[str, object]:
        r = self.row
        return {"designation": r.designation, "cn": r.cn, "algorithm": r.algorithm,
                "not_after": r.not_after, "expiry": expiry_status(r), "backup": r.backup,
                "shareable": r.shareable, "fingerprint": r.fingerprint,
                "open_consultations": list(r.open_consultations),
                "certificate_pem": _pem(r.certificate)}


def check_free(config: Config, service: str, designation: str) -> None:
    """Refuse, before the user is asked anything, a designation the service already uses
    (or an unknown service)."""
    with open_registry(config) as registry:
        key_policy.check_free(registry, service, designation)


def recipient_pems(consultation: Consultation) -> list[str]:
    """The consultation's certificates (bound key, then backup keys) as PEM text."""
    return [_pem(c) or "" for c in consultations.certificates(consultation)]


def listed(config: Config, service: str) -> list[ServiceKey]:
    """The live keys of `service`, from the registry."""
    with open_registry(config) as registry:
        return [ServiceKey(r) for r in registry.keys(service)]


@dataclass(frozen=True)
class NewKey:
    generated: key_inventory.Generated
    certificate_pem: str | None
    public_key_pem: str

    def to_json(self) -> dict[str, object]:
        return {**self.generated.to_json(), "certificate_pem": self.certificate_pem,
                "public_key_pem": self.public_key_pem,
                "status": "certified" if self.certificate_pem else "awaiting certificate"}


def generate(config: Config, service: str, opened: Callable[[], AbstractContextManager[Token]],
             name: str, *, cn: str | None, algorithm: Algorithm, days: int, backup: bool
             ) -> NewKey:
    """`key generate` (key_inventory.generate), answered with PEM text: the certificate,
    and the public key (what a CA needs while the key awaits its certificate)."""
    publics: dict[str, str] = {}

    @contextmanager
    def keeping_publics() -> Iterator[Token]:
        with opened() as token:
            yield token
            publics.update((k.id.hex(), _public_pem(k)) for k in token.list_keys())

    with open_registry(config) as registry:
        done = key_inventory.generate(registry, service, keeping_publics, name, cn=cn,
                                      algorithm=algorithm, days=days, backup=backup)
        row = registry.key(service, name)
    return NewKey(done, _pem(row.certificate), publics.get(done.record.id, ""))


def _public_pem(key: KeyHandle) -> str:
    return key.public_key.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _load_pem_bundle(text: str, what: str) -> list[x509.Certificate]:
    if len(text) > MAX_PEM:
        raise CertificateRefused(_("the {what} is too large").format(what=what))
    try:
        certs = x509.load_pem_x509_certificates(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise CertificateRefused(_("the {what} is not PEM certificate text").format(what=what)
                                 ) from None
    return certs


def certify(config: Config, service: str, token: Token, name: str, certificate_pem: str,
            chain_pem: str | None = None) -> key_inventory.Certified:
    """`key import-cert` with the certificate (and its chain) given as PEM text; `token`
    is logged in."""
    [cert, *extra] = _load_pem_bundle(certificate_pem, "certificate")
    chain = extra + (_load_pem_bundle(chain_pem, "chain") if chain_pem else [])
    with open_registry(config) as registry:
        handle = key_policy.resolve(token, name, service=service,
                                    registry=lambda: open_registry(config))
        return key_inventory.certify(registry, service, token, handle, cert, chain,
                                     beside_registry(config, CHAINS_DIR))
