"""Driver selection: the URI scheme picks the backend, once, at the edge."""

from __future__ import annotations

from tokenkeys.config import Config
from tokenkeys.drivers.base import KeyHandle, Token
from tokenkeys.errors import UsageError
from tokenkeys.uri import Pkcs11Uri, SoftUri, parse

__all__ = ["KeyHandle", "Token", "open_token", "token_uri"]


def token_uri(text: str | None, config: Config) -> str:
    """The token URI to use: the one given, else the configured default."""
    uri = text or config.default_token
    if not uri:
        raise UsageError("no token given: use --token URI, TOKENKEYS_TOKEN, or `token` in config")
    return uri


def open_token(uri: str | Pkcs11Uri | SoftUri, config: Config) -> Token:
    """Open the token a URI names. Nothing is logged in yet."""
    parsed = parse(uri) if isinstance(uri, str) else uri
    if isinstance(parsed, SoftUri):
        from tokenkeys.drivers.software import SoftwareToken

        return SoftwareToken.open(parsed)
    from tokenkeys.drivers.modules import explicit_module, is_card_module

    module = explicit_module(parsed, config)
    if module is not None and is_card_module(module, config):
        # OpenSC and configured card modules: slot events, PIN pad, SO-PIN keygen.
        from tokenkeys.drivers.smartcard import SmartcardToken

        return SmartcardToken.open(parsed, config)
    from tokenkeys.drivers.pkcs11 import Pkcs11Token

    return Pkcs11Token.open(parsed, config)
