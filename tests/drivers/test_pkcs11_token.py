"""P11Token against a real SoftHSM2: finding tokens and modules, login, info."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tokenkeys.config import Config
from tokenkeys.drivers import list_tokens, modules
from tokenkeys.drivers.p11.token import P11Token
from tokenkeys.errors import (
    ModuleNotFound,
    PinIncorrect,
    PinMissing,
    TokenNotFound,
    UsageError,
)
from tokenkeys.types import PinSource
from tokenkeys.uri import parse_pkcs11

pytestmark = pytest.mark.softhsm


def pin_file(tmp_path: Path, value: str) -> PinSource:
    path = tmp_path / "pin"
    path.write_text(value, encoding="utf-8")
    return PinSource(file=path, interactive=False)


def open_uri(uri: str) -> P11Token:
    return P11Token.open(parse_pkcs11(uri), Config())


def test_open_by_label_serial_and_slot(softhsm: Any, token_label: str) -> None:
    with open_uri(softhsm.uri(token_label)) as tok:
        info = tok.info()
    assert info.label == token_label
    assert info.manufacturer == "SoftHSM project"
    assert "token-initialized" in info.flags and "login-required" in info.flags
    assert info.uri.startswith(f"pkcs11:token={token_label};serial={info.serial}?module-path=")
    with open_uri(f"pkcs11:serial={info.serial}?module-path={softhsm.module}") as tok:
        assert tok.info().label == token_label
    with open_uri(f"pkcs11:slot-id={info.slot}?module-path={softhsm.module}") as tok:
        assert tok.info().label == token_label
    # The token's own URI opens it again.
    with open_uri(info.uri) as tok:
        assert tok.info().serial == info.serial


def test_unknown_token_names_what_exists(softhsm: Any, token_label: str) -> None:
    with pytest.raises(TokenNotFound) as err:
        open_uri(softhsm.uri("no-such-token"))
    message = str(err.value)
    assert "token=no-such-token" in message and token_label in message
    assert "\n" not in message


def test_ambiguous_uri(softhsm: Any, token_label: str) -> None:
    with pytest.raises(UsageError, match="several tokens match"):
        open_uri(f"pkcs11:model=SoftHSM%20v2?module-path={softhsm.module}")


def test_unknown_module_path(softhsm: Any) -> None:
    with pytest.raises(ModuleNotFound, match=r"/nonexistent/libx\.so"):
        open_uri("pkcs11:token=x?module-path=/nonexistent/libx.so")


def test_module_that_does_not_load(softhsm: Any, tmp_path: Path) -> None:
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"not an ELF")
    with pytest.raises(ModuleNotFound, match="does not load"):
        open_uri(f"pkcs11:token=x?module-path={bogus}")


def test_token_found_through_p11kit(softhsm: Any, token_label: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # No module given: SoftHSM's and OpenSC's p11-kit modules are searched by label.
    monkeypatch.delenv("TOKENKEYS_MODULE", raising=False)
    if not any(m.name == "softhsm2" for m in modules.p11kit_modules()):
        pytest.skip("SoftHSM2 not registered with p11-kit")
    with open_uri(f"pkcs11:token={token_label}") as tok:
        assert tok.info().label == token_label
    with open_uri(f"pkcs11:token={token_label}?module-name=softhsm2") as tok:
        assert tok.info().label == token_label


def test_login_and_wrong_pin(softhsm: Any, token_label: str, tmp_path: Path) -> None:
    with open_uri(softhsm.uri(token_label)) as tok:
        with pytest.raises(PinIncorrect) as err:
            tok.login(pin_file(tmp_path, "000000"))
        assert err.value.tries_left == "count low"
        assert "000000" not in str(err.value)
        assert "user-pin-count-low" in tok.info().flags
        tok.login(pin_file(tmp_path, softhsm.pin))
        tok.login(pin_file(tmp_path, softhsm.pin))  # idempotent, no second C_Login


def test_login_pin_from_env(softhsm: Any, token_label: str, pin_env: str) -> None:
    with open_uri(softhsm.uri(token_label)) as tok:
        tok.login(PinSource(interactive=False))


def test_pinpad_without_protected_path(softhsm: Any, token_label: str) -> None:
    with open_uri(softhsm.uri(token_label)) as tok, pytest.raises(PinMissing):
        tok.login(PinSource(pinpad=True))


def test_mechanisms(softhsm: Any, token_label: str) -> None:
    with open_uri(softhsm.uri(token_label)) as tok:
        mechs = tok.mechanisms()
    assert {"RSA_PKCS_OAEP", "RSA_X_509", "RSA_PKCS", "ECDH1_DERIVE", "ECDSA"} <= mechs
    assert not any(m.startswith("CKM_") for m in mechs)


def test_list_tokens(softhsm: Any, token_label: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENKEYS_MODULE", softhsm.module)
    found = {t.label: t for t in list_tokens(Config())}
    assert token_label in found
    assert found[token_label].uri.startswith(f"pkcs11:token={token_label};serial=")


def test_module_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = tmp_path / "modules"
    reg.mkdir()
    (reg / "softhsm2.module").write_text("module: /usr/lib/softhsm/libsofthsm2.so\n")
    (reg / "opensc-pkcs11.module").write_text("# c\nmodule: opensc-pkcs11.so\n")
    (reg / "p11-kit-trust.module").write_text("module: p11-kit-trust.so\n")
    found = {m.name: m.path for m in modules.p11kit_modules([reg])}
    assert set(found) == {"softhsm2", "opensc-pkcs11"}
    assert os.path.isabs(found["opensc-pkcs11"])
    assert found["opensc-pkcs11"].endswith("/pkcs11/opensc-pkcs11.so")
    config = Config(module="/usr/lib/softhsm/libsofthsm2.so", card_modules=("/opt/card.so",))
    monkeypatch.delenv("TOKENKEYS_MODULE", raising=False)
    uri = parse_pkcs11("pkcs11:token=x")
    assert modules.resolve_module(uri, config) == "/usr/lib/softhsm/libsofthsm2.so"
    explicit = parse_pkcs11("pkcs11:token=x?module-path=/usr/lib/softhsm/libsofthsm2.so")
    assert modules.resolve_module(explicit, Config()) == "/usr/lib/softhsm/libsofthsm2.so"
    monkeypatch.setenv("TOKENKEYS_MODULE", "/nonexistent/env.so")
    with pytest.raises(ModuleNotFound, match=r"/nonexistent/env\.so"):
        modules.resolve_module(uri, config)
    assert modules.is_card_module("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so", Config())
    assert modules.is_card_module("/opt/card.so", config)
    assert not modules.is_card_module("/usr/lib/softhsm/libsofthsm2.so", config)
    assert "/nonexistent/env.so" in modules.all_modules(config)
