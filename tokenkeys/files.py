"""Files in and out. In: read_limited, the one reader of every file a user names
(regular files only, of a documented size per kind). Out: atomic output, a file
becomes visible at its name only once it is complete.

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
import stat
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


# What each kind of input file may weigh: read_limited refuses more before reading.
MAX_PKCS12 = 1 << 20  # a key, its certificate and a chain: a few KiB
MAX_CERTIFICATES = 1 << 20  # a certificate, or a PEM bundle of a chain or recipients
MAX_REQUEST = 64 << 10  # a PKCS#10 request or a public key: at most a few KiB
MAX_PIN_FILE = 4 << 10  # a PIN file: its first line is read
MAX_CONFIG = 1 << 20  # the configuration file


def file_kind(mode: int) -> str:
    """What a stat mode names, for messages: "regular file", "FIFO", "directory"..."""
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "regular file"


def check_regular(path: Path, what: str) -> int:
    """The size of `path` (a symlink is followed), once it is a regular file: a FIFO
    would block, a device or /dev/zero never ends, a directory is no file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{what} {path} is a {file_kind(st.st_mode)}, not a regular file: "
                         "nothing was read")
    return st.st_size


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """The whole of a regular file of at most `limit` bytes; anything else is refused
    before reading (kind and size checked first, and at most limit + 1 bytes read,
    should it grow meanwhile). The one reader of every file a user names."""
    size = check_regular(path, what)
    too_big = UsageError(f"{what} {path} is larger than {limit} bytes, the most a {what} "
                         "may be: nothing was read")
    if size > limit:
        raise too_big
    try:
        # O_NONBLOCK: should the name become a FIFO after the check, open does not block.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    with io.FileIO(fd, "rb", closefd=True) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{what} {path} is not a regular file: nothing was read")
        try:
            data = f.read(limit + 1) or b""
        except OSError as exc:
            raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise too_big
    return data
