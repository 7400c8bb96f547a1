"""`key generate`, `key list` and `key import-cert` as the library gives them: one call,
a typed result.

Generation checks the registry first, generates on the token (crash-safe, see
keygen), records the key under its designation even while it awaits its
certificate (a card keeps no label: the registry names it), and says what comes
next. A listing joins what the token holds with what the registry records of each
key pair, in every service.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from tokenkeys import keyalg
from tokenkeys.drivers.base import KeyHandle, Token
from tokenkeys.errors import KeyExists
from tokenkeys.i18n import _
from tokenkeys.registry import KeyRow, Registry
from tokenkeys.services import interrupted, key_certs, keygen, token_keys
from tokenkeys.services.key_certs import next_steps
from tokenkeys.services.keys import check_free, facts_for, record_certified
from tokenkeys.services.token_keys import KeyRecord
from tokenkeys.types import Algorithm


@dataclass(frozen=True)
class ListedKey:
    """A key on the token, with the live registry rows of its key pair (any service)."""

    record: KeyRecord
    rows: tuple[KeyRow, ...] = ()

    @property
    def registered(self) -> bool:
        return bool(self.rows)

    @property
    def backup(self) -> bool:
        return any(r.backup for r in self.rows)

    @property
    def open_consultations(self) -> tuple[str, ...]:
        return tuple(sorted({c for r in self.rows for c in r.open_consultations}))

    def to_json(self) -> dict[str, object]:
        facts: dict[str, object] = {"registered": self.registered, "backup": self.backup,
                                    "open_consultations": list(self.open_consultations)}
        if self.rows:
            facts["service"] = self.rows[0].service
        return {**self.record.to_json(), **facts}


@dataclass(frozen=True)
class Generated:
    """A key just generated and recorded; `next` says what it still needs."""

    record: KeyRecord
    row: KeyRow
    slot: str | None  # the CKA_ID of a card's fixed key slot
    next: str | None
    finished: bool = False  # an interrupted run's key, recorded, given its name now

    def to_json(self) -> dict[str, object]:
        return {"key": {**self.record.to_json(), "service": self.row.service,
                        "backup": self.row.backup, "fingerprint": self.row.fingerprint,
                        "public_key_sha256": self.row.public_key_sha256},
                "next": self.next, "finished_interrupted_run": self.finished}


def generate(registry: Registry, service: str, opened: Callable[[], AbstractContextManager[Token]],
             name: str, *, cn: str | None = None, algorithm: Algorithm, days: int = 365,
             shareable: bool = False, backup: bool = False, self_sign: bool | None = None,
             replace: bool = False, announce: Callable[[str], None] | None = None
             ) -> Generated:
    """Generate a key pair named `name` on the token `opened()` gives (logged in) and
    record it in the service. The registry is asked first: an unknown service changes
    nothing and asks for no PIN. A name the registry has is refused, unless its key on
    this token is still provisional (a run killed after the registry recorded it):
    then this run finishes it."""
    try:
        check_free(registry, service, name)
    except KeyExists as taken:
        row = registry.key(service, name)
        with opened() as token:
            key = interrupted.recorded_key(token, row)
            if key is None:
                raise taken from None
            record = token_keys.describe(key, device=token.facts())
            return Generated(dataclasses.replace(record, designation=name), row, None,
                             _next(name, record, None, self_sign),
                             finished=True)
    with opened() as token:
        return _generate(registry, service, token, name, cn=cn, algorithm=algorithm,
                         days=days, shareable=shareable, backup=backup, self_sign=self_sign,
                         replace=replace, announce=announce)


def _next(name: str, record: KeyRecord, where: str | None, self_sign: bool | None
          ) -> str | None:
    return None if record.status != token_keys.AWAITING else (
        _("key {name!r}{value} has no certificate yet").format(name=name, value=where or '')
        + ("" if self_sign is False else _(" (it cannot sign, so it cannot certify itself)"))
        + f". Next: {next_steps(name)}")


def _generate(registry: Registry, service: str, token: Token, name: str, *, cn: str | None,
              algorithm: Algorithm, days: int, shareable: bool, backup: bool,
              self_sign: bool | None, replace: bool,
              announce: Callable[[str], None] | None) -> Generated:
    slot = keygen.fixed_slot(token)
    if slot is not None and announce is not None:
        announce(_("this card puts a new key into its fixed key slot {hex}")
                 .format(hex=slot.hex()))
    rows: list[KeyRow] = []

    def commit(key: KeyHandle) -> None:
        # Under its designation even where the device keeps no label (a card).
        rows.append(registry.add_key(service, facts_for(token, key, backup=backup,
                                                        designation=name), "generate"))

    record = token_keys.generate_key(token, name, cn=cn, algorithm=algorithm, days=days,
                                     shareable=shareable, replace=replace, self_sign=self_sign,
                                     commit=commit,
                                     recorded=interrupted.recorder(registry, token))
    where = "" if slot is None or record.designation == name else (
        _(" (in the card's key slot {hex}; the card names it {designation!r}, the registry "
          "knows it by its designation)").format(hex=slot.hex(), designation=record.designation))
    return Generated(dataclasses.replace(record, designation=name), rows[0],
                     slot.hex() if slot is not None else None,
                     _next(name, record, where, self_sign))


def list_token(registry: Registry, token: Token, *, include_all: bool = False
               ) -> list[ListedKey]:
    """Every key on the token with the live registry rows of its key pair (any service),
    then the objects tokenkeys cannot use (with the reason): one scan of the device, one
    registry transaction. A key whose device keeps no label shows the designation the
    registry records for it on this token; so does a key the registry records whose run
    was killed before it could name it (still provisional). Other leftovers of an
    interrupted run only with include_all."""
    inventory, unusable = token_keys.key_inventory(token, include_all=True)
    pins = [keyalg.public_key_sha256(key.public_key) for key, _ in inventory]
    known = registry.live_keys_by_public_key(pins)
    listed = []
    for (key, record), pin in zip(inventory, pins, strict=True):
        rows = known.get(pin, [])
        here = [r for r in rows
                if any(loc.ckaid == record.id for loc in r.located_on(token.uri))]
        if token_keys.is_unfinished(key) and not (here or include_all):
            continue
        if here and record.designation not in {r.designation for r in rows}:
            record = dataclasses.replace(record, designation=here[0].designation)
        listed.append(ListedKey(record, tuple(rows)))
    if not include_all:
        unusable = [r for r in unusable if not r.status.startswith("unusable: leftover")]
    return listed + [ListedKey(r) for r in unusable]


@dataclass(frozen=True)
class Certified:
    """A certificate stored with its key and made the key pair's current one."""

    record: KeyRecord  # named by the registry's designation
    imported: key_certs.Imported
    row: KeyRow


def certify(registry: Registry, service: str, token: Token, key: KeyHandle,
            cert: x509.Certificate, chain: Sequence[x509.Certificate], chains_dir: Path, *,
            backup: bool = False, allow_any_usage: bool = False) -> Certified:
    """`key import-cert`: the registry answers first (reachable, service known), then the
    certificate is checked and stored on the (logged-in) token, then recorded as the
    key pair's current certificate (a key pair it does not know is recorded in the
    service, as `key adopt` would)."""
    registry.service(service)
    imported = key_certs.import_certificate(token, key, cert, chain, chains_dir,
                                            allow_any_usage=allow_any_usage)
    record = token_keys.describe(key, device=token.facts())
    [row, *_] = record_certified(registry, service, token, key, backup=backup)
    return Certified(dataclasses.replace(record, designation=row.designation), imported, row)
