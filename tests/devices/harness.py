"""Start and stop the PKCS#11 devices the tests run on besides SoftHSM2 and the card.

- TPM 2.0: `swtpm` on free loopback ports with its own state directory, behind
  `tpm2-abrmd` (the resource manager, on a private D-Bus bus of its own), and
  tpm2-pkcs11 with its own store. A TPM holds three objects at a time: a real
  machine's kernel resource manager (/dev/tpmrm0) swaps them; straight on swtpm,
  the second key fails with "out of memory for object contexts", so abrmd stands
  in for the kernel's.
- opencryptoki 3.8: `pkcsslotd` and the software token (slot 3). Its paths are
  compiled in (/etc/opencryptoki/opencryptoki.conf, /var/lib/opencryptoki/swtok,
  /var/run/pkcsslotd.socket, /var/lock/opencryptoki) and it has no environment
  variable for them, so there is one per machine: the tests use it only when the
  token is uninitialised or one they made (label TEST_LABEL), and run alone
  (`serial` marker).

Each start is stopped by the session that made it. Nothing here is tokenkeys code.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import grp
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TPM2_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"
OCK_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so"
OCK_SLOT = 3  # the software token in Debian's opencryptoki.conf
OCK_SO_PIN = "87654321"  # opencryptoki's factory SO PIN
OCK_PID = Path("/var/run/pkcsslotd.pid")
TEST_LABEL = "tokenkeys-test"
MAX_CONNECTIONS = 100
PIN = "123456"
SO_PIN = "12345678"
# The environment tpm2-pkcs11 needs, beside the TCTI and store set per TPM.
QUIET_TSS = {"TSS2_LOG": "all+NONE", "TPM2_PKCS11_LOG_LEVEL": "0"}


class Unavailable(Exception):
    """The device cannot run here; the message says exactly why."""


def _free_port_pair() -> int:
    """A port P with P+1 free too, on 127.0.0.1 (swtpm's server and control)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as s2, contextlib.suppress(OSError):
            s2.bind(("127.0.0.1", port + 1))
            return port
    raise Unavailable("no two consecutive free loopback ports for swtpm")


def _wait_for(check: object, what: str, timeout: float = 10.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise Unavailable(f"{what} did not come up within {timeout:.0f} s")


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies
    (prctl PR_SET_PDEATHSIG), even by SIGKILL, when no atexit runs."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _accepts(port: int, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise Unavailable(f"swtpm exited: {log.read_text().strip()}")
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port + 1)) == 0


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie its parent has not reaped yet."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if _gone(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Tpm:
    """One emulated TPM and its tpm2-pkcs11 store; `env` is what a process needs."""

    dir: Path
    port: int
    env: dict[str, str]
    pids: list[int]
    module: str = TPM2_MODULE
    pin: str = PIN
    so_pin: str = SO_PIN

    def uri(self, label: str) -> str:
        return f"pkcs11:token={label}?module-path={self.module}"

    def stop(self) -> None:
        for pid in reversed(self.pids):  # abrmd, then the bus, then swtpm
            _stop(pid)
        self.pids.clear()


def start_tpm(base: Path) -> Tpm:
    """swtpm + a private D-Bus + tpm2-abrmd, all in `base`."""
    for tool in ("swtpm", "tpm2-abrmd", "dbus-daemon", "dbus-send"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise Unavailable(f"{tool} is not installed (.ci/install: swtpm, tpm2-abrmd, dbus)")
    if not Path(TPM2_MODULE).exists():
        raise Unavailable(f"{TPM2_MODULE} is missing (Debian package libtpm2-pkcs11-1)")
    state, store = base / "state", base / "store"
    state.mkdir(parents=True)
    store.mkdir()
    port = _free_port_pair()
    pids: list[int] = []
    tpm = Tpm(base, port, {}, pids)
    atexit.register(tpm.stop)  # also when a worker ends without its session's teardown
    try:
        # Children of this process, not daemons, each told to die with it: a worker
        # killed before its teardown (a timeout, -x under xdist) leaves nothing behind.
        swtpm = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1", "--tpmstate",
             f"dir={state}", "--flags", "not-need-init,startup-clear"],
            stdout=subprocess.DEVNULL, stderr=(base / "swtpm.log").open("w"),
            preexec_fn=_die_with_parent)
        pids.append(swtpm.pid)
        _wait_for(lambda: _accepts(port, swtpm, base / "swtpm.log"), "swtpm")
        bus = base / "bus"
        (base / "dbus.conf").write_text(_DBUS_CONF.format(bus=bus))
        dbus = subprocess.Popen(
            ["dbus-daemon", f"--config-file={base / 'dbus.conf'}", "--nofork", "--print-pid"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            preexec_fn=_die_with_parent)
        pids.append(dbus.pid)
        assert dbus.stdout is not None
        if not dbus.stdout.readline().strip():  # printed once it listens
            raise Unavailable("dbus-daemon exited before listening")
        name = f"com.intel.tss2.Tabrmd.tk{port}"
        env = {"DBUS_SESSION_BUS_ADDRESS": f"unix:path={bus}"}
        abrmd = subprocess.Popen(
            ["tpm2-abrmd", "--session", f"--tcti=swtpm:host=127.0.0.1,port={port}",
             f"--dbus-name={name}", "--allow-root", "--flush-all",
             # tpm2-pkcs11 opens one connection per token on the TPM in every process
             # that loads it: a session's tokens times `open --jobs` processes pass
             # abrmd's default of 27 ("MAX_COMMANDS exceeded"). 100 is its ceiling.
             f"--max-connections={MAX_CONNECTIONS}"],
            env={**os.environ, **env, **QUIET_TSS}, stdout=subprocess.DEVNULL,
            stderr=(base / "abrmd.log").open("w"), preexec_fn=_die_with_parent)
        pids.append(abrmd.pid)
        tpm.env = {**env, **QUIET_TSS,
                   "TPM2_PKCS11_TCTI": f"tabrmd:bus_type=session,bus_name={name}",
                   "TPM2_PKCS11_STORE": str(store)}
        # Ready when it owns its bus name: a client that comes earlier waits for a
        # D-Bus activation that never comes.
        ask = ["dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.DBus",
               "/org/freedesktop/DBus", "org.freedesktop.DBus.NameHasOwner", f"string:{name}"]

        def owned() -> bool:
            if abrmd.poll() is not None:
                raise Unavailable(f"tpm2-abrmd exited: {(base / 'abrmd.log').read_text()}")
            done = subprocess.run(ask, env={**os.environ, **env}, capture_output=True,
                                  text=True, timeout=10)
            return "boolean true" in done.stdout

        _wait_for(owned, "tpm2-abrmd")
    except (subprocess.SubprocessError, OSError, ValueError, Unavailable) as exc:
        tpm.stop()
        detail = getattr(exc, "stderr", "") or ""
        raise Unavailable(f"the emulated TPM did not start: {exc} {detail}".strip()) from None
    return tpm


_DBUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={bus}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/>
  </policy>
</busconfig>
"""


@dataclass
class OpenCryptoki:
    """pkcsslotd and the software token in slot 3, labelled TEST_LABEL."""

    started: int | None  # pkcsslotd's pid when this session started it
    module: str = OCK_MODULE
    label: str = TEST_LABEL
    pin: str = PIN
    so_pin: str = OCK_SO_PIN

    @property
    def uri(self) -> str:
        return f"pkcs11:token={self.label}?module-path={self.module}"

    def stop(self) -> None:
        if self.started is not None:
            _stop(self.started)
            self.started = None


def _running_slotd() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(OCK_PID.read_text().strip())
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"pkcsslotd"):
            return pid
    return None


def start_opencryptoki() -> OpenCryptoki:
    """pkcsslotd (started if it is not running) and the software token, ready."""
    if not Path(OCK_MODULE).exists() or not Path("/usr/sbin/pkcsslotd").exists():
        raise Unavailable("opencryptoki is not installed (.ci/install: opencryptoki)")
    try:
        group = grp.getgrnam("pkcs11")
    except KeyError:
        raise Unavailable("the group pkcs11 does not exist (the opencryptoki package "
                          "creates it)") from None
    if os.geteuid() != 0 and group.gr_gid not in os.getgroups():
        raise Unavailable("pkcsslotd and its token need root or the group pkcs11 "
                          "(/var/lib/opencryptoki is 0770 root:pkcs11)")
    pid = _running_slotd()
    started = None
    if pid is None:
        done = subprocess.run(["/usr/sbin/pkcsslotd"], capture_output=True, text=True,
                              timeout=30, check=False)
        if done.returncode != 0:
            raise Unavailable(f"pkcsslotd did not start (it needs System V shared memory "
                              f"and /var/run): {done.stderr.strip() or done.returncode}")
        _wait_for(lambda: _running_slotd() is not None, "pkcsslotd")
        started = _running_slotd()
    ock = OpenCryptoki(started)
    atexit.register(ock.stop)  # a daemon: it cannot be told to die with this process
    return ock
