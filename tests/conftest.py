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
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509

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
    if os.environ.get("TOKENKEYS_TEST_SOFTHSM") == "0":  # as if it were not installed
        pytest.skip("SoftHSM2 switched off (TOKENKEYS_TEST_SOFTHSM=0)")
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


# tpm2-pkcs11 registers itself with p11-kit: every module scan loads it. Quiet, and
# with its store out of $HOME, where no TPM is configured (tests/devices/harness.py).
os.environ.setdefault("TSS2_LOG", "all+NONE")
os.environ.setdefault("TPM2_PKCS11_LOG_LEVEL", "0")


@pytest.fixture(scope="session")
def tpm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An emulated TPM 2.0 for this session (this xdist worker): swtpm on free loopback
    ports, tpm2-abrmd, tpm2-pkcs11 with its own store; its environment is set in this
    process before the module is first used, and `.env` is for the CLI's."""
    from tests.devices.harness import TPM2_MODULE, Unavailable, start_tpm
    from tokenkeys.drivers.p11 import discovery

    try:
        tpm = start_tpm(tmp_path_factory.mktemp("tpm2"))
    except Unavailable as exc:
        pytest.skip(f"TPM 2.0 (swtpm + tpm2-pkcs11) cannot run here: {exc}")
    saved = {k: os.environ.get(k) for k in tpm.env}
    os.environ.update(tpm.env)
    for (module, _), port in list(discovery._PORTS.items()):
        if module == os.path.realpath(TPM2_MODULE):
            port.reinitialise()  # loaded by a module scan before: read the TCTI again
    yield tpm
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    tpm.stop()


def new_tpm_token(tpm: Any, prefix: str = "tpm") -> str:
    """A new token on the emulated TPM (C_InitToken on its empty slot): its label."""
    from tokenkeys.drivers.p11.admin import init_token
    from tokenkeys.types import Secret

    label = f"{prefix}-{os.getpid()}-{next(_counter)}"
    init_token(tpm.module, label, Secret(tpm.so_pin), Secret(tpm.pin))
    return label


@pytest.fixture(scope="session")
def opencryptoki() -> Iterator[Any]:
    """pkcsslotd and opencryptoki's software token (one per machine: `serial` tests
    only). Started if it is not running, and then stopped at the end."""
    from tests.devices.harness import Unavailable, start_opencryptoki

    try:
        ock = start_opencryptoki()
    except Unavailable as exc:
        pytest.skip(f"opencryptoki cannot run here: {exc}")
    yield ock
    ock.stop()


def reset_opencryptoki(ock: Any) -> str:
    """The software token, emptied: its URI. An uninitialised slot is initialised
    (C_InitToken, C_InitPIN); the tests' own token has every object destroyed; a
    token the tests did not make is a skip, never wiped."""
    from tests.devices.harness import OCK_SLOT
    from tokenkeys.drivers.p11 import ck, discovery

    port = discovery.port_for(ock.module, "pykcs11")
    st = port.token(OCK_SLOT)
    fresh = not st.flags & ck.CKF_TOKEN_INITIALIZED
    if not fresh and st.label.strip() != ock.label:
        pytest.skip(f"opencryptoki's software token (slot {OCK_SLOT}) is {st.label.strip()!r}, "
                    f"not made by the tests ({ock.label!r}): it is not wiped")
    if fresh:
        port.init_token(OCK_SLOT, ock.so_pin, ock.label)
    session = port.open_session(OCK_SLOT)
    try:
        if fresh:
            session.login(ock.so_pin, True)
            session.init_pin(ock.pin)
            session.logout()
        session.login(ock.pin, False)
        for obj in session.find({}):
            session.destroy(obj)
        session.logout()
    finally:
        session.close()
    return str(ock.uri)


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


@pytest.fixture(autouse=True)
def _registry_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the real user's registry: every test gets its own SQLite file."""
    monkeypatch.setenv("TOKENKEYS_REGISTRY", str(tmp_path / "registry.sqlite"))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    from tests.pgcluster import PgCluster, available

    if not available():
        pytest.skip("PostgreSQL 15 server binaries are not installed")
    cluster = PgCluster()
    try:
        cluster.start()
    except subprocess.CalledProcessError as exc:
        cluster.stop()
        pytest.fail(f"cannot start PostgreSQL: {exc.stderr}")
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty registry on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "reg" / "registry.sqlite")
    cluster = request.getfixturevalue("pg_cluster")
    return str(cluster.url(cluster.new_database()))


RawSql = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def raw_sql(registry_location: str, request: pytest.FixtureRequest) -> RawSql:
    """Run SQL directly in the database, as an administrator would (not through tokenkeys).

    Raises on any database error; returns the rows of the last statement.
    """
    if not registry_location.startswith("postgresql"):
        def run_sqlite(*statements: str) -> list[tuple[Any, ...]]:
            conn = sqlite3.connect(registry_location, isolation_level=None)
            try:
                rows: list[tuple[Any, ...]] = []
                for statement in statements:
                    rows = conn.execute(statement).fetchall()
                return rows
            finally:
                conn.close()
        return run_sqlite
    cluster = request.getfixturevalue("pg_cluster")
    db = urlsplit(registry_location).path.lstrip("/")

    def run_pg(*statements: str) -> list[tuple[Any, ...]]:
        out = cluster.psql(db, *statements)
        return [tuple(line.split("|")) for line in out.splitlines() if line]
    return run_pg



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/smartcard shares the machine's one emulated card and
    # depends on its order: .ci/test runs it in its own, serial pytest run.
    for item in items:
        if "smartcard" in item.path.parts:
            item.add_marker(pytest.mark.smartcard)
        if "opencryptoki" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.serial)  # one software token per machine


def token_with_key(softhsm: SoftHSM, label: str) -> tuple[str, x509.Certificate]:
    """A new SoftHSM2 token holding one RSA-2048 key "K" (self-signed, 30 days): its URI
    and the key's certificate, to seal test envelopes to."""
    from tokenkeys.config import Config
    from tokenkeys.drivers import open_token
    from tokenkeys.services import token_keys
    from tokenkeys.types import Algorithm, PinSource, Secret

    uri = softhsm.uri(softhsm.new_token(label))
    with open_token(uri, Config()) as token:
        token.login(PinSource(value=Secret(softhsm.pin), interactive=False))
        token_keys.generate_key(token, "K", algorithm=Algorithm.RSA2048, days=30)
        cert = token.find_key(label="K").certificate
    assert isinstance(cert, x509.Certificate)
    return uri, cert
