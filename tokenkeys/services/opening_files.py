"""One envelope of a batch: its result, how it is opened, and when its output appears.

Outputs of a batch commit through a CommitGroup (files.py): one sync for many small
files. A result says "opened" only once its output is published: durable and in place.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tokenkeys import files
from tokenkeys.envelope import Identity, open_envelope
from tokenkeys.errors import (
    DeviceError,
    KeyNotFound,
    MechanismUnsupported,
    ModuleNotFound,
    NoMatchingRecipient,
    OutputExists,
    PinError,
    TokenKeysError,
    TokenNotFound,
)
from tokenkeys.files import CommitGroup
from tokenkeys.i18n import _
from tokenkeys.services.crossing import error_class as error_class
from tokenkeys.services.envelope_kinds import explain

# The device failed, not the envelope: the batch stops at the first one.
DEVICE_FAILURES: tuple[type[TokenKeysError], ...] = (
    TokenNotFound, DeviceError, KeyNotFound, ModuleNotFound, PinError)
NOT_STARTED = "not-started"
# A group is published at this many outputs, bytes or seconds, whichever comes first:
# few syncs for small bids, and no bid waits long to be reported.
PUBLISH_EVERY = 32
PUBLISH_BYTES = 64 << 20
PUBLISH_SECONDS = 0.1


def stopped(exc: TokenKeysError, done: int, total: int) -> TokenKeysError:
    """`exc` (same class, same exit code) saying how far the batch got."""
    left = total - done
    exc.args = (_("{exc}; the batch stopped: {done} of {total} envelope(s) done, {left} left "
                  "(outputs written are complete; run the command again to open the rest)")
                .format(exc=exc, done=done, total=total, left=left),)
    return exc


@dataclass(frozen=True)
class FileResult:
    input: str
    output: str
    status: str  # opened | skipped | failed
    recipient: str | None = None
    bytes: int = 0
    error_type: str | None = None
    error: str | None = None
    reason: str | None = None  # why it was skipped
    recipients: tuple[str, ...] | None = None  # NoMatchingRecipient: who the envelope is for
    sha256: str | None = None  # of the envelope, hashed while it was opened (audit row)

    @classmethod
    def failed(cls, src: Path, dst: Path, kind: str, message: str) -> FileResult:
        return cls(str(src), str(dst), "failed", error_type=kind, error=message)

    @classmethod
    def skipped(cls, src: Path, dst: Path | None, reason: str, size: int = 0) -> FileResult:
        return cls(str(src), "" if dst is None else str(dst), "skipped", bytes=size,
                   reason=reason)

    def to_json(self) -> dict[str, object]:
        document = asdict(self)
        del document["sha256"]  # for the audit row; the report is unchanged
        return document


def open_one(src: Path, dst: Path, identities: Sequence[Identity],
             group: CommitGroup | None = None) -> FileResult:
    """Open one envelope. With `group`, an "opened" result is provisional: its output
    appears, and the result may be reported, once Publisher.publish() has run."""
    done = _existing(src, dst)
    if done is not None:
        return done
    try:
        result = open_envelope(src, dst, identities, group=group)
    except DEVICE_FAILURES:
        raise  # the device failed, not this envelope: the caller stops the batch
    except OutputExists:
        # Another run linked it first (outputs appear only once complete).
        return _lost_race(FileResult(str(src), str(dst), "opened"))
    except NoMatchingRecipient as exc:
        return FileResult(str(src), str(dst), "failed", error_type=type(exc).__name__,
                          error=str(exc), recipients=exc.recipients)
    except MechanismUnsupported as exc:
        return FileResult.failed(src, dst, type(exc).__name__, explain(str(exc), exc.offered))
    except TokenKeysError as exc:
        return FileResult.failed(src, dst, type(exc).__name__, str(exc))
    except OSError as exc:
        return FileResult.failed(src, dst, "OSError", f"{exc.strerror or exc} ({src})")
    return FileResult(str(src), str(dst), "opened", recipient=result.recipient,
                      bytes=result.bytes_out, sha256=result.sha256)


def _existing(src: Path, dst: Path, reason: str = _("already opened")) -> FileResult | None:
    """An output already at dst: a regular file is complete (outputs are linked into
    place only once authenticated); anything else there is a failure, never a skip."""
    try:
        st = dst.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return FileResult.failed(src, dst, "OSError", _("cannot check {dst}: {strerror}")
                                                      .format(dst=dst, strerror=exc.strerror))
    if stat.S_ISREG(st.st_mode):
        return FileResult.skipped(src, dst, reason, st.st_size)
    return FileResult.failed(src, dst, "OutputExists",
                             _("{dst} exists and is a {dst2}, not an opened file: move it away")
                             .format(dst=dst, dst2=file_kind(dst)))


def file_kind(path: Path) -> str:
    try:
        mode = path.lstat().st_mode
    except OSError:
        return "unreadable"
    if stat.S_ISLNK(mode):
        return "symbolic link" if path.exists() else "dangling symbolic link"
    return files.file_kind(mode)



class Publisher:
    """Reports results in the order they complete; an opened one only once its output
    is published (see PUBLISH_EVERY). The batch's first output is published at once:
    the agent sees the first bid without waiting for a group."""

    def __init__(self, group: CommitGroup,
                 report: Callable[[FileResult], None]) -> None:
        self.group = group
        self.report = report
        self.pending: list[FileResult] = []
        self.since = 0.0
        self.first = True

    def take(self, result: FileResult) -> None:
        if result.status != "opened":
            self.report(result)
            return
        if not self.pending:
            self.since = time.monotonic()
        self.pending.append(result)
        if (self.first or len(self.pending) >= PUBLISH_EVERY
                or sum(r.bytes for r in self.pending) >= PUBLISH_BYTES
                or time.monotonic() - self.since >= PUBLISH_SECONDS):
            self.publish()

    def publish(self) -> None:
        """Sync and place every pending output, then report each."""
        pending, self.pending = self.pending, []
        self.first = self.first and not pending
        placed = self.group.publish()
        # Every placed output is reported, even when a report raises (Ctrl-C in the
        # caller's callback): the audit's end row must learn of each one.
        first: BaseException | None = None
        for result in pending:
            refused = placed.get(Path(result.output))
            try:
                self.report(result if refused is None else _lost_race(result))
            except BaseException as exc:
                first = first or exc
        if first is not None:
            raise first


def _lost_race(result: FileResult) -> FileResult:
    """Another run linked the output first (outputs appear only once complete)."""
    src, dst = Path(result.input), Path(result.output)
    return _existing(src, dst, _("opened by another run")) or replace(
        result, status="failed", error_type="OutputExists",
        error=f"{dst} appeared while opening and is not a regular file")
