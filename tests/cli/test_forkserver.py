"""The CLI tests' fork server behaves as a fresh `python -m tokenkeys` does.

Same exit code, same stdout, same stderr, byte for byte, for a success, a usage
error, a device error in JSON, a missing PIN, relative paths and standard input.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.forkserver import ForkServer
from tests.conftest import SoftHSM

CASES: list[tuple[list[str], dict[str, str | None], str | None]] = [
    (["--version"], {}, None),
    (["no-such-command"], {}, None),
    (["--json", "key", "list", "--token", "{uri}"], {"TOKENKEYS_PIN": "999999"}, None),
    (["key", "list", "--token", "{uri}"], {"TOKENKEYS_PIN": None}, None),
    (["--config", "missing.toml", "token", "list"], {}, None),
    (["key", "delete", "nothing", "--token", "{uri}"], {}, "y\n"),
]


@pytest.mark.parametrize(("args", "env", "stdin"), CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_same_as_a_fresh_interpreter(args: list[str], env: dict[str, str | None],
                                     stdin: str | None, forkserver: ForkServer | None,
                                     cli_env: dict[str, str], softhsm: SoftHSM,
                                     token_label: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if forkserver is None:
        pytest.skip("TOKENKEYS_TEST_FORKSERVER=0: every call starts a fresh interpreter")
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{uri}", softhsm.uri(token_label)) for a in args]
    full = {**cli_env, **{k: v for k, v in env.items() if v is not None}}
    for key in [k for k, v in env.items() if v is None]:
        full.pop(key)
    fresh = subprocess.run([sys.executable, "-m", "tokenkeys", *argv], env=full, input=stdin,
                           stdin=None if stdin is not None else subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60, check=False)
    forked = forkserver.run(argv, full, stdin, timeout=60)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        fresh.returncode, fresh.stdout, fresh.stderr)
    assert fresh.stdout or fresh.stderr


def test_a_hung_command_is_killed_at_the_timeout(forkserver: ForkServer | None,
                                                 cli_env: dict[str, str]) -> None:
    if forkserver is None:
        pytest.skip("TOKENKEYS_TEST_FORKSERVER=0")
    # --wait-card polls for a card that never comes (no card module is configured).
    with pytest.raises(subprocess.TimeoutExpired):
        forkserver.run(["token", "list", "--wait-card", "30"], cli_env, None, timeout=1)


def test_interpreter_settings_need_a_fresh_interpreter(forkserver: ForkServer | None,
                                                      cli_env: dict[str, str]) -> None:
    if forkserver is None:
        pytest.skip("TOKENKEYS_TEST_FORKSERVER=0")
    assert forkserver.can_run(cli_env)
    assert not forkserver.can_run({**cli_env, "PYTHONIOENCODING": "latin-1"})
    assert not forkserver.can_run({**cli_env, "LC_ALL": "C"})
    assert not forkserver.can_run({**cli_env, "PYTHONPATH": "/elsewhere"})
