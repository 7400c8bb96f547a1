"""Run the real `tokenkeys` CLI in a subprocess against real tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cli.forkserver import ForkServer

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


TK = Callable[..., Run]


@pytest.fixture
def cli_env(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """The CLI's environment: a registry of its own, the test PINs, and SoftHSM2's
    configuration only for a test that uses SoftHSM2 (a test on `soft:` keystores runs
    where SoftHSM2 is not installed)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TOKENKEYS_") and k != "SOFTHSM2_CONF"}
    if "softhsm" in request.fixturenames:
        env["SOFTHSM2_CONF"] = str(request.getfixturevalue("softhsm").conf)
    env.update({
        "TOKENKEYS_PIN": "123456",
        "TOKENKEYS_SO_PIN": "12345678",
        "TOKENKEYS_REGISTRY": str(tmp_path / "registry.sqlite"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
    })
    return env


@pytest.fixture(scope="session")
def forkserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer | None]:
    """One fork server per pytest worker (see forkserver.py); TOKENKEYS_TEST_FORKSERVER=0
    makes every tk() call start a fresh interpreter instead."""
    if os.environ.get("TOKENKEYS_TEST_FORKSERVER") == "0":
        yield None
        return
    server = ForkServer(tmp_path_factory.mktemp("fork"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tk(cli_env: dict[str, str], forkserver: ForkServer | None) -> TK:
    """tk(*args, env={...}, input=None) runs `python -m tokenkeys ARGS`, in a process
    forked from the fork server unless env changes the interpreter's own settings
    (stdin is /dev/null unless input is given)."""

    def run(*args: str | Path, env: dict[str, str | None] | None = None,
            input: str | None = None) -> Run:
        full = dict(cli_env)
        for key, value in (env or {}).items():
            if value is None:
                full.pop(key, None)
            else:
                full[key] = value
        if forkserver is not None and forkserver.can_run(full):
            done = forkserver.run([*map(str, args)], full, input, timeout=120)
            return Run(done.returncode, done.stdout, done.stderr)
        proc = subprocess.run(
            [sys.executable, "-m", "tokenkeys", *map(str, args)],
            env=full, input=input, stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True, text=True, timeout=120,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def rtk(tk: TK, registry_location: str) -> TK:
    """tk on the parametrised registry (a SQLite file, or a PostgreSQL database)."""

    def run(*args: str | Path, env: dict[str, str | None] | None = None,
            input: str | None = None) -> Run:
        return tk(*args, env={"TOKENKEYS_REGISTRY": registry_location, **(env or {})},
                  input=input)

    return run


def p11_objects(module: str, label: str, env: dict[str, str]) -> list[str]:
    """The token's objects as pkcs11-tool (OpenSC) lists them after login."""
    proc = subprocess.run(
        ["pkcs11-tool", "--module", module, "--token-label", label, "--login",
         "--pin", "env:TOKENKEYS_PIN", "--list-objects"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    return [line for line in proc.stdout.splitlines() if line.strip()]


def p11_block(objects: list[str], kind: str) -> str:
    """The text of the first object whose header starts with `kind` ("Private Key Object")."""
    blocks: list[list[str]] = []
    for line in objects:
        if not line.startswith(" "):
            blocks.append([])
        if blocks:
            blocks[-1].append(line)
    found = [b for b in blocks if b[0].startswith(kind)]
    assert found, f"no {kind} in {objects}"
    return "\n".join(found[0])
