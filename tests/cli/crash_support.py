"""Helpers of the crash tests: what a SoftHSM2 token holds (as pkcs11-tool lists it),
what the registry records, and a CLI process that can be killed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.cli.forkserver import ForkServer
from tokenkeys.drivers.base import PROVISIONAL
from tokenkeys.registry import KeyRow, Registry

KINDS = {"Private Key Object": "private", "Public Key Object": "public",
         "Certificate Object": "certificate"}


@dataclass(frozen=True)
class Obj:
    kind: str  # private | public | certificate | other header
    label: str
    id: str

    @property
    def provisional(self) -> bool:
        return self.label.startswith(PROVISIONAL)

    @property
    def torn(self) -> bool:
        """SoftHSM2's own half-written object file: a kill inside its C_CreateObject
        write leaves one that lists as a data object (class 0) with no label and no id.
        tokenkeys makes no data objects, cannot see this one through PKCS#11 as a key,
        and SoftHSM2 will not delete it (docs/drivers.md)."""
        return self.kind.startswith("Data object") and self.label in ("", "<empty>") \
            and not self.id


def token_objects(module: str, label: str, env: dict[str, str]) -> list[Obj]:
    """Every object of the token after login, read by pkcs11-tool (OpenSC), not tokenkeys."""
    proc = subprocess.run(
        ["pkcs11-tool", "--module", module, "--token-label", label, "--login",
         "--pin", "env:TOKENKEYS_PIN", "--list-objects"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"pkcs11-tool cannot list the token: {proc.stderr}"
    found: list[Obj] = []
    head, attrs = "", {}
    for line in [*proc.stdout.splitlines(), "END"]:
        if line.strip() and not line.startswith(" "):
            if head:
                kind = next((v for k, v in KINDS.items() if head.startswith(k)), head)
                found.append(Obj(kind, attrs.get("label", ""), attrs.get("ID", "")))
            head, attrs = line, {}
        elif ":" in line:
            name, value = line.strip().split(":", 1)
            attrs[name.strip()] = value.strip()
    return found


def complete(objects: list[Obj], name: str) -> str | None:
    """The CKA_ID of a complete key pair named `name` (private and public key and one
    certificate, all with one id, nothing else under that name), else None."""
    mine = [o for o in objects if o.label == name]
    ids = {o.id for o in mine}
    if len(ids) != 1 or Counter(o.kind for o in mine) != Counter(
            {"private": 1, "public": 1, "certificate": 1}):
        return None
    return ids.pop()


def live_rows(registry: str) -> list[KeyRow]:
    with Registry.open(registry) as reg:
        return reg.keys(service=None)


class Proc:
    """A `tokenkeys` process: from the fork server when there is one, else a new
    interpreter. Its pid is the CLI process itself, which a SIGKILL ends."""

    def __init__(self, server: ForkServer | None, args: list[str], env: dict[str, str]) -> None:
        self._popen: subprocess.Popen[bytes] | None = None
        if server is not None and server.can_run(env):
            self._spawned = server.spawn(args, env)
            self.pid = self._spawned.pid
        else:
            self._popen = subprocess.Popen([sys.executable, "-m", "tokenkeys", *args], env=env,
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
            self.pid = self._popen.pid

    def wait(self) -> int:
        return self._popen.wait(timeout=120) if self._popen else self._spawned.wait()

    def alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        try:
            os.kill(self.pid, 0)  # the fork server reaps its children at once
        except ProcessLookupError:
            return False
        return True

    def err(self) -> str:
        return "" if self._popen else Path(self._spawned.err).read_text()


def token_dir(softhsm_dir: Path, label: str) -> Path:
    """The directory where SoftHSM2 keeps the token `label` (its token.object holds the
    label padded to 32 bytes)."""
    padded = label.ljust(32).encode()
    found = [d for d in (softhsm_dir / "tokens").iterdir()
             if (d / "token.object").exists() and padded in (d / "token.object").read_bytes()]
    assert len(found) == 1, (label, found)
    return found[0]


def _stamp(directory: Path) -> int:
    return os.stat(directory).st_mtime_ns


def _first_write(directory: Path, proc: Proc, before: int, deadline: float) -> bool:
    """Wait until an object file is created or removed in `directory` (its mtime moves):
    True; False when the process ended first or the deadline passed."""
    while time.monotonic() < deadline:
        if _stamp(directory) != before:
            return True
        if not proc.alive():
            return False
        time.sleep(0.0005)
    return False


def run_and_kill(server: ForkServer | None, args: list[str], env: dict[str, str],
                 delay: float, watch: Path | None = None) -> tuple[int, str]:
    """Start the CLI, SIGKILL it after `delay` seconds (counted from the first object
    it creates in the token directory `watch`, if given) unless it ended first: its
    exit code (-9 when the kill ended it) and its standard error."""
    began = time.monotonic()
    before = _stamp(watch) if watch is not None else 0
    proc = Proc(server, args, env)
    if watch is not None:
        _first_write(watch, proc, before, began + 60)
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):  # it ended first (and was reaped)
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(), proc.err()


@dataclass(frozen=True)
class Timing:
    whole: float  # start to exit
    writing: float  # first object created in the token directory to exit


def timed(server: ForkServer | None, args: list[str], env: dict[str, str],
          watch: Path) -> Timing:
    """How long one uninterrupted run takes, now (it must succeed), and how long it
    spends from its first object created on the token `watch` to its end."""
    began = time.monotonic()
    before = _stamp(watch)
    proc = Proc(server, args, env)
    assert _first_write(watch, proc, before, began + 60), "the run wrote nothing"
    wrote = time.monotonic()
    code = proc.wait()
    assert code == 0, proc.err()
    end = time.monotonic()
    return Timing(end - began, end - wrote)
