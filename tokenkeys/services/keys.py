"""Key workflows that keep the registry in step with the token: record, adopt, renew, delete.

Each takes an open (logged-in) Token and a Registry. The token is changed only
after the registry has agreed, and a registry refusal afterwards undoes the token
change, so neither holds a key the other does not know about.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from cryptography import x509

from tokenkeys import keyalg
from tokenkeys.certificates import check_subject_text
from tokenkeys.drivers import KeyHandle, Token
from tokenkeys.drivers.capabilities import CertificateStore, require
from tokenkeys.errors import (
    AlreadyRenewed,
    CertificateRefused,
    KeyExists,
    KeyNotFound,
    PolicyRefused,
    TokenKeysError,
    UsageError,
)
from tokenkeys.i18n import _
from tokenkeys.registry import KeyFacts, KeyRow, Registry
from tokenkeys.registry.repo import Removal
from tokenkeys.services import interrupted, token_keys
from tokenkeys.services.envelope_kinds import envelope_kinds
from tokenkeys.services.signing import self_signed
from tokenkeys.types import Algorithm

DATED_SUFFIX = re.compile(r"-\d{8}(-\d+)?$")


def facts_for(token: Token, key: KeyHandle, *, backup: bool = False,
              replaces_id: int | None = None, designation: str | None = None) -> KeyFacts:
    """What the registry records of `key` on `token` (certificate None: it awaits one)."""
    return KeyFacts(
        designation=designation or key.label, token_uri=token.uri, ckaid=key.id.hex(),
        public_key=key.public_key, certificate=key.certificate,
        algorithm=key.algorithm_name,
        envelope_kinds=envelope_kinds(key.key_type, token.facts()),
        backup=backup, shareable=key.extractable, replaces_id=replaces_id)


def check_free(registry: Registry, service: str, designation: str) -> None:
    """Refuse before touching the token when the registry already has the name."""
    try:
        registry.key(service, designation)
    except KeyNotFound:
        return
    raise KeyExists(_("a key named {designation!r} already exists in service {service!r} of "
                      "the registry").format(designation=designation, service=service))


def recorded(registry: Registry, key: KeyHandle) -> list[KeyRow]:
    """The live registry rows of the key pair, in every service."""
    pin = keyalg.public_key_sha256(key.public_key)
    return registry.live_keys_by_public_key([pin]).get(pin, [])


def record_certified(registry: Registry, service: str, token: Token,
                     key: KeyHandle, *, backup: bool = False) -> list[KeyRow]:
    """After `key import-cert`: the certificate becomes the key pair's current one in
    every row that records it; a key pair the registry does not know yet is recorded
    in the service, as `key adopt` would."""
    assert key.certificate is not None
    if recorded(registry, key):
        return registry.set_certificate(keyalg.public_key_sha256(key.public_key),
                                        key.certificate, "certificate", {"via": "import-cert"})
    return [registry.add_key(service, facts_for(token, key, backup=backup), "adopt",
                             {"via": "import-cert"})]


def resolve(token: Token, name_or_uri: str, *, service: str,
            registry: Callable[[], Registry]) -> KeyHandle:
    """A key by its label, its URI, or its designation in the registry: a key on a
    device that keeps no label (an OpenPGP card) is found by the location and public
    key the registry recorded for it on this token. The registry is opened only then."""
    try:
        return token_keys.resolve_key(token, name_or_uri)
    except KeyNotFound as missing:
        if token_keys.key_token_uri(name_or_uri) is not None:
            raise
        with registry() as reg:
            try:
                row = reg.key(service, name_or_uri)
            except KeyNotFound:
                raise missing from None
        for loc in row.located_on(token.uri):
            try:
                handle = token.find_key(key_id=bytes.fromhex(loc.ckaid))
            except KeyNotFound:
                continue
            if keyalg.public_key_sha256(handle.public_key) == row.public_key_sha256:
                return handle
        raise KeyNotFound(_("key {name_or_uri!r} of service {service!r} is not on this token "
                            "({uri})")
                          .format(name_or_uri=name_or_uri, service=service,
                                  uri=token.uri)) from None


def adopt(registry: Registry, service: str, token: Token, name_or_uri: str, *,
          cert: x509.Certificate | None, self_sign_days: int | None, backup: bool) -> KeyRow:
    """Reference a key pair that already exists on the token (made elsewhere)."""
    key = token_keys.resolve_key(token, name_or_uri)
    if not key.label:
        raise UsageError(_("the key has no label on the token: give it one to adopt it"))
    if token_keys.is_provisional(key):
        raise UsageError(_("key {label!r} is what an interrupted tokenkeys run left: run "
                           "that command again, or `tokenkeys key cleanup`, instead of "
                           "adopting it").format(label=key.label))
    check_free(registry, service, key.label)
    store: CertificateStore | None = None
    had = key.certificate
    if cert is not None:
        check_subject_text(cert)
        if not keyalg.same_key(cert.public_key(), key.public_key):
            raise CertificateRefused(
                _("the certificate given ({rfc4514_string}) holds another public key than "
                  "key {label!r} on the token: refused")
                .format(rfc4514_string=cert.subject.rfc4514_string(), label=key.label))
        if key.certificate is None or key.certificate != cert:
            store = require(token, CertificateStore, _("storing certificates"))
            key.certificate = cert
    elif key.certificate is None:
        if self_sign_days is None:
            raise KeyNotFound(_("key {label!r} has no certificate on the token: give --cert "
                                "FILE, or --self-sign to make one on the device")
                              .format(label=key.label))
        store = require(token, CertificateStore, _("storing certificates"))
        key.certificate = self_signed(key, key.label, self_sign_days)
    elif not keyalg.same_key(key.certificate.public_key(), key.public_key):
        raise CertificateRefused(_("the certificate stored with key {label!r} holds another "
                                   "public key: refused").format(label=key.label))
    # The registry first: the token changes only once the registry has agreed.
    try:
        row = registry.add_key(service, facts_for(token, key, backup=backup), "adopt")
    except BaseException:
        key.certificate = had
        raise
    if store is not None:
        try:
            store.store_certificate(key, key.certificate)
        except BaseException:
            key.certificate = had
            with contextlib.suppress(TokenKeysError):
                registry.mark_deleted([(service, row.designation)], lambda _: None)
            raise
    return row


def renewal_name(old: str, registry: Registry, service: str, today: datetime) -> str:
    """`NAME-YYYYMMDD` (an earlier dated suffix is replaced); `-2`, `-3`… if taken."""
    base = DATED_SUFFIX.sub("", old)
    candidate = f"{base}-{today:%Y%m%d}"
    n = 1
    while True:
        try:
            registry.key(service, candidate)
        except KeyNotFound:
            return candidate
        n += 1
        candidate = f"{base}-{today:%Y%m%d}-{n}"


def _one_successor(old: KeyRow) -> Callable[[Sequence[KeyRow]], None]:
    """The registry's check, inside its transaction: a key is renewed once (a second
    successor would make two backup keys in force where one was)."""
    def check(successors: Sequence[KeyRow]) -> None:
        if successors:
            raise AlreadyRenewed(
                _("key {designation!r} was already renewed as {designation2!r}: renew "
                  "{designation2!r} instead")
                .format(designation=old.designation, designation2=successors[0].designation))
    return check


def renew(registry: Registry, service: str, token: Token, old: KeyRow, *,
          days: int | None, algorithm: Algorithm | None, name: str | None) -> KeyRow:
    """A new key pair and certificate on the token; the old key stays, linked to it.

    A key already renewed is refused, naming its successor; unless that successor's
    key on this token is still provisional (a renewal killed after the registry
    recorded it): then this run finishes it and returns it."""
    successors = registry.successors(old.id)
    if successors:
        if interrupted.recorded_key(token, successors[0]) is not None:
            return successors[0]
        _one_successor(old)(successors)
    new_name = name or renewal_name(old.designation, registry, service, datetime.now(UTC))
    check_free(registry, service, new_name)
    if days is None and old.not_before is not None and old.not_after is not None:
        span = (datetime.fromisoformat(old.not_after.replace("Z", "+00:00"))
                - datetime.fromisoformat(old.not_before.replace("Z", "+00:00")))
        days = max(1, round(span.total_seconds() / 86400))
    days = days or 365
    alg = algorithm or Algorithm.parse(old.algorithm)
    cn = new_name if old.cn in (None, old.designation) else old.cn
    rows: list[KeyRow] = []

    def commit(key: KeyHandle) -> None:
        rows.append(registry.add_key(
            service, facts_for(token, key, backup=old.backup, replaces_id=old.id,
                               designation=new_name), "renew",
            details={"replaces": old.designation, "replaces_fingerprint": old.fingerprint},
            successors_check=_one_successor(old)))

    token_keys.generate_key(token, new_name, cn=cn, algorithm=alg, days=days,
                            shareable=old.shareable, commit=commit,
                            recorded=interrupted.recorder(registry, token))
    return rows[0]


def _deletion_guard(label: str, unregistered: bool) -> Callable[[Removal], None]:
    def guard(removal: Removal) -> None:
        if not removal.known and not unregistered:
            raise PolicyRefused(
                _("key {label!r} is not in the registry, which therefore cannot vouch that "
                  "no consultation needs it (is TOKENKEYS_REGISTRY the entity's registry?); "
                  "give --unregistered to delete it anyway").format(label=label))
        if removal.bound_to and not removal.remaining:
            refs = ", ".join(removal.bound_to)
            raise PolicyRefused(
                _("key {label!r} is bound to consultations not yet closed ({refs}), as their "
                  "key or a recorded backup key, and this is its last copy: their bids can "
                  "only be opened with it. Close them first").format(label=label, refs=refs))
    return guard


def delete(registry: Registry, token: Token, key: KeyHandle, *,
           unregistered: bool = False) -> Removal:
    """Delete one copy of a key pair from the token unless an open consultation needs it.

    Its bindings are found by its public key, in every service; another recorded
    copy (a share) keeps them safe. The registry forgets this location first and
    takes it back if the token refuses; rows are kept, marked deleted with their last
    location. A key the registry never knew needs `unregistered`."""
    removal = registry.remove_location(
        keyalg.public_key_sha256(key.public_key), token.uri, key.id.hex(),
        _deletion_guard(key.label, unregistered), subject=key.label)
    try:
        token_keys.delete_key(token, key)
    except BaseException as exc:
        registry.restore_location(removal, type(exc).__name__)
        raise
    return removal
