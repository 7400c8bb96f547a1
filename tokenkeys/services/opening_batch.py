"""Opening a batch of envelopes with one login, in one process or N worker processes.

python-pkcs11 segfaults with two threads calling SoftHSM2 at once (docs/drivers.md).
One process confines its device calls to one thread (drivers/device_thread.py) and opens
envelopes on others; from 150 envelopes on, those calls go to a process of their own
(services/opening_device.py); --jobs N adds processes (services/opening_workers.py),
each with its own session. Outputs are published in groups (services/opening_files.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path

from tokenkeys.config import Config
from tokenkeys.drivers import KeyHandle, open_token
from tokenkeys.drivers.device_thread import DeviceThread, confine, release
from tokenkeys.envelope import Identity
from tokenkeys.errors import UsageError
from tokenkeys.files import CommitGroup
from tokenkeys.i18n import _
from tokenkeys.services import login as login_service
from tokenkeys.services import opening_device, opening_workers
from tokenkeys.services.crossing import start_method
from tokenkeys.services.opening_device import DeviceProcess
from tokenkeys.services.opening_files import (
    DEVICE_FAILURES,
    Publisher,
    file_kind,
    stopped,
)
from tokenkeys.services.opening_files import FileResult as FileResult
from tokenkeys.services.opening_files import error_class as error_class
from tokenkeys.services.opening_files import open_one as open_one
from tokenkeys.types import PinSource, given_pin

SUFFIXES = (".p7m", ".p7", ".cms", ".pem")
log = logging.getLogger("tokenkeys.opening")
# Enough to keep the device busy while others parse, decrypt AES and write.
ENVELOPE_THREADS = 3


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
            skipped.extend(FileResult.skipped(p, None, _("not a regular file ({p})")
                                                       .format(p=file_kind(p)))
                           for p in entries if not p.is_file())
        elif path.is_file():
            out.append(path)
        elif path.exists() or path.is_symlink():
            raise UsageError(_("{path} is not a regular file ({path2})")
                             .format(path=path, path2=file_kind(path)))
        else:
            raise UsageError(_("no such envelope file or directory: {path}").format(path=path))
    return out, skipped


def check_outdir(outdir: Path) -> None:
    """Say in one line why OUTDIR cannot be used, before any PIN is read; create nothing
    (a wrong PIN must leave the disk as it was)."""
    probe = outdir
    while not (probe.exists() or probe.is_symlink()) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        if probe == outdir:
            raise UsageError(_("output directory {outdir} is a {outdir2}, not a directory")
                             .format(outdir=outdir, outdir2=file_kind(outdir)))
        raise UsageError(_("cannot create output directory {outdir}: {probe} is a {probe2}")
                         .format(outdir=outdir, probe=probe, probe2=file_kind(probe)))
    if not os.access(probe, os.W_OK | os.X_OK):
        what = (_("is not writable") if probe == outdir
                else _("cannot be created in {probe}").format(probe=probe))
        raise UsageError(_("output directory {outdir} {what} (permission denied)")
                         .format(outdir=outdir, what=what))


def make_outdir(outdir: Path) -> None:
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(_("cannot create output directory {outdir}: {strerror}")
                         .format(outdir=outdir, strerror=exc.strerror)) from None


def plan(inputs: Sequence[Path], outdir: Path) -> list[tuple[Path, Path]]:
    """Pair each input with its output; two inputs may not share an output name."""
    seen: dict[str, Path] = {}
    pairs = []
    real_outdir = outdir.resolve()
    real_dirs: dict[Path, Path] = {}  # a batch's inputs share a few directories
    for src in inputs:
        name = output_name(src)
        if name in seen:
            raise UsageError(_("{src} and {seen} would both be opened to {value}")
                             .format(src=src, seen=seen[name], value=outdir / name))
        seen[name] = src
        dst = outdir / name
        if _real(src, real_dirs) == _real_in(real_outdir, name):
            raise UsageError(_("{src} would be opened onto itself: choose another -o directory")
                             .format(src=src))
        pairs.append((src, dst))
    return pairs


def _real(path: Path, real_dirs: dict[Path, Path]) -> Path:
    """path.resolve(), resolving each directory once."""
    if path.is_symlink():
        return path.resolve()
    parent = real_dirs.get(path.parent)
    if parent is None:
        parent = real_dirs[path.parent] = path.parent.resolve()
    return parent / path.name


def _real_in(real_dir: Path, name: str) -> Path:
    dst = real_dir / name
    return dst.resolve() if dst.is_symlink() else dst


Helpers = opening_workers.Workers | DeviceProcess


def start_workers(token_uri: str, config: Config, jobs: int, count: int,
                  pins: PinSource) -> Helpers | None:
    """The processes a batch needs besides this one: `--jobs` workers, or with one job
    the device's process (services/opening_device.py). Started first thing (before
    another thread exists, so they can be forked), their start overlaps finding the
    token and the login."""
    if jobs < 1:
        raise UsageError(_("--jobs must be at least 1"))
    if pins.pinpad and jobs > 1:
        raise UsageError(_("--jobs > 1 needs a PIN that can be reused; not with the PIN pad"))
    if jobs > 1 and count > 1:
        return opening_workers.Workers(token_uri, config, jobs)
    if (count >= opening_device.MIN_ENVELOPES and not pins.pinpad
            and token_uri.startswith("pkcs11:")
            and start_method() == "fork"):
        log.debug("one job: the device's calls go to a process of their own")
        return DeviceProcess(token_uri, config)
    return None


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
    before_login: Callable[[], None] | None = None,
    workers: Helpers | None = None,
) -> list[FileResult]:
    """Open every pair into outdir. The PIN is read and checked once, before anything is written
    (after the PIN flags: see services/login.py). `before_login` runs once the token is
    found, before its PIN is read (services.opening: the audit's start row). `workers`:
    what start_workers() started (the --jobs workers or the device's process), closed
    here; started here when not given.

    A failed envelope does not stop the others; it is reported in its FileResult.
    """
    try:
        check_outdir(outdir)
        if workers is None:
            workers = start_workers(token_uri, config, jobs, len(pairs), pins)
        with open_token(token_uri, config, wait=wait) as token:
            if before_login is not None:
                before_login()
            pin = login_service.login(token, pins, allow_final_try=allow_final_try,
                                      announce=announce)
            keys = token.list_keys()
            make_outdir(outdir)
            if isinstance(workers, opening_workers.Workers) and pin is not None:
                done = workers.run(pairs, given_pin(pin), on_result)
            elif isinstance(workers, DeviceProcess) and pin is not None:
                remote = workers.start(given_pin(pin), keys)
                done = _open_threaded(pairs, remote, on_result)
            else:
                done = _pipelined(pairs, keys, on_result)
    finally:
        if workers is not None:
            workers.close()
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

    def report(result: FileResult) -> None:
        done.append(result)
        if on_result is not None:
            on_result(result)

    publisher = Publisher(CommitGroup(), report)
    taken: set[int] = set()  # the futures whose result the publisher has
    with ThreadPoolExecutor(ENVELOPE_THREADS, thread_name_prefix="tokenkeys-open") as pool:
        futures = [pool.submit(open_one, src, dst, keys, publisher.group)
                   for src, dst in pairs]
        try:
            for future in as_completed(futures):
                taken.add(id(future))
                publisher.take(future.result())
            publisher.publish()
            return done
        except DEVICE_FAILURES as exc:
            # Envelopes already being opened finish or fail whole (nothing half-written).
            pool.shutdown(wait=True, cancel_futures=True)
            _finish(futures, taken, publisher)
            # Done: an output exists. An envelope that failed is left for the re-run too
            # (a card pulled out mid-decryption can make one look damaged).
            finished = sum(r.status in ("opened", "skipped") for r in done)
            raise stopped(exc, finished, len(pairs)) from None
        except BaseException:
            # Ctrl-C: envelopes already being opened finish (their output is
            # complete and authenticated); the rest are not started.
            pool.shutdown(wait=True, cancel_futures=True)
            _finish(futures, taken, publisher)
            raise


def _finish(futures: Iterable[Future[FileResult]], taken: set[int],
            publisher: Publisher) -> None:
    """After a stop: what finished is published and reported, so that the caller's
    on_result (the audit's end row) learns of every output written."""
    for future in futures:
        if (id(future) not in taken and future.done() and not future.cancelled()
                and future.exception() is None):
            taken.add(id(future))
            publisher.take(future.result())
    publisher.publish()
