"""Opening a batch of envelopes with one login, in one process or N worker processes.

python-pkcs11 segfaults with two threads calling SoftHSM2 at once (docs/drivers.md).
One process confines its device calls to one thread (drivers/device_thread.py) and opens
envelopes on others; --jobs N adds processes, each with its own session. The
PIN, read once, reaches the workers through the multiprocessing pipe, never argv.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenkeys import errors
from tokenkeys.config import Config
from tokenkeys.drivers import KeyHandle, Token, open_token
from tokenkeys.drivers.device_thread import DeviceThread, confine, release
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
    UsageError,
)
from tokenkeys.services import login as login_service
from tokenkeys.services.envelope_kinds import explain
from tokenkeys.types import PinSource, given_pin

SUFFIXES = (".p7m", ".p7", ".cms", ".pem")
# Enough to keep the device busy while others parse, decrypt AES and fsync.
ENVELOPE_THREADS = 3
# The device failed, not the envelope: the batch stops at the first one.
DEVICE_FAILURES: tuple[type[TokenKeysError], ...] = (
    TokenNotFound, DeviceError, KeyNotFound, ModuleNotFound, PinError)
NOT_STARTED = "not-started"
WORKER_RETRIES = (0.1, 0.2, 0.4, 0.8)


def stopped(exc: TokenKeysError, done: int, total: int) -> TokenKeysError:
    """`exc` (same class, same exit code) saying how far the batch got."""
    left = total - done
    exc.args = (f"{exc}; the batch stopped: {done} of {total} envelope(s) done, "
                f"{left} left (outputs written are complete; run the command again "
                "to open the rest)",)
    return exc


def error_class(name: str | None) -> type[TokenKeysError]:
    """The error class a FileResult names (error_type), TokenKeysError if none is:
    results cross process boundaries as names, and exit codes come from classes."""
    found = getattr(errors, name or "", None)
    if isinstance(found, type) and issubclass(found, TokenKeysError):
        return found
    return TokenKeysError


def _device_failure(kind: str, message: str) -> TokenKeysError:
    """A worker's device failure, raised again in the parent as its own class."""
    cls = error_class(kind)
    if not issubclass(cls, DEVICE_FAILURES):
        cls = DeviceError
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
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


def output_name(path: Path) -> str:
    """`bid.pdf.p7m` -> `bid.pdf`; a name with no known suffix is kept."""
    name = path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def collect_inputs(paths: Iterable[Path]) -> list[Path]:
    """Files as given; a directory means every visible regular file in it, sorted."""
    return collect(paths)[0]


def collect(paths: Iterable[Path]) -> tuple[list[Path], list[FileResult]]:
    """Inputs to open, and the entries of input directories that are not opened.

    In a directory, a file that is the output of another envelope in it (`a.pdf`
    beside `a.pdf.p7m`) is left alone, so `-o` may be the input directory and a
    re-run resumes. Subdirectories, FIFOs, sockets and devices are reported as
    skipped with the reason; hidden files are ignored.
    """
    out: list[Path] = []
    skipped: list[FileResult] = []
    for path in paths:
        if path.is_dir():
            entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
            files = [p for p in entries if p.is_file()]
            outputs = {output_name(p) for p in files if output_name(p) != p.name}
            out.extend(p for p in files if p.name not in outputs)
            skipped.extend(FileResult.skipped(p, None, f"not a regular file ({_kind(p)})")
                           for p in entries if not p.is_file())
        elif path.is_file():
            out.append(path)
        elif path.exists() or path.is_symlink():
            raise UsageError(f"{path} is not a regular file ({_kind(path)})")
        else:
            raise UsageError(f"no such envelope file or directory: {path}")
    return out, skipped


def _kind(path: Path) -> str:
    try:
        mode = path.lstat().st_mode
    except OSError:
        return "unreadable"
    if stat.S_ISLNK(mode):
        return "symbolic link" if path.exists() else "dangling symbolic link"
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "regular file"


def check_outdir(outdir: Path) -> None:
    """Say in one line why OUTDIR cannot be used, before any PIN is read; create nothing
    (a wrong PIN must leave the disk as it was)."""
    probe = outdir
    while not (probe.exists() or probe.is_symlink()) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        if probe == outdir:
            raise UsageError(f"output directory {outdir} is a {_kind(outdir)}, not a directory")
        raise UsageError(f"cannot create output directory {outdir}: {probe} is a "
                         f"{_kind(probe)}")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == outdir else f"cannot be created in {probe}"
        raise UsageError(f"output directory {outdir} {what} (permission denied)")


def make_outdir(outdir: Path) -> None:
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output directory {outdir}: {exc.strerror}") from None


def plan(inputs: Sequence[Path], outdir: Path) -> list[tuple[Path, Path]]:
    """Pair each input with its output; two inputs may not share an output name."""
    seen: dict[str, Path] = {}
    pairs = []
    for src in inputs:
        name = output_name(src)
        if name in seen:
            raise UsageError(f"{src} and {seen[name]} would both be opened to {outdir / name}")
        seen[name] = src
        dst = outdir / name
        if dst.resolve() == src.resolve():
            raise UsageError(f"{src} would be opened onto itself: choose another -o directory")
        pairs.append((src, dst))
    return pairs


def open_one(src: Path, dst: Path, identities: Sequence[Identity]) -> FileResult:
    done = _existing(src, dst)
    if done is not None:
        return done
    try:
        result = open_envelope(src, dst, identities)
    except DEVICE_FAILURES:
        raise  # the device failed, not this envelope: the caller stops the batch
    except OutputExists:
        # Another run linked it first (outputs appear only once complete).
        return _existing(src, dst, "opened by another run") or FileResult.failed(
            src, dst, "OutputExists", f"{dst} appeared while opening and is not a regular file")
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


def _existing(src: Path, dst: Path, reason: str = "already opened") -> FileResult | None:
    """An output already at dst: a regular file is complete (outputs are linked into
    place only once authenticated); anything else there is a failure, never a skip."""
    try:
        st = dst.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return FileResult.failed(src, dst, "OSError", f"cannot check {dst}: {exc.strerror}")
    if stat.S_ISREG(st.st_mode):
        return FileResult.skipped(src, dst, reason, st.st_size)
    return FileResult.failed(src, dst, "OutputExists",
                             f"{dst} exists and is a {_kind(dst)}, not an opened file: "
                             "move it away")


# Worker state: one token, logged in once, per worker process.
_worker_token: Token | None = None
_worker_keys: list[Identity] = []
_worker_error: TokenKeysError | None = None
_worker_stop: Any = None  # a multiprocessing Event: set at the first device failure


def _worker_init(uri: str, config: Config, pins: PinSource, stop: Any, start: Any) -> None:
    # An initializer that raises makes Pool respawn workers forever: keep the
    # error and report it on every file instead.
    global _worker_token, _worker_keys, _worker_error, _worker_stop
    _worker_stop = stop
    # One worker at a time: SoftHSM2 rewrites its token file at C_Login, and a
    # process loading the token meanwhile reads it half-written (no token, or
    # "user PIN not initialised").
    with start:
        try:
            _worker_token = _open_in_worker(uri, config)
            _worker_token.login(pins)
            _worker_keys = list(_worker_token.list_keys())
        except TokenKeysError as exc:
            _worker_error = exc


def _open_in_worker(uri: str, config: Config) -> Token:
    """The token the parent has just opened. SoftHSM2 (file store) sometimes shows
    a process that starts beside others no token at all: a miss here is transient,
    so look again (each look re-reads the module) before giving up."""
    for delay in WORKER_RETRIES:
        try:
            return open_token(uri, config)
        except TokenNotFound:
            time.sleep(delay)
    return open_token(uri, config)


def _worker_open(pair: tuple[Path, Path]) -> FileResult:
    if _worker_error is not None:
        return FileResult.failed(*pair, type(_worker_error).__name__, str(_worker_error))
    if _worker_stop is not None and _worker_stop.is_set():
        return FileResult(str(pair[0]), str(pair[1]), NOT_STARTED)
    try:
        return open_one(pair[0], pair[1], _worker_keys)
    except DEVICE_FAILURES as exc:
        if _worker_stop is not None:
            _worker_stop.set()
        return FileResult(str(pair[0]), str(pair[1]), NOT_STARTED,
                          error_type=type(exc).__name__, error=str(exc))


def open_batch(
    pairs: Sequence[tuple[Path, Path]],
    outdir: Path,
    token_uri: str,
    config: Config,
    pins: PinSource,
    *,
    jobs: int = 1,
    on_result: Callable[[FileResult], None] | None = None,
    allow_final_try: bool = False,
    announce: Callable[[str], None] | None = None,
    wait: float | None = None,
) -> list[FileResult]:
    """Open every pair into outdir. The PIN is read and checked once, before anything is written
    (after the PIN flags: see services/login.py).

    A failed envelope does not stop the others; it is reported in its FileResult.
    """
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    check_outdir(outdir)
    if pins.pinpad and jobs > 1:
        raise UsageError("--jobs > 1 needs a PIN that can be reused; not with the PIN pad")
    with open_token(token_uri, config, wait=wait) as token:
        pin = login_service.login(token, pins, allow_final_try=allow_final_try,
                                  announce=announce)
        keys = token.list_keys()
        make_outdir(outdir)
        if jobs > 1 and len(pairs) > 1 and pin is not None:
            done = _parallel(pairs, token_uri, config, given_pin(pin), jobs, on_result)
        else:
            done = _pipelined(pairs, keys, on_result)
    by_input = {r.input: r for r in done}
    return [by_input[str(src)] for src, _ in pairs]


def _pipelined(pairs: Sequence[tuple[Path, Path]], keys: Sequence[KeyHandle],
               on_result: Callable[[FileResult], None] | None) -> list[FileResult]:
    """One process: the device works on one envelope while threads parse and write others.
    Results come in completion order.

    From here on only the device thread calls into PKCS#11 (see drivers/device_thread.py).
    """
    with DeviceThread() as device:
        bound = [confine(k, device) for k in keys]
        try:
            done = _open_threaded(pairs, bound, on_result)
        finally:
            for key in keys:
                release(key)
    return done


def _open_threaded(pairs: Sequence[tuple[Path, Path]], keys: Sequence[Identity],
                   on_result: Callable[[FileResult], None] | None) -> list[FileResult]:
    done: list[FileResult] = []
    with ThreadPoolExecutor(ENVELOPE_THREADS, thread_name_prefix="tokenkeys-open") as pool:
        futures = [pool.submit(open_one, src, dst, keys) for src, dst in pairs]
        try:
            return _collect((f.result() for f in as_completed(futures)), on_result, done)
        except DEVICE_FAILURES as exc:
            # Envelopes already being opened finish or fail whole (nothing half-written).
            pool.shutdown(wait=True, cancel_futures=True)
            _collect(_late(futures, done), on_result, done)
            # Done: an output exists. An envelope that failed is left for the re-run too
            # (a card pulled out mid-decryption can make one look damaged).
            finished = sum(r.status in ("opened", "skipped") for r in done)
            raise stopped(exc, finished, len(pairs)) from None
        except BaseException:
            # Ctrl-C: envelopes already being opened finish (their output is
            # complete and authenticated); the rest are not started.
            pool.shutdown(wait=True, cancel_futures=True)
            _collect(_late(futures, done), on_result, done)
            raise


def _late(futures: Sequence[Future[FileResult]], done: Sequence[FileResult]
          ) -> list[FileResult]:
    """Results that finished after the batch stopped and were not reported yet: the
    caller's on_result (the audit's end row) learns of every output written."""
    seen = {id(r) for r in done}
    return [f.result() for f in futures
            if f.done() and not f.cancelled() and f.exception() is None
            and id(f.result()) not in seen]


def _parallel(
    pairs: Sequence[tuple[Path, Path]], token_uri: str, config: Config, pins: PinSource,
    jobs: int, on_result: Callable[[FileResult], None] | None,
) -> list[FileResult]:
    # spawn: a forked child would inherit the parent's initialised PKCS#11 library.
    ctx = multiprocessing.get_context("spawn")
    chunk = max(1, min(16, len(pairs) // (jobs * 8)))
    stop, start = ctx.Event(), ctx.Lock()
    with ctx.Pool(jobs, initializer=_worker_init,
                  initargs=(token_uri, config, pins, stop, start)) as pool:
        results = []
        for result in pool.imap_unordered(_worker_open, pairs, chunksize=chunk):
            results.append(result)
            if on_result is not None and result.status != NOT_STARTED:
                on_result(result)
    failure = next((r for r in results if r.status == NOT_STARTED and r.error), None)
    if failure is not None:
        finished = sum(r.status != NOT_STARTED for r in results)
        exc = _device_failure(failure.error_type or "", failure.error or "")
        raise stopped(exc, finished, len(pairs))
    return results


def _collect(results: Iterable[FileResult],
             on_result: Callable[[FileResult], None] | None,
             out: list[FileResult] | None = None) -> list[FileResult]:
    out = [] if out is None else out
    for result in results:
        out.append(result)  # first: a raising on_result must not see it twice (_late)
        if on_result is not None:
            on_result(result)
    return out
