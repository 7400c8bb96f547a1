"""A fork server for the CLI tests: `python -m tokenkeys`, without paying its imports each time.

Started once per pytest worker, the server imports tokenkeys and its libraries
(SQLAlchemy, Alembic, both PKCS#11 bindings) but loads no PKCS#11 module and
opens nothing. For each request it forks a process that takes the caller's
environment, directory and standard streams, then runs `tokenkeys` the way
`python -m tokenkeys` does (runpy, sys.argv, normal interpreter exit). The
PKCS#11 module is loaded and initialised in that process, as in a real run. A
middle process waits for it and reports its exit status, so the server stays
single-threaded and never blocks on a command.

Why: a CLI test calls the CLI some 500 times, and each `python -m tokenkeys`
spends 0.25-0.5 s importing before it does anything. Tests about start-up
itself, signals or terminals still start a real interpreter.
"""

from __future__ import annotations

import gc
import importlib
import json
import locale
import os
import pkgutil
import select
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PRELOAD = ("sqlalchemy", "sqlalchemy.dialects.sqlite", "sqlalchemy.dialects.postgresql",
            "alembic.command", "alembic.config", "psycopg", "pkcs11", "PyKCS11", "asn1crypto.cms")

_STARTUP_VARS = ("PYTHON", "LANG", "LC_")


def _preload() -> None:
    import tokenkeys

    for name in _PRELOAD:
        importlib.import_module(name)
    for info in pkgutil.walk_packages(tokenkeys.__path__, "tokenkeys."):
        # __main__ would run the CLI; migration scripts run only inside Alembic.
        if info.name != "tokenkeys.__main__" and ".migrations" not in info.name:
            importlib.import_module(info.name)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _serve(path: str) -> dict[str, Any]:
    """Accept requests until stdin closes; returns only in a forked CLI process."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        readable, _, _ = select.select([server, sys.stdin], [], [], 5.0)
        _reap()
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            raise SystemExit(0)  # the pytest worker is gone
        if server not in readable:
            continue
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            return _middle(conn)
        conn.close()


def _middle(conn: socket.socket) -> dict[str, Any]:
    request: dict[str, Any] = json.loads(conn.makefile("r", encoding="utf-8").readline())
    pid = os.fork()
    if pid == 0:
        conn.close()
        return request
    try:
        conn.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    finally:
        os._exit(0)  # also when the caller gave up (timeout) and closed its end


def _become(request: dict[str, Any]) -> None:
    """Turn this forked process into `python -m tokenkeys ARGS` run by the caller."""
    import runpy

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    streams = ((0, request["stdin"] or os.devnull, os.O_RDONLY),
               (1, request["stdout"], os.O_WRONLY), (2, request["stderr"], os.O_WRONLY))
    for fd, name, flags in streams:
        opened = os.open(name, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.path[0] = os.getcwd()
    sys.argv = ["-m", *request["args"]]
    runpy.run_module("tokenkeys", run_name="__main__", alter_sys=True)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Spawned:
    """A CLI process started by spawn(): its pid (to signal it) and its exit status."""

    def __init__(self, pid: int, conn: socket.socket, reply: Any, out: Path, err: Path) -> None:
        self.pid = pid
        self._conn, self._reply, self.out, self.err = conn, reply, out, err
        self.returncode: int | None = None

    def wait(self) -> int:
        """The exit code (-9 after a SIGKILL), as subprocess reports it."""
        if self.returncode is None:
            self.returncode = int(self._reply.readline())
            self._conn.close()
        return self.returncode


class ForkServer:
    """The client side: start() once, run() per command, stop() at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket_path = str(workdir / "fork.sock")
        self._count = 0
        self._proc: subprocess.Popen[str] | None = None
        self._start_env: dict[str, str] = {}

    def start(self) -> None:
        self._start_env = dict(os.environ)
        with open(self.workdir / "server.err", "w") as log:
            self._proc = subprocess.Popen(
                [sys.executable, __file__, self.socket_path], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, text=True,
            )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline() != "ready\n":
            raise RuntimeError((self.workdir / "server.err").read_text())

    def stop(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=30)

    def can_run(self, env: dict[str, str]) -> bool:
        """False when env changes what a fork cannot: the interpreter's own start-up
        settings (PYTHON*, locale), fixed in the server when it started."""
        names = {k for k in {*env, *self._start_env} if k.startswith(_STARTUP_VARS)}
        return all(env.get(k) == self._start_env.get(k) for k in names)

    def spawn(self, args: list[str], env: dict[str, str], timeout: float = 120) -> Spawned:
        """Start `tokenkeys ARGS` and return at once, with its pid (kill tests)."""
        self._count += 1
        base = self.workdir / f"call{self._count}"
        out, err = Path(f"{base}.out"), Path(f"{base}.err")
        out.touch()
        err.touch()
        request = {"args": args, "env": env, "cwd": os.getcwd(), "stdin": None,
                   "stdout": str(out), "stderr": str(err)}
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(timeout)
        conn.connect(self.socket_path)
        conn.sendall(json.dumps(request).encode() + b"\n")
        reply = conn.makefile("r", encoding="utf-8")
        return Spawned(int(reply.readline()), conn, reply, out, err)

    def run(self, args: list[str], env: dict[str, str], input: str | None,
            timeout: float) -> Result:
        self._count += 1
        base = self.workdir / f"call{self._count}"
        encoding = locale.getpreferredencoding(False)
        stdin = None
        if input is not None:
            stdin = f"{base}.in"
            Path(stdin).write_text(input, encoding=encoding)
        out, err = Path(f"{base}.out"), Path(f"{base}.err")
        out.touch()
        err.touch()
        request = {"args": args, "env": env, "cwd": os.getcwd(), "stdin": stdin,
                   "stdout": str(out), "stderr": str(err)}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(self.socket_path)
            conn.sendall(json.dumps(request).encode() + b"\n")
            reply = conn.makefile("r", encoding="utf-8")
            pid = int(reply.readline())
            try:
                code = int(reply.readline())
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(args, timeout) from None
        # As subprocess.run(text=True) reads them: locale encoding, universal newlines.
        result = Result(code, out.read_text(encoding=encoding), err.read_text(encoding=encoding))
        for path in (out, err, Path(stdin) if stdin else None):
            if path is not None:
                path.unlink()
        return result


if __name__ == "__main__":
    _preload()
    # Preloaded objects move to a generation the collector never scans: without
    # this, each forked process spends 0.2 s at exit touching (copying) them all.
    gc.freeze()
    _become(_serve(sys.argv[1]))
