"""`open` with a registry it cannot write: it stops before the PIN is read and before
anything is decrypted (the audit's start row comes first), so no plaintext is written.

Each case runs `open` twice: with the right PIN (nothing may be opened: no output
directory, not even a temp file) and with a wrong one (exit 12, not 4: the PIN was
never tried; SoftHSM2 has no PIN counter to read, so the exit code is the proof).
The tests run as root, which ignores permission bits: read-only is made real by an
immutable file (chattr +i), a read-only bind mount, or dropping CAP_DAC_OVERRIDE.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import TK, Run
from tests.conftest import token_with_key
from tokenkeys.envelope import SealOptions, seal
from tokenkeys.registry import Registry

WRONG_PIN = "654321"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


@pytest.fixture(scope="module")
def sealed(softhsm: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A token with one RSA key, and a directory of three envelopes sealed to it."""
    uri, cert = token_with_key(softhsm, "unwritable")
    bids = tmp_path_factory.mktemp("bids")
    for i in range(3):
        plain = bids.parent / f"plain-{i}"
        plain.write_bytes(b"bid %d\n" % i * 100)
        seal(plain, bids / f"bid-{i}.txt.p7m", [cert], SealOptions())
    return uri, bids


def populated(location: str) -> str:
    with Registry.open(location) as reg:
        reg.create_service("achats")
    return location


def audit_count(path: Path) -> int:
    conn = sqlite3.connect(path)  # read-write: the last one to close removes -wal and -shm
    try:
        return int(conn.execute("SELECT count(*) FROM audit").fetchone()[0])
    finally:
        conn.close()


def check_refused(run: Callable[[str], Run], bids: Path, out: Path, text: str) -> None:
    before = sorted(p.name for p in bids.iterdir())
    for pin in ("123456", WRONG_PIN):
        done = run(pin)
        assert done.code == 12, (pin == WRONG_PIN, done.code, done.err)
        assert text in done.err and done.err.count("\n") == 1, done.err
        assert not out.exists(), sorted(out.rglob("*"))  # no output, no temp file
    assert sorted(p.name for p in bids.iterdir()) == before


def open_run(tk: TK, sealed: tuple[str, Path], out: Path, location: str
             ) -> Callable[[str], Run]:
    uri, bids = sealed
    return lambda pin: tk("open", bids, "-o", out, "--token", uri,
                          env={"TOKENKEYS_REGISTRY": location, "TOKENKEYS_PIN": pin})


def test_registry_is_a_directory(tk: TK, sealed: tuple[str, Path], tmp_path: Path) -> None:
    where = tmp_path / "registry.sqlite"
    where.mkdir()
    check_refused(open_run(tk, sealed, tmp_path / "out", str(where)), sealed[1],
                  tmp_path / "out", "cannot use the registry")
    assert list(where.iterdir()) == []


@pytest.mark.parametrize("content", [PNG, os.urandom(5000)], ids=["png", "random"])
def test_registry_is_a_foreign_file(tk: TK, sealed: tuple[str, Path], tmp_path: Path,
                                    content: bytes) -> None:
    where = tmp_path / "photo.png"
    where.write_bytes(content)
    check_refused(open_run(tk, sealed, tmp_path / "out", str(where)), sealed[1],
                  tmp_path / "out", "is not a SQLite database")
    assert where.read_bytes() == content


def test_registry_schema_is_newer(tk: TK, sealed: tuple[str, Path], tmp_path: Path) -> None:
    where = tmp_path / "registry.sqlite"
    populated(str(where))
    conn = sqlite3.connect(where)
    conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.commit()
    conn.close()
    rows = audit_count(where)
    check_refused(open_run(tk, sealed, tmp_path / "out", str(where)), sealed[1],
                  tmp_path / "out", "newer than this tokenkeys knows")
    assert audit_count(where) == rows


@contextlib.contextmanager
def immutable(directory: Path) -> Iterator[None]:
    paths = [*directory.iterdir(), directory]
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", *map(str, paths)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here (tool, filesystem or CAP_LINUX_IMMUTABLE)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


@contextlib.contextmanager
def read_only_mount(directory: Path) -> Iterator[None]:
    if subprocess.run(["mount", "--bind", str(directory), str(directory)],
                      capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (needs CAP_SYS_ADMIN)")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], check=True,
                       capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


@pytest.mark.parametrize("how", [immutable, read_only_mount], ids=["chattr+i", "ro-mount"])
def test_registry_is_read_only(tk: TK, sealed: tuple[str, Path], tmp_path: Path,
                               how: Callable[[Path], contextlib.AbstractContextManager[None]]
                               ) -> None:
    base = tmp_path / "ro"
    base.mkdir()
    where = base / "registry.sqlite"
    populated(str(where))
    rows = audit_count(where)
    with how(base):
        check_refused(open_run(tk, sealed, tmp_path / "out", str(where)), sealed[1],
                      tmp_path / "out", "is read-only")
    assert audit_count(where) == rows


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to drop CAP_DAC_OVERRIDE")
def test_registry_file_and_directory_mode_read_only(sealed: tuple[str, Path], tmp_path: Path,
                                                    cli_env: dict[str, str]) -> None:
    # Root without CAP_DAC_OVERRIDE obeys permission bits (a real interpreter: setpriv).
    uri, bids = sealed
    base = tmp_path / "ro"
    base.mkdir()
    where = base / "registry.sqlite"
    populated(str(where))
    rows = audit_count(where)
    out = tmp_path / "out"

    def run(pin: str) -> Run:
        done = subprocess.run(
            ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner",
             sys.executable, "-m", "tokenkeys", "open", str(bids), "-o", str(out),
             "--token", uri],
            env={**cli_env, "TOKENKEYS_REGISTRY": str(where), "TOKENKEYS_PIN": pin},
            capture_output=True, text=True, timeout=60)
        return Run(done.returncode, done.stdout, done.stderr)

    os.chmod(where, 0o444)
    os.chmod(base, 0o555)
    try:
        check_refused(run, bids, out, "is read-only")
    finally:
        os.chmod(base, 0o755)
        os.chmod(where, 0o644)
    assert audit_count(where) == rows


@pytest.mark.parametrize("in_use", [False, True], ids=["idle", "in-use"])
def test_registry_disk_is_full(tk: TK, sealed: tuple[str, Path], tmp_path: Path,
                               in_use: bool) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    other = None
    try:
        where = disk / "registry.sqlite"
        rows = audit_count(Path(populated(str(where))))
        if in_use:  # another process has it open: its WAL and shared memory files exist
            other = sqlite3.connect(where)
            other.execute("SELECT count(*) FROM audit").fetchall()
        with (disk / "filler").open("wb", buffering=0) as filler, \
                contextlib.suppress(OSError):
            while shutil.disk_usage(disk).free:
                filler.write(b"\0" * 4096)
        # Idle, SQLite cannot even size its shared memory file: "disk I/O error".
        text = "database or disk is full" if in_use else "disk I/O error"
        check_refused(open_run(tk, sealed, tmp_path / "out", str(where)), sealed[1],
                      tmp_path / "out", text)
        (disk / "filler").unlink()
        assert audit_count(where) == rows
    finally:
        if other is not None:
            other.close()
        subprocess.run(["umount", str(disk)], check=True)


def test_postgresql_role_without_write_rights(tk: TK, sealed: tuple[str, Path],
                                              tmp_path: Path, pg_cluster: Any) -> None:
    db = pg_cluster.new_database()
    populated(pg_cluster.url(db))
    # Roles belong to the cluster, which other tests share: create it once.
    pg_cluster.psql(db, "DO $$ BEGIN CREATE ROLE open_reader LOGIN; EXCEPTION WHEN "
                    "duplicate_object THEN NULL; END $$",
                    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO open_reader")
    before = pg_cluster.psql(db, "SELECT count(*) FROM audit")
    check_refused(open_run(tk, sealed, tmp_path / "out", pg_cluster.url(db, "open_reader")),
                  sealed[1], tmp_path / "out", "refuses writes")
    assert pg_cluster.psql(db, "SELECT count(*) FROM audit") == before
