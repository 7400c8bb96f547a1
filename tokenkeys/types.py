"""Value types shared by every layer."""

from __future__ import annotations

import enum
import getpass
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tokenkeys.errors import PinMissing, UsageError
from tokenkeys.files import MAX_PIN_FILE, read_limited
from tokenkeys.i18n import N_, _


class Secret:
    """A PIN or passphrase. Its repr and str never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


class Algorithm(enum.StrEnum):
    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    RSA4096 = "rsa4096"
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("rsa")

    @classmethod
    def parse(cls, text: str) -> Algorithm:
        try:
            return cls(text.lower())
        except ValueError:
            choices = ", ".join(a.value for a in cls)
            raise UsageError(_("unsupported algorithm {text!r} (choose one of: {choices})")
                             .format(text=text, choices=choices)) from None


DEFAULT_ALGORITHM = Algorithm.RSA3072


class KeyType(enum.StrEnum):
    RSA = "rsa"
    EC = "ec"


@dataclass(frozen=True)
class KeySpec:
    """What to generate. `label` is the designation; extractable only if shareable.
    `replace`: on a card with a fixed key slot, overwrite the key there (else KeyExists)."""

    label: str
    algorithm: Algorithm = DEFAULT_ALGORITHM
    shareable: bool = False
    replace: bool = False


@dataclass(frozen=True)
class TokenInfo:
    label: str
    manufacturer: str
    model: str
    serial: str
    module: str
    slot: int
    flags: tuple[str, ...] = ()
    uri: str = ""


@dataclass(frozen=True)
class PinSource:
    """Where a PIN comes from. Never argv. The one order, documented in
    docs/security-officer.md and tested in tests/test_pin_source.py:

    1. `--pinpad` (an explicit option): the reader's PIN pad; `read()` returns None;
    2. `--pin-file FILE` (an explicit option): the file's first line;
    3. the environment variable (`TOKENKEYS_PIN`), when set and not empty;
    4. a no-echo prompt, on a terminal.

    An empty value is never sent to a token: an empty environment variable
    counts as not set, and an empty first line or empty prompt is refused.
    """

    env_var: str = "TOKENKEYS_PIN"
    file: Path | None = None
    what: str = N_("user PIN")  # English; shown through _()
    interactive: bool = field(default_factory=lambda: sys.stdin.isatty())
    pinpad: bool = False
    value: Secret | None = None

    def read(self) -> Secret | None:
        if self.value is not None:
            return self.value
        if self.pinpad and self.file is not None:
            raise UsageError(_("--pinpad and --pin-file exclude each other: choose one"))
        if self.pinpad:
            return None
        if self.file is not None:
            return Secret(self._first_line(self.file))
        value = os.environ.get(self.env_var)
        if value:
            return Secret(value)
        if self.interactive:
            typed = getpass.getpass(_("{what}: ").format(what=_(self.what)))
            if not typed:
                raise UsageError(_("empty {what}: nothing was sent to the token")
                                 .format(what=_(self.what)))
            return Secret(typed)
        raise PinMissing(_("{what} ({env_var})").format(what=_(self.what), env_var=self.env_var))

    def _first_line(self, path: Path) -> str:
        data = read_limited(path, MAX_PIN_FILE, "PIN file")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(_("PIN file {path} is not UTF-8 text").format(path=path)) from None
        line = text.replace("\r\n", "\n").replace("\r", "\n").split("\n", 1)[0]
        if not line:
            raise UsageError(_("PIN file {path} has an empty first line: nothing was sent to "
                               "the token").format(path=path))
        return line


def given_pin(value: Secret) -> PinSource:
    """A PIN already read once (e.g. handed to a batch worker through a pipe)."""
    return PinSource(value=value, interactive=False)


def so_pin_source() -> PinSource:
    return PinSource(env_var="TOKENKEYS_SO_PIN", what=N_("SO PIN"))
