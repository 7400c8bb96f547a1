"""The entity's own small CA: a key pair on a device, every certificate signed there.

`create_ca` makes the CA key and its self-signed certificate (basicConstraints
CA with pathLen 0, keyCertSign + cRLSign, subject key identifier). `issue_certificate`
signs an encryption certificate for a PKCS#10 request (signature checked) or
for a bare public key (cards whose decryption key cannot sign). Nothing here
touches key material: signing goes through services/signing.signer_for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tokenkeys import keyalg
from tokenkeys.certificates import (
    build_certificate,
    check_common_name,
    common_name,
    write_certificate,
)
from tokenkeys.certificates import fingerprint as fingerprint  # the CLI shows it
from tokenkeys.drivers.base import KeyHandle, PublicKey, Token
from tokenkeys.errors import (
    CertificateRefused,
    PolicyRefused,
    UsageError,
)
from tokenkeys.files import MAX_REQUEST, read_limited
from tokenkeys.i18n import _
from tokenkeys.services.keygen import generate_named
from tokenkeys.services.signing import self_signed, signer_for
from tokenkeys.types import Algorithm

_CSR_MARKERS = (b"-----BEGIN CERTIFICATE REQUEST-----", b"-----BEGIN NEW CERTIFICATE REQUEST-----")
_KEY_MARKERS = (b"-----BEGIN PUBLIC KEY-----", b"-----BEGIN RSA PUBLIC KEY-----")


@dataclass(frozen=True)
class CaRecord:
    """What `ca list` shows for one CA."""

    name: str
    subject: str
    algorithm: str
    uri: str
    not_after: datetime
    sha256: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "subject": self.subject, "algorithm": self.algorithm,
                "uri": self.uri, "not_after": self.not_after.isoformat(), "sha256": self.sha256}


@dataclass(frozen=True)
class Request:
    """What a certificate is issued for: a public key, and the name it asked for."""

    public_key: PublicKey
    subject: x509.Name | None
    kind: str  # "csr" | "public-key"


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    clipped: bool  # notAfter was cut to the CA's own notAfter


def is_ca_certificate(cert: x509.Certificate | None) -> bool:
    if cert is None:
        return False
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _record(key: KeyHandle) -> CaRecord:
    cert = key.certificate
    assert cert is not None
    return CaRecord(name=key.label, subject=cert.subject.rfc4514_string(),
                    algorithm=key.algorithm_name, uri=key.uri,
                    not_after=cert.not_valid_after_utc, sha256=fingerprint(cert))


def ca_certificate(key: KeyHandle, cn: str, days: int) -> x509.Certificate:
    """The CA's self-signed certificate, signed on its device. Requires login."""
    return self_signed(key, cn, days, ca=True)


def create_ca(token: Token, name: str, *, cn: str | None = None,
              algorithm: Algorithm = Algorithm.RSA3072,
              days: int = keyalg.MAX_DAYS) -> CaRecord:
    """Generate the CA key pair on `token` and self-sign its certificate there.

    Requires login. The same crash-safe path as `key generate` (keygen.generate_named):
    on any failure after generation the new key is destroyed.
    """
    if not name.strip():
        raise UsageError(_("the CA name must not be empty"))
    if not 1 <= days <= keyalg.MAX_CA_DAYS:
        raise UsageError(_("--days must be between 1 and {MAX_CA_DAYS}, not {days}")
                         .format(MAX_CA_DAYS=keyalg.MAX_CA_DAYS, days=days))
    check_common_name(cn or name)
    key = generate_named(token, name, algorithm, lambda k: ca_certificate(k, cn or name, days))
    return _record(key)


def list_cas(token: Token) -> list[CaRecord]:
    """Keys on `token` whose certificate is a CA certificate."""
    return [_record(k) for k in token.list_keys() if is_ca_certificate(k.certificate)]


def find_ca(token: Token, name: str) -> KeyHandle:
    key = token.find_key(label=name)
    if not is_ca_certificate(key.certificate):
        raise UsageError(_("key {name!r} is not a CA (create one with `tokenkeys ca create`)")
                         .format(name=name))
    return key


def _check_public_key(public: object) -> PublicKey:
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < keyalg.MIN_RSA_BITS:
            raise CertificateRefused(
                _("the request's RSA key has {key_size} bits (at least {MIN_RSA_BITS})")
                .format(key_size=public.key_size, MIN_RSA_BITS=keyalg.MIN_RSA_BITS))
        return public
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name not in keyalg.CURVES:
            raise CertificateRefused(_("the request's EC curve {name} is not supported "
                                       "(P-256 or P-384)").format(name=public.curve.name))
        return public
    raise CertificateRefused(_("the request's key is neither RSA nor EC"))


def read_request(path: Path) -> Request:
    """The request file `ca issue` takes (see load_request)."""
    data = read_limited(path, MAX_REQUEST, _("certificate request"))
    return load_request(data, str(path))


def save_certificate(cert: x509.Certificate, path: Path, *, der: bool, force: bool) -> None:
    """Write an issued or CA certificate (PEM, or DER); an existing file is refused
    unless `force`."""
    write_certificate(path, cert, der=der, overwrite=force)


def load_request(data: bytes, source: str) -> Request:
    """A PKCS#10 CSR (its signature must verify) or a bare SubjectPublicKeyInfo, PEM or DER."""
    csr: x509.CertificateSigningRequest | None = None
    public: object = None
    try:
        if any(m in data for m in _CSR_MARKERS):
            csr = x509.load_pem_x509_csr(data)
        elif any(m in data for m in _KEY_MARKERS):
            public = serialization.load_pem_public_key(data)
        else:
            try:
                csr = x509.load_der_x509_csr(data)
            except ValueError:
                public = serialization.load_der_public_key(data)
    except (ValueError, TypeError):
        raise UsageError(_("{source} is neither a PKCS#10 certificate request nor a public "
                           "key (PEM or DER)").format(source=source)) from None
    if csr is None:
        return Request(_check_public_key(public), None, "public-key")
    if not csr.is_signature_valid:
        raise CertificateRefused(_("the signature of the certificate request {source} does "
                                   "not verify: it was not made by the key it names")
                                 .format(source=source))
    subject = csr.subject if len(csr.subject) else None
    return Request(_check_public_key(csr.public_key()), subject, "csr")


def issue_certificate(ca_key: KeyHandle, request: Request, *, cn: str | None = None,
                      days: int = 365, now: datetime | None = None) -> Issued:
    """An encryption certificate for `request`, signed on the CA's device. Requires login.

    What certificates.build_certificate puts in every certificate; notAfter never
    later than the CA's. Extensions asked for in a CSR are not copied.
    """
    if not 1 <= days <= keyalg.MAX_DAYS:
        raise UsageError(_("--days must be between 1 and {MAX_DAYS}, not {days}")
                         .format(MAX_DAYS=keyalg.MAX_DAYS, days=days))
    ca_cert = ca_key.certificate
    if ca_cert is None or not is_ca_certificate(ca_cert):
        raise UsageError(_("key {label!r} is not a CA").format(label=ca_key.label))
    now = now or datetime.now(UTC)
    if now >= ca_cert.not_valid_after_utc:
        raise PolicyRefused(_("CA {label!r} expired on {not_valid_after_utc:%Y-%m-%d}: "
                              "create a new CA")
                            .format(label=ca_key.label,
                                    not_valid_after_utc=ca_cert.not_valid_after_utc))
    if cn is not None:
        if not cn.strip():
            raise UsageError(_("--cn must not be empty"))
        subject = common_name(cn)
    elif request.subject is not None:
        subject = request.subject
    else:
        raise UsageError(_("a bare public key carries no name: give the certificate's --cn"))
    start = max(now - timedelta(minutes=1), ca_cert.not_valid_before_utc)
    end = start + timedelta(minutes=1, days=days)
    clipped = end > ca_cert.not_valid_after_utc
    end = min(end, ca_cert.not_valid_after_utc)
    cert = build_certificate(request.public_key, subject, (start, end), signer_for(ca_key),
                             issuer=ca_cert)
    return Issued(cert, clipped)
