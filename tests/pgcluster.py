"""A throwaway PostgreSQL 15 cluster (Debian's binaries) in a temporary directory.

Own port and socket directory, so clusters of other test runs on the machine do not
collide. As root, initdb/pg_ctl run as the `postgres` user (they refuse root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path(os.environ.get("TOKENKEYS_PG_BIN", "/usr/lib/postgresql/15/bin"))
OFFICER_PASSWORD = "S3cret-Officer-Pw!"  # the password-authenticated role of the tests


def available() -> bool:
    return (PG_BIN / "initdb").exists() and (os.geteuid() != 0 or _pg_user() is not None)


def _pg_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tk-pg-")))
    port: int = field(default_factory=_free_port)
    _counter: int = 0

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def sockets(self) -> Path:
        return self.base / "run"

    def _as_pg(self, args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        user = _pg_user() if os.geteuid() == 0 else None
        preexec = None
        if user is not None:
            uid, gid = user.pw_uid, user.pw_gid

            def preexec() -> None:
                os.setgid(gid)
                os.setuid(uid)
        return subprocess.run(args, preexec_fn=preexec, capture_output=True, text=True,
                              check=True, timeout=120, **kw)  # type: ignore[call-overload]

    def start(self) -> None:
        os.chmod(self.base, 0o755)
        self.sockets.mkdir()
        self.data.mkdir()
        user = _pg_user() if os.geteuid() == 0 else None
        if user is not None:
            for p in (self.data, self.sockets):
                os.chown(p, user.pw_uid, user.pw_gid)
        self._as_pg([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                     "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8"])
        self._as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l",
                     str(self.data / "log"), "-w", "-o",
                     f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                     "-c fsync=off -c max_connections=60", "start"])
        self.psql("postgres", f"CREATE ROLE officer LOGIN PASSWORD '{OFFICER_PASSWORD}'")

    def stop(self) -> None:
        try:
            self._as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                         "-w", "stop"])
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def psql(self, db: str, *commands: str) -> str:
        args = [str(PG_BIN / "psql"), "-h", str(self.sockets), "-p", str(self.port),
                "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-At"]
        for c in commands:
            args += ["-c", c]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        done = subprocess.run(args, capture_output=True, text=True, check=False,
                              timeout=60, env=env)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip())
        return done.stdout

    def new_database(self, prefix: str = "tk") -> str:
        """A fresh database; the officer role owns it. Returns its name."""
        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}"
        self.psql("postgres", f"CREATE DATABASE {name} OWNER officer")
        return name

    def url(self, db: str, user: str = "officer") -> str:
        """A socket URL with trust authentication (no password anywhere)."""
        return f"postgresql://{user}@/{db}?host={self.sockets}&port={self.port}"

    def tcp_url(self, db: str, user: str = "officer") -> str:
        """A TCP URL that needs a password (scram): give it with PGPASSWORD."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{db}"
