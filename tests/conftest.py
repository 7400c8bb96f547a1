"""Shared fixtures: a SoftHSM2 set up by softhsm-config/setup-tokens.sh for the session.

SOFTHSM2_CONF is set in os.environ before any PKCS#11 module is loaded in this
process (SoftHSM reads it once, at C_Initialize). Fresh tokens are initialised
in-process (tokenkeys.drivers.p11.admin), because a module already loaded
does not see tokens another process creates.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "123456"
SO_PIN = "12345678"
_counter = itertools.count()


@dataclass(frozen=True)
class SoftHSM:
    module: str
    conf: Path
    dir: Path
    pin: str = PIN
    so_pin: str = SO_PIN

    def uri(self, label: str) -> str:
        return f"pkcs11:token={label}?module-path={self.module}"

    def new_token(self, prefix: str = "t") -> str:
        """Initialise a brand-new token (C_InitToken is cheap); return its label."""
        from tokenkeys.drivers.p11.admin import init_token
        from tokenkeys.types import Secret

        label = f"{prefix}-{os.getpid()}-{next(_counter)}"
        init_token(self.module, label, Secret(self.so_pin), Secret(self.pin))
        return label


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSM]:
    if not os.path.exists(SOFTHSM_MODULE) or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 is not installed")
    base = tmp_path_factory.mktemp("softhsm")
    env = {**os.environ, "PYTHON": sys.executable, "TOKENKEYS_PIN": PIN, "TOKENKEYS_SO_PIN": SO_PIN}
    done = subprocess.run(
        [str(ROOT / "softhsm-config" / "setup-tokens.sh"), str(base), "main"],
        env=env, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"setup-tokens.sh failed: {done.stderr.strip()}")
    conf = base / "softhsm2.conf"
    assert f"export SOFTHSM2_CONF={conf}" in done.stdout
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    yield SoftHSM(module=SOFTHSM_MODULE, conf=conf, dir=base)
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old


@pytest.fixture
def token_label(softhsm: SoftHSM) -> str:
    """A brand-new, uniquely labelled, empty token for one test."""
    return softhsm.new_token()


@pytest.fixture
def pin_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TOKENKEYS_PIN", PIN)
    return PIN


@dataclass
class SharedKeys:
    """One token with keys generated once per session (RSA-3072 keygen is slow)."""

    label: str
    token: Any  # P11Token (python-pkcs11), logged in
    keys: dict[str, Any]


@pytest.fixture(scope="session")
def shared_keys(softhsm: SoftHSM) -> Iterator[SharedKeys]:
    from tokenkeys.config import Config
    from tokenkeys.drivers.p11.token import P11Token
    from tokenkeys.types import Algorithm, KeySpec, PinSource
    from tokenkeys.uri import parse_pkcs11

    label = softhsm.new_token("shared")
    pin_file = softhsm.dir / "user-pin"
    pin_file.write_text(softhsm.pin, encoding="utf-8")
    token = P11Token.open(parse_pkcs11(softhsm.uri(label)), Config())
    token.login(PinSource(file=pin_file, interactive=False))
    keys = {
        alg.value: token.generate_keypair(KeySpec(f"key-{alg.value}", alg))
        for alg in (Algorithm.RSA2048, Algorithm.RSA3072, Algorithm.EC_P256, Algorithm.EC_P384)
    }
    yield SharedKeys(label, token, keys)
    token.close()


@pytest.fixture
def rsa_key_on_token(shared_keys: SharedKeys) -> Any:
    """A session-wide RSA-3072 key (logged-in token), generated once."""
    return shared_keys.keys["rsa3072"]
