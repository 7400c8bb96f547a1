"""What an interrupted run left on a token: finished, or removed (`key cleanup`, reruns).

A run that makes a key (`key generate`, `key renew`, `share copy`) creates every
object under a provisional label (keygen.provisional_label); the private key takes
its name just before the registry records the key, the public key and certificates
just after (Token.label_public_objects). So the registry decides, after any kill:
- a key the registry records at its location (this token and its CKA_ID) that still
  has provisional objects was committed: it is *finished* (its public key and
  certificates take the name; one lost is rebuilt from the certificate the registry
  keeps). Its private key is never deleted nor renamed;
- every other provisional object (a key pair, a lone public or private key, a
  certificate), and a private key already named whose other objects are still
  provisional, was never recorded: it is *removed*.
Objects under any other label are never touched, except objects that hold nothing at
all (no label, no id, no key or certificate value): what a process killed inside the
device's own object creation leaves, listed and removed as "half-written".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509

from tokenkeys.drivers.base import (
    PROVISIONAL,
    KeyHandle,
    Token,
    UnusableKey,
    provisional_stem,
)
from tokenkeys.errors import KeyNotFound, MultipleKeysFound
from tokenkeys.services.keygen import (
    designation_lock,
    intended_name,
    remove_unrecorded,
    unfinished,
)

if TYPE_CHECKING:  # SQLAlchemy is imported only by the commands that use the registry
    from tokenkeys.registry import KeyRow, Registry

HALF_WRITTEN = "(half-written objects)"


def stem(label: str) -> str:
    """The provisional label of the run that made the object (chain suffix dropped)."""
    return provisional_stem(label) or label


@dataclass(frozen=True)
class Leftover:
    """The objects one interrupted run left under one provisional label."""

    label: str
    ids: tuple[str, ...]
    objects: tuple[str, ...]  # "private key", "public key", "certificate" (one per object)
    name: str | None  # the name the run meant to give it
    recorded_as: tuple[str, ...] = field(default=())  # "service/designation" rows locating it

    @property
    def action(self) -> str:
        return "finish" if self.recorded_as else "remove"

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "ids": list(self.ids), "objects": list(self.objects),
                "name": self.name, "action": self.action,
                "recorded_as": list(self.recorded_as)}


def rows_here(registry: Registry, token: Token) -> dict[str, list[KeyRow]]:
    """The live registry rows (any service) that locate a key on `token`, by CKA_ID."""
    found: dict[str, list[KeyRow]] = {}
    for row in registry.keys(service=None):
        for loc in row.located_on(token.uri):
            found.setdefault(loc.ckaid, []).append(row)
    return found


def recorder(registry: Registry, token: Token) -> Callable[[bytes], bool]:
    """keygen.Recorded for this registry: does it record the CKA_ID at `token`?"""
    return lambda key_id: key_id.hex() in rows_here(registry, token)


def _named_private(token: Token, key_id: bytes, name: str | None) -> bool:
    """Whether the private key `key_id` already has the name its run meant."""
    try:
        return name is not None and token.find_key(key_id=key_id).label == name
    except (KeyNotFound, MultipleKeysFound):
        return False


def survey(registry: Registry, token: Token) -> list[Leftover]:
    """Every provisional object on the (logged-in) token, grouped by run, each with
    what the registry records of it. Changes nothing."""
    here = rows_here(registry, token)
    groups: dict[str, list[UnusableKey]] = {}
    for obj in token.provisional_objects():
        groups.setdefault(stem(obj.label), []).append(obj)
    out = []
    for label, objects in sorted(groups.items()):
        name = intended_name(label)
        kinds = [o.reason for o in objects]
        kinds += ["private key" for key_id in {o.id for o in objects}
                  if _named_private(token, key_id, name)]
        ids = tuple(sorted({o.id.hex() for o in objects}))
        rows = [r for i in ids for r in here.get(i, [])]
        out.append(Leftover(label, ids, tuple(sorted(kinds)), name,
                            tuple(sorted({f"{r.service}/{r.designation}" for r in rows}))))
    blank = token.blank_objects()
    if blank:
        out.append(Leftover(HALF_WRITTEN, (), tuple(sorted(o.reason for o in blank)), None))
    return out


def finish(token: Token, key: KeyHandle, certificate: x509.Certificate | None = None
           ) -> KeyHandle:
    """Give a recorded key's provisional objects the name their run meant (the
    private key is not touched); a lost certificate is rebuilt from `certificate`
    (what the registry keeps). The caller has checked that the registry records it."""
    names = sorted(n for lbl in unfinished(token, key.id)
                   if (n := intended_name(stem(lbl))) is not None)
    name = names[0] if names else (None if key.label.startswith(PROVISIONAL) else key.label)
    if name is not None:
        token.label_public_objects(key, name, certificate)
    return key


def settle(registry: Registry, token: Token, found: list[Leftover]) -> list[Leftover]:
    """Finish or remove what `survey` found, under the token's designation lock; each
    is checked against the registry again first (another run may have recorded it
    since). Returns what was done. Requires login."""
    done = []
    with designation_lock(token):
        here = rows_here(registry, token)
        for leftover in found:
            if any(i in here for i in leftover.ids):
                for key_id in (i for i in leftover.ids if i in here):
                    try:
                        key = token.find_key(key_id=bytes.fromhex(key_id))
                    except KeyNotFound:
                        continue  # its private key is gone: nothing of it to name
                    finish(token, key, here[key_id][0].certificate)
                done.append(leftover)
            elif leftover.label == HALF_WRITTEN:
                token.destroy_blank()
                done.append(leftover)
            elif not leftover.recorded_as:
                for key_id in leftover.ids:
                    remove_unrecorded(token, bytes.fromhex(key_id))
                for label in sorted({o.label for o in token.provisional_objects()
                                     if stem(o.label) == leftover.label}):
                    token.destroy_provisional(label)
                done.append(leftover)
    return done


def recorded_key(token: Token, row: KeyRow) -> KeyHandle | None:
    """The key `row` locates on `token`, if a run killed after the registry recorded
    it left some of its objects provisional: finished now. None when no such key is
    there (the key is complete, or elsewhere)."""
    for loc in row.located_on(token.uri):
        key_id = bytes.fromhex(loc.ckaid)
        with designation_lock(token):
            if not unfinished(token, key_id):
                continue
            try:
                key = token.find_key(key_id=key_id)
            except KeyNotFound:
                continue
            return finish(token, key, row.certificate)
    return None
