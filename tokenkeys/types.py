"""Value types shared by every layer."""

from __future__ import annotations

import enum
import getpass
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tokenkeys.errors import PinMissing, UsageError


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

    @property
    def rsa_bits(self) -> int:
        return int(self.value[3:])

    @property
    def curve(self) -> str:
        """Curve name as cryptography spells it (secp256r1, secp384r1)."""
        return {"ec-p256": "secp256r1", "ec-p384": "secp384r1"}[self.value]

    @classmethod
    def parse(cls, text: str) -> Algorithm:
        try:
            return cls(text.lower())
        except ValueError:
            choices = ", ".join(a.value for a in cls)
            raise UsageError(f"unsupported algorithm {text!r} (choose one of: {choices})") from None


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
    """Where a PIN comes from: environment, a file, a no-echo prompt, or the PIN pad.

    Never argv. `read()` returns None when the reader's PIN pad should be used.
    """

    env_var: str = "TOKENKEYS_PIN"
    file: Path | None = None
    what: str = "user PIN"
    interactive: bool = field(default_factory=lambda: sys.stdin.isatty())
    pinpad: bool = False
    value: Secret | None = None

    def read(self) -> Secret | None:
        if self.value is not None:
            return self.value
        if self.pinpad:
            return None
        if self.file is not None:
            try:
                text = self.file.read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot read PIN file {self.file}: {exc.strerror}") from None
            return Secret(text.rstrip("\r\n"))
        value = os.environ.get(self.env_var)
        if value is not None:
            return Secret(value)
        if self.interactive:
            return Secret(getpass.getpass(f"{self.what}: "))
        raise PinMissing(f"{self.what} ({self.env_var})")


def given_pin(value: Secret) -> PinSource:
    """A PIN already read once (e.g. handed to a batch worker through a pipe)."""
    return PinSource(value=value, interactive=False)


def so_pin_source() -> PinSource:
    return PinSource(env_var="TOKENKEYS_SO_PIN", what="SO PIN")
