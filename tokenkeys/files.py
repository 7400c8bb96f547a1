"""Files in and out. In: read_limited, the one reader of every file a user names
(regular files only, of a documented size per kind). Out: atomic output, a file
becomes visible at its name only once it is complete.

On Linux the data goes to an unnamed O_TMPFILE in the target's directory and is
linked into place on commit, so not even a crash or power loss can leave a
partial file behind. Elsewhere (or with overwrite) a 0600 temp file next to the
target is renamed into place. The one writer of every file tokenkeys makes:
opened envelopes and sealed ones stream through AtomicOutput, small files
(certificates, keystore records) go through write_atomic. A batch of small
outputs commits through a CommitGroup: one sync for many files, and each still
appears only once it is durable.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from tokenkeys.errors import OutputExists, UsageError
from tokenkeys.i18n import _


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse an existing file (or a dangling symlink) unless overwrite: `--force`."""
    if not overwrite and (path.exists() or path.is_symlink()):
        raise OutputExists(_("{path} already exists (use --force to replace it)")
                           .format(path=path))


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

    def __init__(self, dst: Path, overwrite: bool, *, mode: int | None = None,
                 group: CommitGroup | None = None) -> None:
        self.dst = dst
        self.overwrite = overwrite
        self.mode = mode  # the file's mode once in place; None keeps 0600
        self.group = group  # commit() hands the file to it instead of placing it
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
            raise UsageError(_("cannot write next to {dst}: {strerror}")
                             .format(dst=self.dst, strerror=exc.strerror)) from None
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
        """Put the file in place, durable first; in a group, when the group publishes."""
        if self.mode is not None:
            os.fchmod(self.file.fileno(), self.mode)
        if self.group is not None:
            self.group.add(self)
            self._open = False  # the group owns the file now
            return
        # Durable before visible: a crash must not leave a named empty file.
        os.fsync(self.file.fileno())
        self.place()

    def place(self) -> None:
        """Name the (already durable) file at dst: OutputExists if something got there."""
        tmp, self._tmp, self._open = self._tmp, None, False
        if tmp is None:
            self._link_unnamed()
            return
        self.file.close()
        try:
            self._place_named(tmp)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def discard(self) -> None:
        """Drop the data: nothing appears at dst."""
        self._open = True
        self.__exit__(None, None, None)

    def _link_unnamed(self) -> None:
        # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names the unnamed file;
        # os.link passes that flag only when a dir_fd is given.
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.link(str(self.file.fileno()), self.dst, src_dir_fd=proc, follow_symlinks=True)
        except FileExistsError:
            raise OutputExists(_("{dst} appeared while writing; left untouched")
                               .format(dst=self.dst)) from None
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
            raise OutputExists(_("{dst} appeared while writing; left untouched")
                               .format(dst=self.dst)) from None
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


class CommitGroup:
    """Committed outputs waiting to be published together (group commit).

    fsync per file costs one journal commit each (about 3 ms on this VM's ext4); one
    syncfs for 32 files costs 0.2 ms per file. publish() syncs every pending file,
    then names each one, then syncs the directories: a file is never visible before
    its data is durable, and the caller reports it opened only after publish().
    """

    def __init__(self) -> None:
        self._pending: list[AtomicOutput] = []
        self._lock = threading.Lock()  # commits come from several threads

    def add(self, out: AtomicOutput) -> None:
        with self._lock:
            self._pending.append(out)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def publish(self) -> dict[Path, OutputExists | None]:
        """Place every pending file: dst -> None, or the OutputExists that refused it."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return {}
        try:
            _sync_files([o.file.fileno() for o in pending])
        except BaseException:
            for out in pending:
                out.discard()
            raise
        placed: dict[Path, OutputExists | None] = {}
        for i, out in enumerate(pending):
            try:
                out.place()
                placed[out.dst] = None
            except OutputExists as exc:
                placed[out.dst] = exc
            except BaseException:
                for rest in pending[i + 1:]:
                    rest.discard()
                raise
        _sync_files([], directories={out.dst.parent for out in pending})
        return placed

    def discard(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for out in pending:
            out.discard()


_syncfs: Callable[[int], int] | None = None


def _sync_files(fds: list[int], directories: set[Path] | frozenset[Path] = frozenset()
                ) -> None:
    """Make the files' data (and the directories' entries) durable: one syncfs(2) per
    file system on Linux, else fsync each (Python has no syncfs: ctypes, once)."""
    global _syncfs
    if _syncfs is None:
        try:
            import ctypes

            _syncfs = ctypes.CDLL(None, use_errno=True).syncfs
        except (OSError, AttributeError):
            _syncfs = _no_syncfs
    dir_fds = [os.open(d, os.O_RDONLY | os.O_DIRECTORY) for d in directories]
    try:
        done: set[int] = set()
        for fd in [*fds, *dir_fds]:
            device = os.fstat(fd).st_dev
            if device in done:
                continue
            if _syncfs(fd) == 0:
                done.add(device)
            else:
                os.fsync(fd)
    finally:
        for fd in dir_fds:
            os.close(fd)


def _no_syncfs(_fd: int) -> int:
    return -1


def prepare_output(path: Path, force: bool) -> None:
    """The one overwrite policy of every command that writes a file: an existing file
    is refused unless `force`; never a directory or special file. The parent directory
    is created if needed."""
    if path.is_symlink() or path.exists():
        if not force:
            raise OutputExists(_("{path} already exists (use --force to replace it)")
                               .format(path=path))
        if not path.is_file() or path.is_symlink():
            raise UsageError(_("{path} is not a regular file: --force replaces only files")
                             .format(path=path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(_("cannot create directory {parent}: {strerror}")
                         .format(parent=path.parent, strerror=exc.strerror)) from None


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
        raise UsageError(_("cannot read {what} {path}: {strerror}")
                         .format(what=what, path=path, strerror=exc.strerror)) from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(_("{what} {path} is a {st_mode}, not a regular file: nothing was read")
                         .format(what=what, path=path, st_mode=file_kind(st.st_mode)))
    return st.st_size


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """The whole of a regular file of at most `limit` bytes; anything else is refused
    before reading (kind and size checked first, and at most limit + 1 bytes read,
    should it grow meanwhile). The one reader of every file a user names."""
    size = check_regular(path, what)
    too_big = UsageError(_("{what} {path} is larger than {limit} bytes, the most a {what} "
                           "may be: nothing was read").format(what=what, path=path, limit=limit))
    if size > limit:
        raise too_big
    try:
        # O_NONBLOCK: should the name become a FIFO after the check, open does not block.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise UsageError(_("cannot read {what} {path}: {strerror}")
                         .format(what=what, path=path, strerror=exc.strerror)) from None
    with io.FileIO(fd, "rb", closefd=True) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(_("{what} {path} is not a regular file: nothing was read")
                             .format(what=what, path=path))
        try:
            data = f.read(limit + 1) or b""
        except OSError as exc:
            raise UsageError(_("cannot read {what} {path}: {strerror}")
                             .format(what=what, path=path, strerror=exc.strerror)) from None
    if len(data) > limit:
        raise too_big
    return data
