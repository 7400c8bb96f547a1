"""The PKCS#12 passphrase never appears in argv, logs, errors or JSON output.

The CLI runs in a subprocess (with --debug, so every log line is shown); while it
runs, every process's /proc/PID/cmdline is read. Its stdout and stderr, and the
files it writes, are searched for the passphrase.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.cli.share_support import PASSPHRASE, PIN, soft_store


def _cmdlines() -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes())
            except OSError:  # the process ended meanwhile
                continue
    return found


def _run(env: dict[str, str], *args: str | Path) -> tuple[int, str, list[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "tokenkeys", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[bytes] = []
    while proc.poll() is None:
        seen.extend(_cmdlines())
        time.sleep(0.005)  # leave the CPU to the command under watch
    out, err = proc.communicate(timeout=120)
    assert seen, "no process was seen while the command ran"
    return proc.returncode, (out + err).decode("utf-8", "replace"), seen


def test_passphrase_never_visible(cli_env: dict[str, str], tmp_path: Path) -> None:
    src = soft_store(tmp_path / "src", ("SHARED", "ec-p256", True))
    dst = soft_store(tmp_path / "dst")
    env = {**cli_env, "TOKENKEYS_PASSPHRASE": PASSPHRASE, "TOKENKEYS_PIN": PIN}
    p12 = tmp_path / "shared.p12"
    runs = [
        (0, env, ("--debug", "share", "export", "SHARED", "--token", src, "-o", p12)),
        (10, env, ("--json", "share", "export", "SHARED", "--token", src, "-o", p12)),
        (0, env, ("--debug", "--json", "share", "import", p12, "--token", dst,
                  "--name", "S")),
        (4, {**env, "TOKENKEYS_PASSPHRASE": PASSPHRASE + "x"},
         ("--debug", "share", "import", p12, "--token", dst, "--name", "T")),
        (4, {**env, "TOKENKEYS_PASSPHRASE": PASSPHRASE + "x"},
         ("--json", "share", "import", p12, "--token", dst, "--name", "T")),
        (2, {**env, "TOKENKEYS_PASSPHRASE": "SHARED 123"},
         ("--debug", "share", "export", "SHARED", "--token", src, "-o", tmp_path / "w.p12")),
    ]
    for code, run_env, args in runs:
        rc, output, cmdlines = _run(run_env, *args)
        assert rc == code, output
        secret = run_env["TOKENKEYS_PASSPHRASE"]
        assert secret not in output, args
        assert not [c for c in cmdlines if secret.encode() in c], args
    assert "share-export" in _run(env, "--debug", "share", "export", "SHARED", "--token", src,
                                  "-o", tmp_path / "again.p12")[1]  # the debug log is shown
    for path in [*tmp_path.rglob("*.json"), *tmp_path.rglob("*.p12"), *tmp_path.rglob("*.pem")]:
        assert PASSPHRASE.encode() not in path.read_bytes()
        assert PASSPHRASE.encode("utf-16-be") not in path.read_bytes()
