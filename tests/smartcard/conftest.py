"""An emulated OpenPGP card (pcscd + vpcd + smartcard-app-openpgp) for the session.

`card` brings up pcscd and a FRESH card once per session (about 0.5 s; shutdown
about 3.3 s) and tears both down, killing only the PIDs scard.sh started. It
skips, never fails, when pcscd, vpcd, OpenSC or .venv-emu
(`tests/smartcard/scard.sh setup`) is missing, or when a pcscd this harness did
not start holds the machine's only vpcd ports. Every pytest process on the
machine (xdist workers, other checkouts) takes turns through one lock file:
vpcd's fixed ports allow one pcscd per machine.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCARD = HERE / "scard.sh"
VENV = HERE.parent.parent / ".venv-emu"
STATE = HERE / "state"
# Machine-wide, not per checkout: vpcd listens on fixed ports.
MACHINE_LOCK = Path(os.environ.get("TOKENKEYS_SCARD_LOCK", "/tmp/tokenkeys-smartcard.lock"))
MODULE_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib/opensc-pkcs11.so",
    "/usr/lib64/opensc-pkcs11.so",
)
USER_PIN = "123456"
SO_PIN = "12345678"
LABEL = "OpenPGP card (User PIN)"
# OpenPGP application AID prefix, and GET DATA of the PW status bytes (DO C4).
SELECT_OPENPGP = "00A4040006D27600012401"
GET_PW_STATUS = "00CA00C400"


@dataclass
class EmulatedCard:
    module: str
    pin: str = USER_PIN
    so_pin: str = SO_PIN
    label: str = LABEL
    env: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"pkcs11:token={self.label.replace(' ', '%20')}?module-path={self.module}"

    def _scard(self, action: str) -> None:
        done = subprocess.run([str(SCARD), action], env=self.env, capture_output=True,
                              text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"scard.sh {action} failed: {done.stderr.strip()}")

    def insert(self) -> None:
        self._scard("insert")

    def remove(self) -> None:
        self._scard("remove")

    def pw1_tries(self) -> int:
        """The card's user-PIN retry counter, read with GET DATA (uses no try)."""
        done = subprocess.run(["opensc-tool", "-s", SELECT_OPENPGP, "-s", GET_PW_STATUS],
                              capture_output=True, text=True, timeout=30, check=True)
        lines = done.stdout.splitlines()
        data = lines[lines.index(next(x for x in lines if "SW1=0x90" in x and "):" in x)) + 1]
        return int(data.split()[4], 16)

    def tool(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["pkcs11-tool", "--module", self.module, *args],
                              capture_output=True, text=True, timeout=60, check=False)


def card_cli_env(card: EmulatedCard, tmp: Path,
                 extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI run on the card: its PINs, a registry and config in tmp."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TOKENKEYS_")}
    full.update({"TOKENKEYS_PIN": card.pin, "TOKENKEYS_SO_PIN": card.so_pin,
                 "TOKENKEYS_REGISTRY": str(tmp / "registry.sqlite"),
                 "XDG_CONFIG_HOME": str(tmp / "xdg"), **(extra or {})})
    return full


def card_cli(card: EmulatedCard, tmp: Path, *args: str | Path,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m tokenkeys ARGS` in a fresh interpreter (the card tests measure real runs)."""
    return subprocess.run([sys.executable, "-m", "tokenkeys", *map(str, args)],
                          env=card_cli_env(card, tmp, env), capture_output=True, text=True,
                          timeout=120, check=False)


def run_until_card_inserted(card: EmulatedCard, tmp: Path, *args: str | Path,
                            env: dict[str, str] | None = None
                            ) -> subprocess.CompletedProcess[str]:
    """Start the CLI with the card out, check that it is still waiting 1.5 s later,
    insert the card, and return how the run ended."""
    argv = [sys.executable, "-m", "tokenkeys", *map(str, args)]
    proc = subprocess.Popen(argv, env=card_cli_env(card, tmp, env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert proc.poll() is None, proc.communicate()
        card.insert()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _missing() -> str | None:
    for tool in ("pcscd", "opensc-tool", "pkcs11-tool", "ss"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (.ci/install)"
    vpcd = subprocess.run(["dpkg", "-s", "vsmartcard-vpcd"], capture_output=True, check=False)
    if vpcd.returncode != 0:
        return "vsmartcard-vpcd is not installed (.ci/install)"
    if not (VENV / "bin" / "python").exists():
        return "the card emulator is not set up: run tests/smartcard/scard.sh setup"
    if not any(Path(p).exists() for p in MODULE_CANDIDATES):
        return "OpenSC's opensc-pkcs11.so is not installed"
    return None


@pytest.fixture(scope="session")
def card() -> Iterator[EmulatedCard]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    module = next(p for p in MODULE_CANDIDATES if Path(p).exists())
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin"}
    STATE.mkdir(exist_ok=True)
    with open(MACHINE_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers take turns
        up = subprocess.run([str(SCARD), "up"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
        if up.returncode == 3:
            pytest.skip(up.stderr.strip() or "a foreign pcscd is running")
        if up.returncode != 0:
            subprocess.run([str(SCARD), "down"], env=env, capture_output=True, check=False)
            pytest.fail(f"scard.sh up failed: {up.stderr.strip()}")
        try:
            yield EmulatedCard(module=module, env=env)
        finally:
            subprocess.run([str(SCARD), "down"], env=env, capture_output=True, timeout=60,
                           check=False)
