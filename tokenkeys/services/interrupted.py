"""What an interrupted run left on a token: finished, or removed (`key cleanup`, reruns).

A run that makes a key (`key generate`, `key renew`, `share copy`) keeps every object
it creates under a provisional label (keygen.provisional_label) until the registry
has recorded the key; only then does it give the key its name. So the registry
decides, after any kill:
- a provisional key the registry records at its location (this token and its
  CKA_ID) was committed: it is *finished*, given the name its label was made for;
- every other provisional object (a key pair, a lone public or private key, a
  certificate) was never recorded: it is *removed*.
Objects under any other label are never touched, except objects that hold nothing at
all (no label, no id, no key or certificate value): what a process killed inside the
device's own object creation leaves, listed and removed as "half-written".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tokenkeys.drivers.base import PROVISIONAL, KeyHandle, Token, UnusableKey
from tokenkeys.errors import KeyNotFound
from tokenkeys.services.keygen import designation_lock, intended_name

if TYPE_CHECKING:  # SQLAlchemy is imported only by the commands that use the registry
    from tokenkeys.registry import KeyRow, Registry

HALF_WRITTEN = "(half-written objects)"
# A provisional label, and what a certificate chain adds after it ("/chain-01").
_STEM = re.compile(re.escape(PROVISIONAL) + r".*:[0-9a-f]{8}", re.DOTALL)


def stem(label: str) -> str:
    """The provisional label of the run that made the object (chain suffix dropped)."""
    match = _STEM.match(label)
    return match.group(0) if match else label


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


def survey(registry: Registry, token: Token) -> list[Leftover]:
    """Every provisional object on the (logged-in) token, grouped by run, each with
    what the registry records of it. Changes nothing."""
    here = rows_here(registry, token)
    groups: dict[str, list[UnusableKey]] = {}
    for obj in token.provisional_objects():
        groups.setdefault(stem(obj.label), []).append(obj)
    out = []
    for label, objects in sorted(groups.items()):
        ids = tuple(sorted({o.id.hex() for o in objects}))
        rows = [r for i in ids for r in here.get(i, [])]
        out.append(Leftover(label, ids, tuple(sorted(o.reason for o in objects)),
                            intended_name(label),
                            tuple(sorted({f"{r.service}/{r.designation}" for r in rows}))))
    blank = token.blank_objects()
    if blank:
        out.append(Leftover(HALF_WRITTEN, (), tuple(sorted(o.reason for o in blank)), None))
    return out


def finish(token: Token, key: KeyHandle) -> KeyHandle:
    """Give a recorded provisional key the name its label was made for (a key already
    named is returned as it is). The caller has checked that the registry records it."""
    name = intended_name(stem(key.label))
    if name is not None:
        token.set_label(key, name)
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
                        finish(token, token.find_key(key_id=bytes.fromhex(key_id)))
                    except KeyNotFound:
                        continue  # its objects are gone: nothing of it to name
                done.append(leftover)
            elif leftover.label == HALF_WRITTEN:
                token.destroy_blank()
                done.append(leftover)
            elif not leftover.recorded_as:
                for label in sorted({o.label for o in token.provisional_objects()
                                     if stem(o.label) == leftover.label}):
                    token.destroy_provisional(label)
                done.append(leftover)
    return done


def recorded_key(token: Token, row: KeyRow) -> KeyHandle | None:
    """The key `row` locates on `token`, if it is still provisional (its run was killed
    after the registry recorded it): finished now. None when no provisional key of it
    is there (the key is complete, or elsewhere)."""
    for loc in row.located_on(token.uri):
        try:
            key = token.find_key(key_id=bytes.fromhex(loc.ckaid))
        except KeyNotFound:
            continue
        if key.label.startswith(PROVISIONAL):
            with designation_lock(token):
                return finish(token, key)
    return None


def discard_unrecorded(registry: Registry, token: Token, key_id: bytes) -> bool:
    """Remove the provisional objects with `key_id` that the registry does not record
    on `token` (a copy killed before its commit); True if there were any."""
    left = [o for o in token.provisional_objects() if o.id == key_id]
    if not left or key_id.hex() in rows_here(registry, token):
        return False
    for label in sorted({o.label for o in left}):
        token.destroy_provisional(label)
    return True
