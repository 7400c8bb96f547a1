"""Provisioning workflows above the driver contract: generate, list, export, delete.

Every function takes an open Token; none knows which driver it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from tokenkeys import keyalg
from tokenkeys.certificates import (
    certificate_cn,
    check_common_name,
    key_status,
    write_certificate,
)
from tokenkeys.drivers import base
from tokenkeys.drivers.base import DeviceFacts, KeyHandle, Token, UnusableKey
from tokenkeys.errors import (
    DeviceRemoved,
    MechanismUnsupported,
    UsageError,
)
from tokenkeys.i18n import _
from tokenkeys.services.envelope_kinds import kinds_for
from tokenkeys.services.key_certs import awaiting_certificate, next_steps
from tokenkeys.services.keygen import Recorded, fixed_slot, generate_named
from tokenkeys.services.signing import self_signed
from tokenkeys.types import DEFAULT_ALGORITHM, Algorithm
from tokenkeys.uri import Pkcs11Uri, SoftUri, parse

AWAITING = "awaiting certificate"
# Label prefix of a key pair a run is still making: the designation is given once the
# registry has recorded it, so a crash leaves objects that `key list --all` shows and
# `key cleanup` finishes or removes (services.interrupted).
PROVISIONAL = base.PROVISIONAL


@dataclass(frozen=True)
class KeyRecord:
    """What `key list` shows for one key."""

    designation: str
    cn: str | None
    algorithm: str
    id: str
    uri: str
    not_after: datetime | None
    status: str
    extractable: bool
    opens: tuple[str, ...] = ()  # envelope kinds the key can open on its device

    def to_json(self) -> dict[str, object]:
        return {
            "designation": self.designation,
            "cn": self.cn,
            "algorithm": self.algorithm,
            "id": self.id,
            "uri": self.uri,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "status": self.status,
            "extractable": self.extractable,
            "opens": list(self.opens),
        }


def describe(key: KeyHandle, now: datetime | None = None,
             device: DeviceFacts | None = None) -> KeyRecord:
    cert = key.certificate
    return KeyRecord(
        designation=key.label,
        cn=certificate_cn(cert) if cert else None,
        algorithm=key.algorithm_name,
        id=key.id.hex(),
        uri=key.uri,
        not_after=cert.not_valid_after_utc if cert else None,
        status=key_status(cert, now or datetime.now(UTC)) if cert else AWAITING,
        extractable=key.extractable,
        opens=kinds_for(key, device) if device is not None else (),
    )


def describe_unusable(bad: UnusableKey) -> KeyRecord:
    return KeyRecord(designation=bad.label, cn=None, algorithm="-", id=bad.id.hex(), uri="",
                     not_after=None, status=f"unusable: {bad.reason}", extractable=False)


def is_provisional(key: KeyHandle) -> bool:
    return key.label.startswith(PROVISIONAL)


def generate_key(
    token: Token,
    name: str,
    *,
    cn: str | None = None,
    algorithm: Algorithm = DEFAULT_ALGORITHM,
    days: int = 365,
    shareable: bool = False,
    self_sign: bool | None = None,
    replace: bool = False,
    commit: Callable[[KeyHandle], object] | None = None,
    recorded: Recorded | None = None,
) -> KeyRecord:
    """Generate a key pair on the token with a self-signed certificate signed there.

    `self_sign=False` stores no certificate (the key awaits one from a CA); None
    (the default) self-signs where the key can sign and otherwise keeps the key
    awaiting a certificate. On a card with a fixed key slot (OpenPGP: 02) the key
    goes there, under the SO PIN where the card needs it; an occupied slot is
    refused unless `replace`. Requires login. `commit(key)` records the key once
    its private key has its name, before the other objects take it
    (keygen.generate_named); on any failure before its end, the new objects are
    destroyed (not a card's slot), unless `recorded` says the registry has them.
    """
    if not name.strip():
        raise UsageError(_("the key name (designation) must not be empty"))
    if not 1 <= days <= keyalg.MAX_DAYS:
        raise UsageError(_("--days must be between 1 and {MAX_DAYS}, not {days}")
                         .format(MAX_DAYS=keyalg.MAX_DAYS, days=days))
    check_common_name(cn or name)
    mechanisms = token.mechanisms()
    if not algorithm.is_rsa and "EC_KEY_PAIR_GEN" in mechanisms \
            and "ECDH1_DERIVE" not in mechanisms:
        # It could sign (a CA key can: `ca create`), but never open a bid.
        raise MechanismUnsupported(
            _("an {value} encryption key (opening ECDH envelopes needs CKM_ECDH1_DERIVE)")
            .format(value=algorithm.value), [_("RSA keys (--algorithm rsa2048 or rsa3072)")])
    try:
        key = generate_named(
            token, name, algorithm,
            lambda k: _self_signed_if_possible(k, cn or name, days, self_sign),
            shareable=shareable, replace=replace, commit=commit, recorded=recorded)
    except DeviceRemoved as exc:
        if exc.created is None:
            raise
        kept = fixed_slot(token) is not None  # a card's slot keeps it; else a leftover
        raise DeviceRemoved(_("{error}. {next_step}").format(
            error=exc, next_step=after_removal(exc.created, name, kept)), exc.created) from None
    return describe(key, device=token.facts())


def after_removal(created: str, name: str, kept: bool) -> str:
    """What is left to do with a key the device made before it was pulled out: one
    a card's fixed slot `kept` awaits its certificate, any other is a leftover."""
    if not kept:
        return (_("Key {name!r} was not finished: insert the device, run `tokenkeys key "
                  "cleanup` to remove the unfinished key, then run the command again")
                .format(name=name))
    return (_("Key {name!r} was created, but its certificate is not stored yet and the "
              "registry does not know it. Next: insert the card again, then {created} (`key "
              "import-cert` also records it in the registry)")
            .format(name=name, created=next_steps(created)))


def _self_signed_if_possible(key: KeyHandle, cn: str, days: int,
                             self_sign: bool | None) -> x509.Certificate | None:
    """None when asked (self_sign False) or, by default, when the key cannot sign."""
    if self_sign is False:
        return None
    try:
        return self_signed(key, cn, days)
    except MechanismUnsupported:
        if self_sign is None:
            return None  # cannot sign (a card's decryption key): awaits a CA's certificate
        raise


def key_inventory(token: Token, *, include_all: bool = False
                  ) -> tuple[list[tuple[KeyHandle, KeyRecord]], list[KeyRecord]]:
    """Every usable key with what `key list` shows for it (including the envelope kinds),
    then the objects tokenkeys cannot use, with the reason: one scan of the device.
    Provisional leftovers of an interrupted run only with include_all: usable key
    pairs among the keys, lone objects (a public key without its private key...)
    among the unusable ones."""
    keys, unusable = token.inventory()
    now = datetime.now(UTC)
    device = token.facts()
    shown = [k for k in keys if include_all or not is_unfinished(k)]
    bad = [describe_unusable(b) for b in unusable]
    if include_all:
        # Objects of a listed key (provisional or unfinished) are not listed again.
        listed = {k.id for k in keys}
        seen = {(b.label, b.id) for b in unusable}
        bad += [describe_unusable(UnusableKey(o.label, o.id, _("leftover of an interrupted run "
                                                               "({reason}); see key cleanup")
                                                             .format(reason=o.reason)))
                for o in token.provisional_objects() + token.blank_objects()
                if o.id not in listed and (o.label, o.id) not in seen]
    return [(k, describe(k, now, device)) for k in shown], bad


def list_keys(token: Token, *, include_all: bool = False) -> list[KeyRecord]:
    """Usable keys, then unusable objects with the reason (see key_inventory)."""
    usable, unusable = key_inventory(token, include_all=include_all)
    return [r for _, r in usable] + unusable


def is_unfinished(key: KeyHandle) -> bool:
    """A key a run is still making, or left: provisional, or its private key already
    named but some of its objects still provisional."""
    return is_provisional(key) or key.unfinished


def leftovers(token: Token) -> list[KeyHandle]:
    """Usable key pairs under a provisional label (see services.interrupted for all
    the objects an interrupted run left)."""
    return [k for k in token.list_keys() if is_provisional(k)]


def resolve_key(token: Token, name_or_uri: str) -> KeyHandle:
    """A key by designation, or by a URI naming an object/id on this token."""
    if name_or_uri.startswith(("pkcs11:", "soft:")):
        parsed = parse(name_or_uri)
        if isinstance(parsed, SoftUri):
            if not parsed.name:
                raise UsageError(_("the URI names no key (soft:DIR#NAME): {name_or_uri}")
                                 .format(name_or_uri=name_or_uri))
            return token.find_key(label=parsed.name)
        return _find_by_pkcs11_uri(token, parsed)
    return token.find_key(label=name_or_uri)


def _find_by_pkcs11_uri(token: Token, uri: Pkcs11Uri) -> KeyHandle:
    if uri.object is None and uri.id is None:
        raise UsageError(_("the URI names no key (add object= or id=): {uri}").format(uri=uri))
    return token.find_key(label=uri.object, key_id=uri.id)


def key_token_uri(name_or_uri: str) -> str | None:
    """The token part of a key URI, or None for a bare designation."""
    if not name_or_uri.startswith(("pkcs11:", "soft:")):
        return None
    parsed = parse(name_or_uri)
    if isinstance(parsed, SoftUri):
        return str(SoftUri(parsed.directory))
    return str(parsed.token_only())


def export_certificate(key: KeyHandle, path: Path, *, der: bool = False,
                       overwrite: bool = False) -> None:
    """Write the certificate; an existing file is refused unless `overwrite`."""
    if key.certificate is None:
        raise awaiting_certificate(key)
    write_certificate(path, key.certificate, der=der, overwrite=overwrite)


def delete_key(token: Token, key: KeyHandle) -> KeyRecord:
    """Delete private key, public key and certificate. Requires login."""
    record = describe(key)
    token.delete(key)
    return record
