"""Keys waiting for a certificate: public key and CSR out, issued certificate in.

`import_certificate` checks everything before it writes: the certificate must
be for the key, not expired, with a key usage that allows encryption, and the
chain must link. A refusal leaves the device as it was.
"""

from __future__ import annotations

import shlex
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from tokenkeys import keyalg
from tokenkeys.certificates import (
    check_subject_text,
    common_name,
    forbidden_encryption_usage,
    key_usage,
)
from tokenkeys.drivers.base import KeyHandle, Token
from tokenkeys.drivers.capabilities import CertificateStore, require
from tokenkeys.errors import (
    CertificateRefused,
    DeviceError,
    KeyNotFound,
    MechanismUnsupported,
    UsageError,
)
from tokenkeys.files import MAX_CERTIFICATES, read_limited, write_atomic
from tokenkeys.i18n import _
from tokenkeys.services.ca import is_ca_certificate
from tokenkeys.services.signing import signer_for

CHAINS_DIR = "chains"


def next_steps(name: str) -> str:
    """What to do with a key that has no certificate yet (`name`: its label or URI)."""
    ref = shlex.quote(name)
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:40] or "key"
    return (_("export its public key (`tokenkeys key export-public {ref} -o {stem}.pub.pem`) "
              "or, if it can sign, a request (`tokenkeys key csr {ref} -o {stem}.csr`); have "
              "the CA issue the certificate (`tokenkeys ca issue`), then `tokenkeys key "
              "import-cert {ref} CERT.pem`").format(ref=ref, stem=stem))


def awaiting_certificate(key: KeyHandle) -> KeyNotFound:
    return KeyNotFound(_("key {label!r} is awaiting a certificate: {label2}")
                       .format(label=key.label, label2=next_steps(key.label)))


def export_public(key: KeyHandle, path: Path, *, der: bool = False, force: bool = False) -> None:
    """The key's SubjectPublicKeyInfo, PEM (or DER): what `ca issue` takes. No login needed."""
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    data = key.public_key.public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)
    write_atomic(path, data, overwrite=force)


def request_cn(name_or_uri: str, key: KeyHandle) -> str:
    """The CN a request asks for by default: the designation the user named the key by
    (a card's key keeps no label of its own), else the key's label."""
    return key.label if name_or_uri.startswith(("pkcs11:", "soft:")) else name_or_uri


def make_csr(key: KeyHandle, cn: str | None = None) -> x509.CertificateSigningRequest:
    """A PKCS#10 request signed on the device, asking for an encryption key usage.

    Requires login. A key that cannot sign gets a message pointing to export-public.
    """
    name = common_name(cn or key.label)
    signer, algorithm = signer_for(key)
    builder = (x509.CertificateSigningRequestBuilder().subject_name(name)
               .add_extension(key_usage(key.public_key), critical=True))
    try:
        return builder.sign(signer, algorithm)
    except (MechanismUnsupported, DeviceError) as exc:
        offered = exc.offered if isinstance(exc, MechanismUnsupported) else (str(exc),)
        raise MechanismUnsupported(
            _("a certificate request signed by key {label!r} (a key that cannot sign gets "
              "its certificate from its public key: `tokenkeys key export-public {quote} -o "
              "PUBLIC.pem`, then `tokenkeys ca issue --cn CN`)")
            .format(label=key.label, quote=shlex.quote(key.label)),
            offered) from None


def write_csr(csr: x509.CertificateSigningRequest, path: Path, *, force: bool = False) -> None:
    write_atomic(path, csr.public_bytes(serialization.Encoding.PEM), overwrite=force)


def load_certificates(path: Path, what: str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, or one DER certificate."""
    data = read_limited(path, MAX_CERTIFICATES, what)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise UsageError(
            _("{path} is not a PEM or DER X.509 certificate").format(path=path)) from None


def load_certificate(path: Path, what: str) -> x509.Certificate:
    """The one certificate of a file (PEM or DER): a bundle of several is refused."""
    certs = load_certificates(path, what)
    if len(certs) != 1:
        raise UsageError(_("{cert} holds {count} certificates: give exactly one")
                         .format(cert=path, count=len(certs)))
    return certs[0]


def _subject(cert: x509.Certificate) -> str:
    with warnings.catch_warnings():  # an oversized name: refused, never a raw warning
        warnings.simplefilter("ignore")
        return cert.subject.rfc4514_string()


def check_arriving(cert: x509.Certificate, public_key: object, label: str, *,
                   allow_any_usage: bool = False, now: datetime | None = None) -> None:
    """The one check of a certificate that arrives for a key, whatever the path (`key
    import-cert`, `share import`): it is for this key, not RSA-PSS (signatures only),
    valid now, and its keyUsage allows encryption unless `allow_any_usage`; its subject
    is printable and of sane length (check_subject_text), checked first."""
    check_subject_text(cert)
    if not keyalg.same_key(cert.public_key(), public_key):
        raise CertificateRefused(
            _("the certificate ({cert}) is for another key, not for {label!r}: nothing was "
              "changed").format(cert=_subject(cert), label=label))
    if cert.public_key_algorithm_oid == x509.oid.PublicKeyAlgorithmOID.RSASSA_PSS:
        raise CertificateRefused(_("the certificate is for an RSA-PSS key, which is for "
                                   "signatures only: nothing was changed"))
    now = now or datetime.now(UTC)
    if now > cert.not_valid_after_utc:
        raise CertificateRefused(
            _("the certificate expired on {not_valid_after_utc:%Y-%m-%d}: nothing was changed")
            .format(not_valid_after_utc=cert.not_valid_after_utc))
    if now < cert.not_valid_before_utc:
        raise CertificateRefused(
            _("the certificate is not valid before {not_valid_before_utc:%Y-%m-%d}: nothing "
              "was changed").format(not_valid_before_utc=cert.not_valid_before_utc))
    need = forbidden_encryption_usage(cert, public_key)
    if need is not None and not allow_any_usage:
        raise CertificateRefused(
            _("the certificate's key usage forbids encryption (no {need}): nothing was "
              "changed; --allow-any-usage overrides").format(need=need))


def check_certificate(key: KeyHandle, cert: x509.Certificate,
                      chain: Sequence[x509.Certificate], now: datetime | None = None, *,
                      allow_any_usage: bool = False) -> list[x509.Certificate]:
    """Raise CertificateRefused unless `cert` fits `key` (check_arriving) and the chain
    links; return the chain to keep (the leaf removed if the bundle repeats it), nearest
    issuer first."""
    check_arriving(cert, key.public_key, key.label, allow_any_usage=allow_any_usage, now=now)
    rest = [c for c in chain if c != cert]
    below = cert
    for issuer in rest:
        if not is_ca_certificate(issuer):
            raise CertificateRefused(_("chain certificate {issuer} is not a CA certificate: "
                                       "nothing was changed").format(issuer=_subject(issuer)))
        try:
            below.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateRefused(
                _("the chain does not link: {issuer} did not issue {below}; give the issuers "
                  "nearest first").format(issuer=_subject(issuer), below=_subject(below))) from None
        below = issuer
    return rest


@dataclass(frozen=True)
class Imported:
    replaced: bool  # a certificate (self-signed or older) was there before
    chain_kept: str  # "device", "beside the key: PATH" or "none"
    already: bool = False  # the same certificate was stored with the key: not written again


def import_certificate(token: Token, key: KeyHandle, cert: x509.Certificate,
                       chain: Sequence[x509.Certificate], chains_dir: Path, *,
                       allow_any_usage: bool = False) -> Imported:
    """Check, then store `cert` with the key's CKA_ID and label (replacing the one it had)
    and keep `chain` on the device where it can hold it, else in `chains_dir`.
    Requires login (the SO PIN too on some cards)."""
    rest = check_certificate(key, cert, chain, allow_any_usage=allow_any_usage)
    already = key.certificate == cert  # the driver writes nothing then (a card refuses)
    replaced = key.certificate is not None and not already
    store = require(token, CertificateStore, _("storing certificates"))
    if not rest:
        store.store_certificate(key, cert)
        return Imported(replaced, "none", already)
    try:
        store.store_certificate(key, cert, rest)
        return Imported(replaced, "device", already)
    except MechanismUnsupported:
        pass  # one certificate per key (OpenPGP card): refused before anything was written
    # Named by the key's own SHA-1 (not CKA_ID: every OpenPGP card says 02).
    path = chains_dir / f"{keyalg.key_id(key.public_key).hex()}.pem"
    try:  # the chain's place must be writable before the device changes
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as exc:
        raise UsageError(_("cannot keep the certificate chain in {parent}: {strerror}: "
                           "nothing was changed")
                         .format(parent=path.parent, strerror=exc.strerror)) from None
    store.store_certificate(key, cert)
    try:
        write_atomic(path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in rest))
    except OSError as exc:
        raise UsageError(_("the certificate was stored with the key, but its chain could not "
                           "be written to {path}: {strerror}")
                         .format(path=path, strerror=exc.strerror)) from None
    return Imported(replaced, _("beside the key: {path}").format(path=path), already)
