"""Atomic file output: a file becomes visible at its name only once it is complete.

On Linux the data goes to an unnamed O_TMPFILE in the target's directory and is
linked into place on commit, so not even a crash or power loss can leave a
partial file behind. Elsewhere (or with overwrite) a 0600 temp file next to the
target is renamed into place. The one writer of every file tokenkeys makes:
opened envelopes and sealed ones stream through AtomicOutput, small files
(certificates, keystore records) go through write_atomic.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from types import TracebackType

from tokenkeys.errors import OutputExists, UsageError


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse an existing file (or a dangling symlink) unless overwrite: `--force`."""
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputExists(f"{path} already exists (use --force to replace it)")


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    """`data` at `path` in one step, with `mode` (see AtomicOutput)."""
    with AtomicOutput(path, overwrite, mode=mode) as out:
        out.write(data)
        out.commit()


# Naming an unnamed file needs /proc (see _link_unnamed).
_O_TMPFILE = getattr(os, "O_TMPFILE", 0) if os.path.isdir("/proc/self/fd") else 0


class AtomicOutput:
    """Context manager: `.file` is a private (0600) file; `commit()` puts it in place
    (with `mode`, when given).

    Anything that leaves the block without commit() - an exception, Ctrl-C -
    discards the data and leaves `dst` untouched.
    """

    def __init__(self, dst: Path, overwrite: bool, *, mode: int | None = None) -> None:
        self.dst = dst
        self.overwrite = overwrite
        self.mode = mode  # the file's mode once in place; None keeps 0600
        self._tmp: str | None = None  # the temp file's name, on the fallback path
        self._open = False
        self.file: io.FileIO

    def __enter__(self) -> AtomicOutput:
        check_target(self.dst, self.overwrite)
        fd = self._unnamed() if _O_TMPFILE and not self.overwrite else None
        try:
            if fd is None:
                # mkstemp creates the file with mode 0600: plaintext is never world-readable.
                fd, self._tmp = tempfile.mkstemp(prefix=f".{self.dst.name}.", suffix=".part",
                                                 dir=self.dst.parent)
        except OSError as exc:
            raise UsageError(f"cannot write next to {self.dst}: {exc.strerror}") from None
        self.file = io.FileIO(fd, "wb", closefd=True)
        self._open = True
        return self

    def _unnamed(self) -> int | None:
        try:
            return os.open(self.dst.parent, _O_TMPFILE | os.O_WRONLY, 0o600)
        except OSError:  # filesystem or kernel without O_TMPFILE
            return None

    def write(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.file.write(view)
            if n is None:  # pragma: no cover - only on non-blocking files
                continue
            view = view[n:]

    def truncate(self) -> None:
        self.file.seek(0)
        self.file.truncate()

    def commit(self) -> None:
        if self.mode is not None:
            os.fchmod(self.file.fileno(), self.mode)
        # Durable before visible: a crash must not leave a named empty file.
        os.fsync(self.file.fileno())
        if self._tmp is None:
            self._link_unnamed()
        else:
            self.file.close()
            self._place_named(self._tmp)
        self._open = False
        self._tmp = None

    def _link_unnamed(self) -> None:
        # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names the unnamed file;
        # os.link passes that flag only when a dir_fd is given.
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.link(str(self.file.fileno()), self.dst, src_dir_fd=proc, follow_symlinks=True)
        except FileExistsError:
            raise OutputExists(f"{self.dst} appeared while writing; left untouched") from None
        finally:
            os.close(proc)
            self.file.close()

    def _place_named(self, tmp: str) -> None:
        if self.overwrite:
            os.replace(tmp, self.dst)
            return
        try:
            os.link(tmp, self.dst)  # no-clobber, unlike rename
        except FileExistsError:
            raise OutputExists(f"{self.dst} appeared while writing; left untouched") from None
        except OSError:  # filesystem without hard links
            check_target(self.dst, False)
            os.replace(tmp, self.dst)
        else:
            os.unlink(tmp)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._open:
            with contextlib.suppress(OSError):
                self.file.close()
            if self._tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._tmp)
            self._open = False
            self._tmp = None


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
