"""The user's approval, in the assistant: its own page, or its terminal (--console).

Every operation that uses a private key or changes a token waits here. The prompt
names the requesting origin, the operation, the key and the count. The PIN is typed
here (or on the reader's PIN pad), never in the platform's page: the API has no
field for it. An approval that is refused or not given in time refuses the request.
"""

from __future__ import annotations

import contextlib
import getpass
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from tokenkeys.assistant import texts
from tokenkeys.errors import ApprovalRefused, UsageError
from tokenkeys.i18n import _
from tokenkeys.types import Secret


@dataclass
class Approval:
    id: str
    origin: str
    operation: str  # open | generate | certify
    text: str
    needs_pin: bool
    token: str
    expires: float
    done: threading.Event = field(default_factory=threading.Event)
    approved: bool = False
    pin: Secret | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "origin": self.origin, "operation": self.operation,
                "text": self.text, "needs_pin": self.needs_pin, "token": self.token,
                "expires_in": max(0, round(self.expires - time.monotonic()))}


class Consent:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._waiting: dict[str, Approval] = {}
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)
        self._closed = False

    def ask(self, *, origin: str, operation: str, text: str, token: str,
            needs_pin: bool) -> Secret | None:
        """Block until the user answers: the PIN typed (None with a PIN pad), or
        ApprovalRefused when refused, timed out or the assistant stops."""
        request = Approval(uuid.uuid4().hex, origin, operation, text, needs_pin, token,
                           time.monotonic() + self.timeout)
        with self._changed:
            if self._closed:
                raise ApprovalRefused(_(texts.SHUTTING_DOWN))
            self._waiting[request.id] = request
            self._changed.notify_all()
        answered = request.done.wait(self.timeout)
        with self._changed:
            self._waiting.pop(request.id, None)
            self._changed.notify_all()
        if not answered:
            raise ApprovalRefused(_(texts.TIMED_OUT).format(seconds=round(self.timeout)))
        if not request.approved:
            raise ApprovalRefused(_(texts.SHUTTING_DOWN) if self._closed else _(texts.REFUSED))
        return request.pin

    def pending(self) -> list[Approval]:
        with self._mutex:
            return list(self._waiting.values())

    def answer(self, request_id: str, approve: bool, pin: str | None = None) -> None:
        with self._mutex:
            request = self._waiting.get(request_id)
            if request is None or request.done.is_set():
                raise UsageError(_(texts.UNKNOWN_REQUEST))
            if approve and request.needs_pin and not pin:
                raise UsageError(_(texts.NO_PIN))
            request.approved = approve
            request.pin = Secret(pin) if approve and pin else None
            request.done.set()

    def wait_for_change(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    def close(self) -> None:
        """Refuse everything still waiting (the assistant is stopping)."""
        with self._changed:
            self._closed = True
            for request in self._waiting.values():
                request.done.set()
            self._changed.notify_all()


def console_loop(consent: Consent, stop: threading.Event) -> None:
    """--console: ask on the terminal, one request at a time (a daemon thread)."""
    asked: set[str] = set()
    while not stop.is_set():
        fresh = [r for r in consent.pending() if r.id not in asked]
        if not fresh:
            consent.wait_for_change(0.5)
            continue
        request = fresh[0]
        asked.add(request.id)
        # Names in the text come from the page or the device: never let them drive the
        # terminal (escape sequences, fake lines).
        shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in request.text)
        print(shown, file=sys.stderr, flush=True)
        try:
            yes = input(_(texts.CONSOLE_ASK)).strip().lower() in ("y", "yes", "o", "oui")
            pin = (getpass.getpass(_(texts.CONSOLE_PIN).format(token=request.token))
                   if yes and request.needs_pin else None)
            consent.answer(request.id, yes, pin)
        except (EOFError, UsageError):
            with contextlib.suppress(UsageError):
                consent.answer(request.id, False)
