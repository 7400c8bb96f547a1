"""An opening session: one approval and one login open envelopes one at a time.

The assistant's platform pages post envelopes one by one. A session opens the
token and logs in once, then opens each envelope the face hands it (a file the
face spooled, never a path a request names) into a private work directory, with
the same rules as `tokenkeys open`: the consultation is checked for use
(`consultations.load_for_use`), every envelope must be sealed to exactly its keys
(`consultations.check_envelope`), and `opening_files.open_one` releases nothing
unauthenticated. A session is bounded by a count of envelopes and a time limit.

Audit: an "open-start" row (the session as its batch: origin, consultation, token,
limits; the envelopes are not known yet) is written
before the PIN is read, so no plaintext leaves without a row naming where it went;
"open" rows (digest, outcome, key, origin) follow every AUDIT_EVERY envelopes and
at the end, like the CLI's end row.

Every device call runs on one DeviceLane thread (python-pkcs11 crashes with two
threads, docs/drivers.md); a long-running face runs all its token work there.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tokenkeys.config import Config
from tokenkeys.drivers import KeyHandle, Token, list_tokens, open_token
from tokenkeys.drivers.device_thread import DeviceThread, confine, release
from tokenkeys.envelope import Identity
from tokenkeys.errors import PolicyRefused, SessionOver, UsageError
from tokenkeys.i18n import _
from tokenkeys.registry import Consultation, Registry
from tokenkeys.services import consultations, login, opening_files
from tokenkeys.services.access import open_registry
from tokenkeys.services.opening_files import FileResult
from tokenkeys.types import PinSource, TokenInfo
from tokenkeys.uri import Pkcs11Uri, parse, same_token

T = TypeVar("T")
AUDIT_EVERY = 50


class DeviceLane:
    """The one thread on which a long-running face makes every device call."""

    def __init__(self) -> None:
        self._thread = DeviceThread()

    def run(self, fn: Callable[[], T]) -> T:
        return self._thread.run(fn)

    def close(self) -> None:
        self._thread.__exit__(None, None, None)

    @property
    def thread(self) -> DeviceThread:
        return self._thread


def tokens(config: Config, lane: DeviceLane) -> list[TokenInfo]:
    """The tokens a web page may choose from (listed on the lane)."""
    return lane.run(lambda: list_tokens(config))


def is_default(config: Config, info: TokenInfo) -> bool:
    """Whether a listed token is the configured default one (same label, and the same
    serial when the default URI names one)."""
    default = config.default_token
    if not default:
        return False
    try:
        want, got = parse(default), parse(info.uri)
    except UsageError:
        return False
    if isinstance(want, Pkcs11Uri) and isinstance(got, Pkcs11Uri):
        return want.token == got.token and want.serial in (None, got.serial)
    return same_token(default, info.uri)


def known_token(config: Config, lane: DeviceLane, requested: str | None) -> str:
    """The token URI a request may use: the configured default, or exactly one that
    `tokens` lists. A URI naming a module or a keystore directory of the request's
    choosing is refused: a web page never picks a file the assistant loads."""
    default = config.default_token
    if requested is None or requested == default:
        if default is None:
            raise UsageError(_("no token chosen and no default token is configured"))
        return default
    if requested in {info.uri for info in tokens(config, lane)}:
        return requested
    raise UsageError(_("token {requested} is not one of the tokens this workstation lists")
                     .format(requested=requested)
                     )


@dataclasses.dataclass(frozen=True)
class SessionFacts:
    id: str
    origin: str
    service: str
    consultation: str
    token: str
    limit: int
    expires_at: float  # time.time()
    opened: int
    failed: int

    def to_json(self) -> dict[str, object]:
        return {"session": self.id, "origin": self.origin, "service": self.service,
                "consultation": self.consultation, "token": self.token,
                "limit": self.limit, "remaining": max(0, self.limit - self.opened - self.failed),
                "expires_in": max(0, round(self.expires_at - time.time())),
                "opened": self.opened, "failed": self.failed}


class OpeningSession:
    """Use `start`, then `open_one` per envelope, then `close` (always)."""

    def __init__(self, registry: Registry, lane: DeviceLane, bound: Consultation, *,
                 origin: str, service: str, token_uri: str, limit: int, seconds: float,
                 workdir: Path) -> None:
        self.id = uuid.uuid4().hex
        self.registry = registry
        self.lane = lane
        self.bound = bound
        self.origin = origin
        self.service = service
        self.token_uri = token_uri
        self.limit = limit
        self.expires_at = time.time() + seconds
        self.workdir = workdir
        self._token: Token | None = None
        self._keys: list[KeyHandle] = []
        self._identities: list[Identity] = []
        self._unrecorded: list[FileResult] = []
        self._used = 0
        self._opened = 0
        self._failed = 0
        self._closed = False
        self._busy = 0  # envelopes being opened: close() waits for them
        self._mutex = threading.Lock()
        self._idle = threading.Condition(self._mutex)

    @classmethod
    def prepare(cls, config: Config, lane: DeviceLane, *, origin: str, service: str,
                consultation: str, token_uri: str, limit: int, seconds: float,
                workdir: Path) -> OpeningSession:
        """Check the consultation for use and write the "open-start" row, before any
        approval or PIN: a registry that cannot be written stops here."""
        if limit < 1 or seconds <= 0:
            raise UsageError(_("an opening session needs a count of at least 1 and a time "
                               "limit above 0"))
        registry = open_registry(config)
        try:
            bound = consultations.load_for_use(registry, service, consultation)
            session = cls(registry, lane, bound, origin=origin, service=service,
                       token_uri=token_uri, limit=limit, seconds=seconds, workdir=workdir)
            registry.record_event("open-start", service=service, subject=consultation,
                                  details={"batch": session.id, "origin": origin,
                                           "token": token_uri, "limit": limit,
                                           "seconds": seconds})
        except BaseException:
            registry.close()
            raise
        return session

    def login(self, config: Config, pins: PinSource) -> None:
        """Open the token and log in once (one C_Login, never retried)."""
        def run() -> None:
            token = open_token(self.token_uri, config)
            try:
                login.login(token, pins)
                self._keys = list(token.list_keys())
            except BaseException:
                token.close()
                raise
            self._token = token
        self.lane.run(run)
        self._identities = [confine(k, self.lane.thread) for k in self._keys]

    def facts(self) -> SessionFacts:
        return SessionFacts(self.id, self.origin, self.service, self.bound.reference,
                            self.token_uri, self.limit, self.expires_at, self._opened,
                            self._failed)

    def open_one(self, src: Path) -> FileResult:
        """Open `src` (a file the face wrote) to a fresh file in the work directory.

        A refused or damaged envelope is a failed FileResult; a device failure raises
        (the session is then unusable, as a batch would stop)."""
        with self._mutex:
            if self._closed or self._token is None:
                raise SessionOver(_("this opening session is closed"))
            if time.time() >= self.expires_at:
                raise SessionOver(_("this opening session's time limit is over: start a new "
                                    "one"))
            if self._used >= self.limit:
                raise SessionOver(_("this opening session has opened its {limit} "
                                    "envelope(s): start a new one").format(limit=self.limit))
            self._used += 1
            self._busy += 1
            dst = self.workdir / f"{uuid.uuid4().hex}.out"
        try:
            result = self._open(src, dst)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()
        with self._mutex:
            self._opened += result.status == "opened"
            self._failed += result.status != "opened"
            self._unrecorded.append(result)
            flush = len(self._unrecorded) >= AUDIT_EVERY
        if flush:
            self._record()
        return result

    def _open(self, src: Path, dst: Path) -> FileResult:
        try:
            consultations.check_envelope(self.bound, src)
        except PolicyRefused as exc:
            result = FileResult.failed(src, dst, type(exc).__name__, str(exc))
        else:
            result = opening_files.open_one(src, dst, self._identities)
        if result.status != "opened":
            result = dataclasses.replace(result, sha256=consultations.file_digest(src))
        return result

    @property
    def over(self) -> bool:
        """Closed, out of time, or every envelope of its count handed in."""
        return self._closed or time.time() >= self.expires_at or self._used >= self.limit

    def _record(self, error: str | None = None) -> None:
        with self._mutex:
            batch, self._unrecorded = self._unrecorded, []
        if batch or error:
            consultations.record_opening(self.registry, self.service, self.bound.reference,
                                         self.token_uri, batch, batch=self.id,
                                         origin=self.origin, error=error)

    def close(self, error: str | None = None, *, wait: float = 60.0) -> None:
        """Let the envelopes being opened finish (up to `wait` s), record what is left,
        forget the keys and log out (closing the token)."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
            self._idle.wait_for(lambda: self._busy == 0, wait)
        try:
            self._record(error)
        finally:
            for key in self._keys:
                release(key)
            token, self._token = self._token, None
            if token is not None:
                self.lane.run(token.close)
            self.registry.close()
