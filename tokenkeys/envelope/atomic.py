"""Atomic output: write to a private temp file next to the target, rename on success."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from types import TracebackType

from tokenkeys.errors import OutputExists, UsageError


def check_target(dst: Path, overwrite: bool) -> None:
    if not overwrite and (dst.exists() or dst.is_symlink()):
        raise OutputExists(f"{dst} already exists (use overwrite to replace it)")


class AtomicOutput:
    """Context manager: `.file` is a 0600 temp file; `commit()` puts it in place.

    Anything that leaves the block without commit() - an exception, Ctrl-C -
    removes the temp file and leaves `dst` untouched.
    """

    def __init__(self, dst: Path, overwrite: bool) -> None:
        self.dst = dst
        self.overwrite = overwrite
        self._tmp: str | None = None
        self.file: io.FileIO

    def __enter__(self) -> AtomicOutput:
        check_target(self.dst, self.overwrite)
        try:
            # mkstemp creates the file with mode 0600: plaintext is never world-readable.
            fd, self._tmp = tempfile.mkstemp(prefix=f".{self.dst.name}.", suffix=".part",
                                             dir=self.dst.parent)
        except OSError as exc:
            raise UsageError(f"cannot write next to {self.dst}: {exc.strerror}") from None
        self.file = io.FileIO(fd, "wb", closefd=True)
        return self

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
        assert self._tmp is not None
        # Durable before visible: a crash must not leave a renamed empty file.
        os.fsync(self.file.fileno())
        self.file.close()
        if self.overwrite:
            os.replace(self._tmp, self.dst)
        else:
            try:
                os.link(self._tmp, self.dst)  # no-clobber, unlike rename
            except FileExistsError:
                raise OutputExists(f"{self.dst} appeared while writing; left untouched") from None
            except OSError:  # filesystem without hard links
                check_target(self.dst, False)
                os.replace(self._tmp, self.dst)
            else:
                os.unlink(self._tmp)
        self._tmp = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None
