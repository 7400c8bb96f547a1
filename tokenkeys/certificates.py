"""Plain X.509 helpers: the one certificate builder and its keyUsage rule,
fingerprint, common name (and its checks), validity status, writing a file.

Nothing here touches a device: the registry and the CLI use these without
loading a driver. The signer that signs on a device is services/signing.py.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tokenkeys import keyalg
from tokenkeys.errors import CertificateRefused, UsageError
from tokenkeys.files import write_atomic
from tokenkeys.i18n import _

EXPIRING_DAYS = 30
KeyStatus = Literal["valid", "expiring", "expired"]
# A private key object that signs (services.signing: on the device) and its hash.
Signer = tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, keyalg.SignatureHash]


def key_usage(public_key: keyalg.PublicKey, *, ca: bool = False) -> x509.KeyUsage:
    """The one keyUsage rule, for every certificate tokenkeys makes or asks for.

    A CA: keyCertSign and cRLSign. An encryption key: keyEncipherment (RSA, which
    transports the content key) or keyAgreement (EC, ECDH). Never dataEncipherment:
    CMS never encrypts content with the recipient's key itself. Never
    digitalSignature: the key signs only its own certificate or request.
    """
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False,
        key_encipherment=not ca and is_rsa, data_encipherment=False,
        key_agreement=not ca and not is_rsa, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )


def validity(days: int, start: datetime | None = None) -> tuple[datetime, datetime]:
    """notBefore a minute before `start` (default now: a clock a little behind still
    accepts it), notAfter `days` after `start`."""
    begin = (start or datetime.now(UTC)) - timedelta(minutes=1)
    return begin, begin + timedelta(minutes=1, days=days)


def build_certificate(public_key: keyalg.PublicKey, subject: x509.Name,
                      period: tuple[datetime, datetime], signer: Signer, *,
                      issuer: x509.Certificate | None = None,
                      ca: bool = False) -> x509.Certificate:
    """The one certificate builder: self-signed keys (`issuer` None), CAs and the
    certificates a CA issues.

    A random serial; basicConstraints (a CA: pathLen 0) and key_usage, both
    critical; the subject key identifier; the authority key identifier on a CA's
    certificate and on every certificate a CA issues.
    """
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    start, end = period
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(public_key)
        .serial_number(secrets.randbits(159) | 1)  # positive, < 2^159, never 0
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None),
                       critical=True)
        .add_extension(key_usage(public_key, ca=ca), critical=True)
        .add_extension(ski, critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(_authority(issuer), critical=False)
    elif ca:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    key, algorithm = signer
    return builder.sign(key, algorithm)


def _authority(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The issuer's key identifier: its SKI, or its public key's for a CA made elsewhere
    without one."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lowercase hex: the registry's lookup key."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


MAX_CN = 64  # RFC 5280's ub-common-name
MAX_NAME_VALUE = 256  # any other attribute of a subject tokenkeys takes in
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})  # control, format, line/paragraph separators


def _shown(text: str) -> str:
    return repr(text if len(text) <= 24 else text[:24] + "...")


def check_common_name(cn: str) -> str:
    """`cn`, once it fits a certificate: 1 to 64 characters, none of them a control
    character. Checked before any key is generated or anything signed."""
    if not cn.strip():
        raise UsageError(_("the certificate's CN must not be empty"))
    if len(cn) > MAX_CN:
        raise UsageError(_("the CN {cn} has {count} characters: a certificate's CN holds at "
                           "most {MAX_CN} (RFC 5280); give a shorter --cn (the CN is the "
                           "key's --name when no --cn is given)")
                         .format(cn=_shown(cn), count=len(cn), MAX_CN=MAX_CN))
    if any(unicodedata.category(ch) in _HIDDEN for ch in cn):
        raise UsageError(_("the CN {cn} holds control characters: a certificate's CN is "
                           "printable text").format(cn=_shown(cn)))
    return cn


def common_name(cn: str) -> x509.Name:
    """The subject CN=`cn`, checked (check_common_name)."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, check_common_name(cn))])


def check_subject_text(cert: x509.Certificate) -> None:
    """Refuse a certificate tokenkeys takes in (`key import-cert`, `key adopt --cert`,
    `share import`) whose subject holds control characters, a CN over 64 characters
    or another value over 256: such names would be shown on every `key list`.
    Read with asn1crypto, which emits no warning on oversized names."""
    from asn1crypto import x509 as a1x509  # here only: the registry imports this module

    try:
        subject = a1x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))[
            "tbs_certificate"]["subject"]
        values = [(a["type"].native, a["value"].native) for rdn in subject.chosen for a in rdn]
    except Exception:  # asn1crypto raises ValueError, TypeError... on odd input
        raise CertificateRefused(_("the certificate's subject cannot be read: nothing was "
                                   "changed")) from None
    for kind, value in values:
        text = value if isinstance(value, str) else str(value)
        limit = MAX_CN if kind == "common_name" else MAX_NAME_VALUE
        if len(text) > limit:
            raise CertificateRefused(
                _("the certificate's subject {kind} has {count} characters (at most "
                  "{limit}): refused, nothing was changed")
                .format(kind=kind, count=len(text), limit=limit))
        if any(unicodedata.category(ch) in _HIDDEN for ch in text):
            raise CertificateRefused(
                _("the certificate's subject {kind} holds control characters: refused, "
                  "nothing was changed").format(kind=kind))


def certificate_cn(cert: x509.Certificate) -> str | None:
    """The CN, for display: one that came by another way than tokenkeys' checks (a
    token's own certificate) is cut to 64 characters, and its oversize never turns
    into a library warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    value = str(names[0].value)
    return value if len(value) <= MAX_CN else value[:MAX_CN] + "…"


def key_status(cert: x509.Certificate, now: datetime | None = None) -> KeyStatus:
    """"expired" past notAfter, "expiring" under 30 days left, else "valid"."""
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    left = cert.not_valid_after_utc - now
    if left <= timedelta(0):
        return "expired"
    if left < timedelta(days=EXPIRING_DAYS):
        return "expiring"
    return "valid"


def write_certificate(path: Path, cert: x509.Certificate, *, der: bool = False,
                      overwrite: bool = False) -> None:
    """Write `cert`, PEM or DER, in one atomic step; an existing file is refused
    unless `overwrite`."""
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    write_atomic(path, cert.public_bytes(encoding), overwrite=overwrite)


def forbidden_encryption_usage(cert: x509.Certificate, public: object) -> str | None:
    """The keyUsage bit an envelope to `public` needs ("keyEncipherment" for RSA,
    "keyAgreement" for EC) when `cert`'s keyUsage lacks it; None when it allows it
    or has no keyUsage (every use allowed, RFC 5280 4.2.1.3). The one rule for
    sealing and for storing a certificate (services/key_certs.py)."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if isinstance(public, rsa.RSAPublicKey):
        return None if usage.key_encipherment else "keyEncipherment"
    return None if usage.key_agreement else "keyAgreement"
