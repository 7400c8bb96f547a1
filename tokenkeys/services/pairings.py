"""Pairing a platform's web origin with the assistant: codes, attempts, bearer tokens.

A page pairs once per origin: the assistant shows a 6-digit code in its own window,
the user types it into the page, and the page gets a bearer token for that origin.
The token is random (256 bits) and only its SHA-256 is stored, in a small JSON file
written atomically (the user data dir by default). A slow hash adds nothing to a
256-bit random value. Wrong codes are counted per origin: after MAX_WRONG_CODES the
origin stays locked until the assistant restarts or the user unlocks it.

`tokenkeys assistant pairings list|revoke` and the assistant share the file; the
assistant looks at it again whenever it changed, so a revocation holds at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import platformdirs

from tokenkeys.config import APP
from tokenkeys.errors import PairingRefused, UsageError
from tokenkeys.files import write_atomic
from tokenkeys.i18n import _

MAX_WRONG_CODES = 5
CODE_LIFETIME = 300.0  # seconds a code shown by the assistant stays valid
TOKEN_PREFIX = "tkp_"


def default_path() -> Path:
    """TOKENKEYS_PAIRINGS, else `assistant-pairings.json` in the user data dir."""
    given = os.environ.get("TOKENKEYS_PAIRINGS")
    if given:
        return Path(given)
    return Path(platformdirs.user_data_dir(APP)) / "assistant-pairings.json"


@dataclass(frozen=True)
class Pairing:
    origin: str
    token_sha256: str
    created_at: str

    def to_json(self) -> dict[str, str]:
        # The hash's start identifies a pairing; the token itself is never kept.
        return {"origin": self.origin, "token_id": self.token_sha256[:12],
                "created_at": self.created_at}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class PairingStore:
    """The pairings file. Every change is read-modify-write under a lock file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self._seen: tuple[int, int] | None = None
        self._cache: dict[str, Pairing] = {}
        self._mutex = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _load(self) -> dict[str, Pairing]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._seen, self._cache = None, {}
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._seen:
            return self._cache
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            rows = {row["origin"]: Pairing(row["origin"], row["token_sha256"],
                                           row["created_at"]) for row in data["pairings"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            why = type(exc).__name__
            raise UsageError(_("the pairings file {path} cannot be read ({why}): move it "
                               "away and pair again").format(path=self.path, why=why)) from None
        self._seen, self._cache = stamp, rows
        return rows

    def _save(self, rows: dict[str, Pairing]) -> None:
        body = {"version": 1, "pairings": [
            {"origin": p.origin, "token_sha256": p.token_sha256, "created_at": p.created_at}
            for p in sorted(rows.values(), key=lambda p: p.origin)]}
        write_atomic(self.path, json.dumps(body, indent=2).encode("utf-8"), mode=0o600)

    def list(self) -> list[Pairing]:
        with self._mutex:
            return sorted(self._load().values(), key=lambda p: p.origin)

    def add(self, origin: str) -> str:
        """A new token for `origin` (replacing its previous one); returned once, never kept."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._mutex, self._locked():
            self._seen = None
            rows = dict(self._load())
            rows[origin] = Pairing(origin, _digest(token), now)
            self._save(rows)
        return token

    def revoke(self, origin: str) -> Pairing:
        with self._mutex, self._locked():
            self._seen = None
            rows = dict(self._load())
            gone = rows.pop(origin, None)
            if gone is None:
                raise UsageError(_("no pairing for origin {origin}").format(origin=origin))
            self._save(rows)
        return gone

    def check(self, origin: str, token: str) -> bool:
        """True when `token` is the one paired with `origin` (and only with it)."""
        with self._mutex:
            found = self._load().get(origin)
        return found is not None and hmac.compare_digest(found.token_sha256, _digest(token))

    def is_paired(self, origin: str) -> bool:
        with self._mutex:
            return origin in self._load()


@dataclass
class _Pending:
    code: str
    expires: float


class PairingDesk:
    """The codes the assistant shows, and the wrong attempts per origin (in memory:
    a restart of the assistant clears the locks, as the user expects)."""

    def __init__(self, store: PairingStore, *, max_wrong: int = MAX_WRONG_CODES,
                 lifetime: float = CODE_LIFETIME) -> None:
        self.store = store
        self.max_wrong = max_wrong
        self.lifetime = lifetime
        self._pending: dict[str, _Pending] = {}
        self._wrong: dict[str, int] = {}
        self._mutex = threading.Lock()

    def locked(self, origin: str) -> bool:
        return self._wrong.get(origin, 0) >= self.max_wrong

    def start(self, origin: str) -> str:
        """A fresh 6-digit code for `origin`, to be shown by the assistant only."""
        with self._mutex:
            self._refuse_if_locked(origin)
            code = f"{secrets.randbelow(1_000_000):06d}"
            self._pending[origin] = _Pending(code, time.monotonic() + self.lifetime)
            return code

    def pending(self) -> dict[str, str]:
        """Origin -> code, for the assistant's own window."""
        now = time.monotonic()
        with self._mutex:
            return {o: p.code for o, p in self._pending.items() if p.expires > now}

    def confirm(self, origin: str, code: str) -> str:
        """The bearer token when `code` is the one shown for `origin`; PairingRefused
        otherwise (each wrong code counts, whatever the reason)."""
        with self._mutex:
            self._refuse_if_locked(origin)
            pending = self._pending.get(origin)
            good = (pending is not None and pending.expires > time.monotonic()
                    and hmac.compare_digest(pending.code.encode(), code.encode()))
            if not good:
                wrong = self._wrong[origin] = self._wrong.get(origin, 0) + 1
                left = self.max_wrong - wrong
                if left <= 0:
                    self._pending.pop(origin, None)
                    self._refuse_if_locked(origin)
                if pending is None or pending.expires <= time.monotonic():
                    message = (_("no pairing was started for this origin, or its code "
                                 "expired; {left} attempt(s) left before pairing is locked "
                                 "for this origin").format(left=left))
                else:
                    message = (_("the pairing code is wrong; {left} attempt(s) left before "
                                 "pairing is locked for this origin").format(left=left))
                raise PairingRefused(message, attempts_left=left)
            del self._pending[origin]
            self._wrong.pop(origin, None)
        return self.store.add(origin)

    def unlock(self, origin: str) -> None:
        with self._mutex:
            self._wrong.pop(origin, None)

    def locked_origins(self) -> list[str]:
        with self._mutex:
            return sorted(o for o, n in self._wrong.items() if n >= self.max_wrong)

    def _refuse_if_locked(self, origin: str) -> None:
        if self.locked(origin):
            raise PairingRefused(
                _("pairing is locked for {origin} after {max_wrong} wrong codes: restart the "
                  "assistant, or unlock it in the assistant's window")
                .format(origin=origin, max_wrong=self.max_wrong), attempts_left=0, locked=True)
