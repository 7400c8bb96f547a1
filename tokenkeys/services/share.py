"""Sharing a key with the entity's agents: PKCS#12 export and import (device-to-device
copy: share_copy).

Every function takes open, logged-in Tokens and reaches the drivers only through
the capability protocols (KeyExport, KeyImport, KeyTransport, CertificateStore).
On any failure nothing is left behind: no output file, no object on a target.
The passphrase is a Secret: it never reaches a message, a log or JSON.
"""

from __future__ import annotations

import contextlib
import getpass
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tokenkeys import keyalg
from tokenkeys.drivers.base import KeyHandle, PublicKey, Token
from tokenkeys.drivers.capabilities import (
    CertificateStore,
    KeyExport,
    KeyImport,
    require,
)
from tokenkeys.drivers.keywrap import wipe
from tokenkeys.errors import (
    CertificateRefused,
    KeyExists,
    KeyNotFound,
    NotExtractable,
    OutputExists,
    PassphraseMissing,
    TokenKeysError,
    UsageError,
)
from tokenkeys.files import MAX_PKCS12, AtomicOutput, read_limited
from tokenkeys.i18n import _
from tokenkeys.services import keygen
from tokenkeys.services import share_pkcs12 as p12
from tokenkeys.services.key_certs import check_arriving
from tokenkeys.services.token_keys import KeyRecord, describe, resolve_key
from tokenkeys.types import Secret

if TYPE_CHECKING:
    from tokenkeys.registry import Registry

log = logging.getLogger("tokenkeys.share")
PASSPHRASE_ENV = "TOKENKEYS_PASSPHRASE"
PassphraseReader = Callable[[], Secret]


def read_passphrase(*, new: bool, interactive: bool) -> Secret:
    """TOKENKEYS_PASSPHRASE, else a no-echo prompt (twice for a new one). Never argv."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return Secret(value)
    if not interactive:
        raise PassphraseMissing()
    first = getpass.getpass(_("PKCS#12 passphrase: "))
    if new:
        again = getpass.getpass(_("PKCS#12 passphrase (again): "))
        if not hmac.compare_digest(first.encode("utf-8"), again.encode("utf-8")):
            raise UsageError(_("the two passphrases typed differ; nothing was written"))
    return Secret(first)


@dataclass(frozen=True)
class ShareEvent:
    """One share action, for the registry: `key` is the exported key, or the
    new key on `token` for an import or copy (certificate stored). Facts only."""

    event: str  # "share-export" | "share-import" | "share-copy"
    token: Token
    key: KeyHandle
    details: dict[str, object]
    name: str | None = None  # the designation, where the key still has a provisional label


AuditHook = Callable[[ShareEvent], None]


def record_share_event(audit: AuditHook | None, event: ShareEvent) -> None:
    """The one audit call site of sharing. Called before the result is committed, so
    a refused registry write leaves no file and no key. Details never hold a secret."""
    log.info("%s %s %s", event.event, event.key.label, event.details)
    if audit is not None:
        audit(event)


def registry_recorder(open_registry: Callable[[], Registry], service: str) -> AuditHook:
    """Share export, import and copy are recorded in the registry, in `service`: an import
    or copy records the new copy (a location of the key row of that designation, or a
    new row under a new designation, with its audit row); an export appends an audit
    row. Called before the result is committed: a refused write leaves nothing."""

    def record(event: ShareEvent) -> None:
        from tokenkeys.services.keys import facts_for

        facts = facts_for(event.token, event.key, designation=event.name)
        with open_registry() as reg:
            if event.event != "share-export":
                reg.add_key(service, facts, event.event, event.details)
                return
            known = [r for r in reg.keys_by_public_key(facts.public_key_sha256)
                     if r.service == service and r.deleted_at is None]
            reg.record_event(event.event, service=service,
                             subject=known[0].designation if known else event.key.label,
                             details={**event.details, "token": event.token.uri})

    return record


@dataclass(frozen=True)
class ShareResult:
    """What a share command did, for the CLI (human text and JSON)."""

    key: KeyRecord
    action: str
    path: Path | None = None
    protection: str | None = None
    chain: int = 0
    source: str | None = None
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, object]:
        return {
            "action": self.action, "key": self.key.to_json(),
            "file": str(self.path) if self.path else None, "protection": self.protection,
            "chain_certificates": self.chain, "source": self.source,
            "warnings": list(self.warnings),
        }


def chain_of(token: Token, key: KeyHandle) -> list[x509.Certificate]:
    return token.certificate_chain(key) if isinstance(token, CertificateStore) else []


def shareable_key(token: Token, name_or_uri: str) -> tuple[KeyHandle, x509.Certificate]:
    key = resolve_key(token, name_or_uri)
    if not key.extractable:
        raise NotExtractable(key.label)
    if key.certificate is None:
        raise KeyNotFound(_("key {label!r} has no certificate: store one before sharing it")
                          .format(label=key.label))
    return key, key.certificate


def export_pkcs12(token: Token, name_or_uri: str, output: Path, passphrase: PassphraseReader,
                  *, legacy: bool = False, force: bool = False,
                  audit: AuditHook | None = None) -> ShareResult:
    """Write the key, its certificate and chain to a 0600 PKCS#12 file, atomically.

    The key leaves the device wrapped (KeyExport) and exists in clear only in this
    process's memory while it is re-encrypted. Requires login.
    """
    key, cert = shareable_key(token, name_or_uri)
    exporter = require(token, KeyExport, _("exporting a private key"))
    if not force and (output.exists() or output.is_symlink()):
        raise OutputExists(_("{output} already exists (use --force to replace it)")
                           .format(output=output))
    secret = passphrase()
    p12.check_strength(secret, key.label)
    chain = chain_of(token, key)
    pkcs8 = exporter.export_private_key(key)
    try:
        private = serialization.load_der_private_key(bytes(pkcs8), password=None)
        if not isinstance(private, p12.PrivateKey) or not keyalg.same_key(
                private.public_key(), key.public_key):
            raise CertificateRefused(_("the exported key does not match key {label!r}")
                                     .format(label=key.label))
        data = p12.build(private, cert, chain, key.label, secret, legacy=legacy)
    finally:
        wipe(pkcs8)
    with AtomicOutput(output, force) as out:
        out.file.write(data)
        record_share_event(audit, ShareEvent("share-export", token, key, {
            "ckaid": key.id.hex(), "token": token.uri, "file": str(output),
            "legacy": legacy, "chain": len(chain)}))
        out.commit()
    # Returned, not logged: the CLI shows them once, escaped (logging's last-resort
    # handler would print them a second time, raw).
    warnings = (_(p12.LEGACY_WARNING),) if legacy else ()
    return ShareResult(describe(key), "export", output,
                       f"{p12.LEGACY if legacy else p12.MODERN}, {p12.ITERATIONS} iterations",
                       len(chain), token.uri, warnings)


def refuse_present(token: Token, label: str, public_key: PublicKey, where: str) -> None:
    try:
        token.find_key(label=label)
    except KeyNotFound:
        pass
    else:
        raise KeyExists(_("a key named {label!r} already exists on {where}")
                        .format(label=label, where=where))
    try:
        other = token.find_key(key_id=keyalg.key_id(public_key))
    except KeyNotFound:
        return
    raise KeyExists(_("this key is already on {where} as {label!r}")
                    .format(where=where, label=other.label))


def check_decryption(key: KeyHandle) -> None:
    """Prove the key on the device matches its public key: one RSA-OAEP decryption
    (the default bid key transport) or one ECDH, checked against software."""
    challenge = secrets.token_bytes(32)
    public = key.public_key
    if isinstance(public, rsa.RSAPublicKey):
        pad = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        got = key.decrypt(public.encrypt(challenge, pad), pad)
        expected = challenge
    else:
        peer = ec.generate_private_key(public.curve)
        got = key.derive_ecdh(peer.public_key())
        expected = peer.exchange(ec.ECDH(), public)
    if not hmac.compare_digest(got, expected):
        raise CertificateRefused(_("test decryption with key {label!r} gave a wrong result")
                                 .format(label=key.label))


def store_certificate(token: Token, key: KeyHandle, cert: x509.Certificate,
                       chain: list[x509.Certificate]) -> None:
    store = require(token, CertificateStore,
                    "storing a certificate")
    store.store_certificate(key, cert, chain)


@contextlib.contextmanager
def undo_on_failure(token: Token, key: KeyHandle,
                    recorded: keygen.Recorded | None = None) -> Iterator[None]:
    """Destroy a newly created key if the block fails: nothing is left on the target,
    unless the registry recorded it after all (`recorded`: its answer was lost, or it
    cannot tell): then it stays, for the rerun or `key cleanup` to finish."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(TokenKeysError):
            if recorded is None or not recorded(key.id):
                token.discard_unfinished(key)
        raise


def import_pkcs12(token: Token, path: Path, passphrase: PassphraseReader, *, name: str,
                  shareable: bool = False, allow_any_usage: bool = False,
                  audit: AuditHook | None = None) -> ShareResult:
    """Put the key, certificate and chain of a PKCS#12 file onto the token.

    Non-extractable unless `shareable`. Verified with a test decryption; on any
    failure the new objects are destroyed. Requires login.
    """
    if not name.strip():
        raise UsageError(_("the key name (designation) must not be empty"))
    importer = require(token, KeyImport, _("importing a private key"))
    data = read_limited(path, MAX_PKCS12, "PKCS#12 file")
    contents = p12.parse(data, passphrase(), str(path))
    # The same checks as `key import-cert`, before anything reaches the token.
    check_arriving(contents.certificate, contents.key.public_key(), name,
                   allow_any_usage=allow_any_usage)
    refuse_present(token, name, contents.key.public_key(), token.uri)
    pkcs8 = bytearray(contents.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    try:
        key = importer.import_private_key(pkcs8, label=name, shareable=shareable)
    finally:
        wipe(pkcs8)
    with undo_on_failure(token, key):
        store_certificate(token, key, contents.certificate, list(contents.chain))
        check_decryption(key)
        record_share_event(audit, ShareEvent("share-import", token, key, {
            "ckaid": key.id.hex(), "token": token.uri, "file": str(path),
            "shareable": shareable}))
    stored = len(contents.chain) if isinstance(token, CertificateStore) else 0
    return ShareResult(describe(key), "import", path, contents.protection, stored, str(path),
                       contents.warnings)
