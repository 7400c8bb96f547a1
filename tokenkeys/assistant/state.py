"""What one running assistant holds: settings, the device lane, pairings, approvals and
opening sessions. Also the helpers every route uses: the caller's origin, JSON input."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import platformdirs
from starlette.requests import Request

from tokenkeys.assistant.consent import Consent
from tokenkeys.assistant.settings import Settings
from tokenkeys.config import APP, Config
from tokenkeys.drivers import Token, open_token
from tokenkeys.errors import NotPaired, PolicyRefused, UsageError
from tokenkeys.i18n import _
from tokenkeys.services import login as login_service
from tokenkeys.services.opening_session import DeviceLane, OpeningSession, tokens
from tokenkeys.services.pairings import PairingDesk, PairingStore
from tokenkeys.types import PinSource, Secret
from tokenkeys.uri import Pkcs11Uri, parse

T = TypeVar("T")
PINPAD_FLAG = "protected-auth-path"


@dataclass
class Assistant:
    settings: Settings
    config: Config
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    lane: DeviceLane = field(default_factory=DeviceLane)
    store: PairingStore = field(init=False)
    desk: PairingDesk = field(init=False)
    consent: Consent = field(init=False)
    sessions: dict[str, OpeningSession] = field(default_factory=dict)
    workdir: Path = field(init=False)
    announce: Callable[[str], None] = field(default=lambda _text: None)

    def __post_init__(self) -> None:
        self.store = PairingStore(self.settings.pairings)
        self.desk = PairingDesk(self.store)
        self.consent = Consent(self.settings.approval_timeout)
        base = self.settings.workdir or Path(platformdirs.user_cache_dir(APP))
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Envelopes are spooled and opened here (0700): no request names a path.
        self.workdir = Path(tempfile.mkdtemp(prefix="assistant-", dir=base))
        self.sessions_lock = threading.Lock()

    @property
    def window_url(self) -> str:
        return f"{self.settings.base_url}/ui#{self.secret}"

    def pins_for(self, token_uri: str, pin: Secret | None) -> PinSource:
        if pin is None:
            return PinSource(pinpad=True, interactive=False)
        return PinSource(value=pin, interactive=False)

    @staticmethod
    def token_name(token_uri: str) -> str:
        """What the user knows a token by: its label (a keystore: its directory)."""
        try:
            parsed = parse(token_uri)
        except UsageError:
            return token_uri
        if isinstance(parsed, Pkcs11Uri):
            return parsed.token or token_uri
        return parsed.directory

    def needs_pin(self, token_uri: str) -> bool:
        """False when the token's reader has a PIN pad (the PIN is typed there)."""
        found = [t for t in tokens(self.config, self.lane) if t.uri == token_uri]
        return not (found and PINPAD_FLAG in found[0].flags)

    def check_token_free(self, token_uri: str) -> None:
        """Refuse a second login on a token an opening session holds: a login is per
        token, and closing another session on it would log the running one out."""
        with self.sessions_lock:
            busy = any(s.token_uri == token_uri and not s.over for s in self.sessions.values())
        if busy:
            raise PolicyRefused(_("an opening session is using {token_name}: close it (or "
                                  "let it end) first")
                                .format(token_name=self.token_name(token_uri)))

    @contextmanager
    def logged_in(self, token_uri: str, pins: PinSource) -> Iterator[Token]:
        """The token opened and logged in once; call on the lane only."""
        with open_token(token_uri, self.config) as token:
            login_service.login(token, pins)
            yield token

    def shutdown(self) -> None:
        """Refuse what waits for approval, close (log out) every session, clean up."""
        self.consent.close()
        with self.sessions_lock:
            sessions, self.sessions = list(self.sessions.values()), {}
        for session in sessions:
            session.close(error="Interrupted")
        self.lane.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def assistant_of(request: Request) -> Assistant:
    found: Assistant = request.app.state.assistant
    return found


def caller(request: Request) -> str:
    """The request's origin (the guard checked it), when its bearer token is that
    origin's pairing; NotPaired otherwise."""
    origin = request.headers["origin"]
    scheme, _sep, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotPaired(_("this page is not paired with the assistant: pair it first (the "
                          "assistant shows a code to type in the page)"))
    if not assistant_of(request).store.check(origin, token.strip()):
        raise NotPaired(_("this pairing is not valid for {origin} (revoked, or made for "
                          "another origin): pair the page again").format(origin=origin))
    return origin


async def json_body(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise UsageError(_("the request body is not JSON")) from None
    if not isinstance(data, dict):
        raise UsageError(_("the request body must be a JSON object"))
    return data


def text_field(data: dict[str, Any], name: str, *, required: bool = True,
               default: str | None = None) -> str | None:
    value = data.get(name, default)
    if value is None:
        if required:
            raise UsageError(_("the field {name!r} is required").format(name=name))
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise UsageError(_("the field {name!r} must be a non-empty text of at most 256 "
                           "characters").format(name=name))
    if not value.isprintable():  # names reach the approval prompt and the console
        raise UsageError(_("the field {name!r} must not contain control or invisible "
                           "characters").format(name=name))
    return value


def int_field(data: dict[str, Any], name: str, default: int, *, low: int, high: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(_("the field {name!r} must be a whole number from {low} to {high}")
                         .format(name=name, low=low, high=high)
                         )
    return value


async def run(fn: Callable[[], T]) -> T:
    """A blocking call (registry, approval wait, device lane) off the event loop."""
    return await anyio.to_thread.run_sync(fn)
