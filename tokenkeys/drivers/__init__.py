"""The driver registry: the URI scheme picks the backend, once, at the edge.

`open_token`, `list_tokens` and `init_token` are the only doors the CLI and the
workflows use; capabilities (drivers.capabilities) are checked on what they return.
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenkeys.config import Config
from tokenkeys.drivers.base import KeyHandle, Token, UnusableKey
from tokenkeys.errors import UsageError
from tokenkeys.i18n import _
from tokenkeys.types import Secret, TokenInfo
from tokenkeys.uri import Pkcs11Uri, SoftUri, parse

__all__ = ["KeyHandle", "Token", "UnusableKey", "init_token", "list_modules", "list_tokens",
           "open_token", "token_uri", "wait_for_card"]


def token_uri(text: str | None, config: Config) -> str:
    """The token URI to use: the one given, else the configured default."""
    uri = text or config.default_token
    if not uri:
        raise UsageError(_("no token given: use --token URI, TOKENKEYS_TOKEN, or `token` in "
                           "config"))
    return uri


def open_token(uri: str | Pkcs11Uri | SoftUri, config: Config, wait: float | None = None,
               *, binding: str | None = None) -> Token:
    """Open the token a URI names. Nothing is logged in yet.

    `wait`: seconds to wait for a card to be inserted (slot events, polled);
    None means TOKENKEYS_CARD_WAIT (default 0). `binding` forces "python-pkcs11"
    or "pykcs11" (default: PyKCS11 for card modules, python-pkcs11 otherwise).
    """
    parsed = parse(uri) if isinstance(uri, str) else uri
    if isinstance(parsed, SoftUri):
        from tokenkeys.drivers.software import SoftwareToken

        return SoftwareToken.open(parsed)
    from tokenkeys.drivers.p11.token import P11Token

    return P11Token.open(parsed, config, binding=binding, wait=wait)


def list_tokens(config: Config) -> list[TokenInfo]:
    """Every initialised PKCS#11 token of every module found, then the software
    keystores the configuration knows (its default token, when it is soft:)."""
    from tokenkeys.drivers.p11.discovery import list_all

    found = list_all(config)
    for text in _soft_stores(config):
        try:
            with open_token(text, config) as tok:
                found.append(tok.info())
        except Exception:
            continue
    return found


def wait_for_card(config: Config, timeout: float) -> None:
    """Return once a smartcard is in a reader, waiting up to `timeout` seconds (slot
    events polled without blocking). TokenNotFound says "no reader" or "no card"."""
    from tokenkeys.drivers.p11.discovery import wait_for_card as wait

    wait(config, timeout)


def list_modules(config: Config) -> list[str]:
    """Every PKCS#11 module worth trying: configuration, TOKENKEYS_MODULE, p11-kit."""
    from tokenkeys.drivers.modules import all_modules

    return all_modules(config)


def _soft_stores(config: Config) -> list[str]:
    candidates = [config.default_token or "", os.environ.get("TOKENKEYS_TOKEN", "")]
    out: list[str] = []
    for text in candidates:
        if text.startswith("soft:") and text not in out:
            out.append(text)
    return out


def init_token(uri: str, label: str, so_pin: Secret, user_pin: Secret,
               config: Config) -> TokenInfo:
    """Initialise a token: C_InitToken + C_InitPIN on PKCS#11 (through PyKCS11),
    or create a software keystore. Refuses one already initialised."""
    parsed = parse(uri)
    if isinstance(parsed, SoftUri):
        from tokenkeys.drivers.software import SoftwareToken

        return SoftwareToken.init(Path(parsed.directory), label, user_pin)
    from tokenkeys.drivers.modules import resolve_module
    from tokenkeys.drivers.p11.admin import init_token as p11_init

    module = resolve_module(parsed, config)
    return p11_init(module, label, so_pin, user_pin, slot=parsed.slot_id)
