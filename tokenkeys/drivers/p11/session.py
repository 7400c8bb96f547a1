"""P11Token's one session and its login state.

One session per token, kept open. Login state is per token (PKCS#11). The user
PIN read at login() is kept in memory (never logged) only to log the user in
again after an SO operation (OpenPGP key generation, certificate writes).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TypeVar

from tokenkeys.drivers.p11 import ck, discovery
from tokenkeys.drivers.p11.ckr import CKR, CkrError, ckr_errors, to_error
from tokenkeys.drivers.p11.port import Session
from tokenkeys.drivers.p11.removal import RemovalMethods
from tokenkeys.drivers.pkcs11_tables import tries_left
from tokenkeys.errors import PinIncorrect, PinLocked, PinMissing, TokenNotFound, UsageError
from tokenkeys.i18n import _
from tokenkeys.types import PinSource, given_pin, so_pin_source

T = TypeVar("T")
_WRONG_PIN = CKR["CKR_PIN_INCORRECT"]
_NOT_LOGGED_IN = CKR["CKR_USER_NOT_LOGGED_IN"]


class SessionMethods(RemovalMethods):
    """P11Token's session, login, SO operations and re-initialisation."""

    module: str
    _so_pins: PinSource | None
    _user_pins: PinSource | None
    _logged_in: bool
    _session: Session | None

    def _open_session(self) -> Session:
        what = _("opening token {label!r}").format(label=self.slot.label)
        session = self._try_open_session(what)
        key = os.path.realpath(self.module)
        discovery.SESSIONS[key] = discovery.SESSIONS.get(key, 0) + 1
        return session

    def _try_open_session(self, what: str) -> Session:
        try:
            return self.port.open_session(self.slot.slot, rw=True)
        except CkrError as exc:
            if exc.code != CKR["CKR_TOKEN_WRITE_PROTECTED"]:
                raise to_error(exc.code, what) from None
        # Read-only tokens can still decrypt and sign.
        with ckr_errors(what):
            return self.port.open_session(self.slot.slot, rw=False)

    def session(self) -> Session:
        if self._session is None:
            raise UsageError(_("token {label!r} is closed").format(label=self.slot.label))
        return self._session

    def close(self) -> None:
        self._logged_in = False
        self._user_pins = None
        session, self._session = self._session, None
        if session is not None:
            session.close()  # python-pkcs11: this logs the whole token out
            discovery.SESSIONS[os.path.realpath(self.module)] -= 1

    def _flags(self) -> int:
        with ckr_errors(_("reading the token")):
            return self.port.token(self.slot.slot).flags

    # --- login -------------------------------------------------------------
    def _c_login(self, source: PinSource, so: bool) -> None:
        """C_Login; the PIN is revealed only for the call and never retried."""
        who = _("SO PIN") if so else _("PIN")
        pin = source.read()
        if pin is None and not self.slot.flags & ck.CKF_PROTECTED_AUTHENTICATION_PATH:
            raise PinMissing(_("{what} (the token has no PIN pad)").format(what=_(source.what)))
        try:
            self.session().login(None if pin is None else pin.reveal(), so)
        except CkrError as exc:
            self._login_failed(exc.code, who, so)
        if not so:
            self._user_pins = given_pin(pin) if pin is not None else source

    def _login_failed(self, code: int, who: str, so: bool) -> None:
        if code == CKR["CKR_USER_ALREADY_LOGGED_IN"]:
            return  # another Token of this process logged this token in
        if code == CKR["CKR_PIN_LEN_RANGE"]:
            raise UsageError(_("{who} length is outside the token's range (no try used)")
                             .format(who=who))
        if code == _WRONG_PIN or (code == _NOT_LOGGED_IN and self.profile.wrong_pin_not_logged_in):
            if so:
                raise PinIncorrect(_("SO PIN incorrect; the token keeps its own count"))
            flags = self._flags()
            if flags & ck.CKF_USER_PIN_LOCKED:
                raise PinLocked()
            raise PinIncorrect(tries_left(flags) or self.profile.tries_hint)
        if code == CKR["CKR_PIN_LOCKED"]:
            raise PinLocked(who)
        raise self.explain(code, _("login to {label!r}").format(label=self.slot.label))

    def login(self, pin_source: PinSource) -> None:
        """User login, once. PIN pad when the source gives no PIN and the reader has one."""
        if self._logged_in:
            return
        self._c_login(pin_source, so=False)
        self._logged_in = True

    @property
    def logged_in(self) -> bool:
        return self._logged_in

    def _logout(self) -> None:
        with contextlib.suppress(CkrError):
            self.session().logout()
        self._logged_in = False

    def as_so(self, fn: Callable[[], T]) -> T:
        """Run `fn` logged in as SO, then log the user back in if it was."""
        user = self._user_pins
        self._logout()
        self._c_login(self._so_pins or so_pin_source(), so=True)
        try:
            return fn()
        finally:
            self._logout()
            if user is not None:
                self.login(user)

    def writing(self, fn: Callable[[], T]) -> T:
        """Run an object write under the PIN the profile needs for it."""
        return self.as_so(fn) if self.profile.keygen_needs_so else fn()

    def reinitialise(self) -> None:
        """C_Finalize + C_Initialize, then reopen the session and log the user back in.

        OpenSC 0.23 keeps a wrong picture of a key generated in this process
        (modulus followed by heap bytes): a fresh start reads the card again.
        """
        user = self._user_pins
        self.close()
        with ckr_errors(_("re-initialising the module")):
            self.port.reinitialise()
        again = [s for s in discovery.scan(self.port)
                 if s.serial == self.slot.serial and s.label == self.slot.label]
        if not again:
            raise TokenNotFound(_("token {label!r} serial {serial} is gone")
                                .format(label=self.slot.label, serial=self.slot.serial))
        self.slot = again[0]
        self._session = self._open_session()
        if user is not None:
            self.login(user)
