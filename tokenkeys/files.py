"""Atomic file output: write beside the target, rename into place, never leave a half file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tokenkeys.errors import OutputExists, UsageError


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse an existing file (or a dangling symlink) unless overwrite: `--force`."""
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputExists(f"{path} already exists (use --force to replace it)")


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    check_target(path, overwrite)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_output(path: Path, force: bool) -> None:
    """The one overwrite policy of every command that writes a file: an existing file
    is refused unless `force`; never a directory or special file. The parent directory
    is created if needed."""
    if path.is_symlink() or path.exists():
        if not force:
            raise OutputExists(f"{path} already exists (use --force to replace it)")
        if not path.is_file() or path.is_symlink():
            raise UsageError(f"{path} is not a regular file: --force replaces only files")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create directory {path.parent}: {exc.strerror}") from None
