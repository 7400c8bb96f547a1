"""The passphrase prompt on a real terminal (a pty): no echo, asked twice for a new
file, a mismatch writes nothing, and the typed passphrase protects the file."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.serialization import pkcs12

from tests.cli.share_support import PIN, soft_store

TYPED = "typed at the prompt, twice"


def _on_terminal(env: dict[str, str], args: list[str], answers: list[str]) -> tuple[int, str]:
    """Run the CLI with a pty as its controlling terminal; answer each prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its terminal is the pty
        os.execve(sys.executable, [sys.executable, "-m", "tokenkeys", *args], env)
    seen = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if pending and seen.rstrip().endswith(b":"):
                os.write(fd, pending.pop(0).encode() + b"\n")
                seen += b"<answered>\n"
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen.decode("utf-8", "replace")


def test_prompt_twice_without_echo(cli_env: dict[str, str], tmp_path: Path) -> None:
    src = soft_store(tmp_path / "src", ("SHARED", "ec-p256", True))
    env = {**{k: v for k, v in cli_env.items() if k != "TOKENKEYS_PASSPHRASE"},
           "TOKENKEYS_PIN": PIN}
    out = tmp_path / "typed.p12"
    code, screen = _on_terminal(env, ["share", "export", "SHARED", "--token", src, "-o",
                                      str(out)], [TYPED, TYPED + " but not the same"])
    assert code == 2, screen
    assert "the two passphrases typed differ; nothing was written" in screen
    assert not out.exists()

    code, screen = _on_terminal(env, ["share", "export", "SHARED", "--token", src, "-o",
                                      str(out)], [TYPED, TYPED])
    assert code == 0, screen
    assert "PKCS#12 passphrase (again):" in screen
    assert TYPED not in screen  # not echoed
    assert pkcs12.load_pkcs12(out.read_bytes(), TYPED.encode()).key is not None
