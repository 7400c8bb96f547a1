"""--jobs N: worker processes, each with its own session, logged in once.

The PIN, read once by the parent, reaches the workers through the multiprocessing
pipe, never argv. Envelopes go to the workers in chunks; each chunk's outputs are
published together (one sync) before its results come back.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from tokenkeys.config import Config
from tokenkeys.drivers import Token, open_token
from tokenkeys.envelope import Identity
from tokenkeys.errors import DeviceError, TokenKeysError, TokenNotFound
from tokenkeys.files import CommitGroup
from tokenkeys.i18n import _
from tokenkeys.services.crossing import modules_loaded, rebuilt, start_method
from tokenkeys.services.opening_files import (
    DEVICE_FAILURES,
    NOT_STARTED,
    FileResult,
    Publisher,
    error_class,
    open_one,
    stopped,
)
from tokenkeys.types import PinSource

WORKER_RETRIES = (0.1, 0.2, 0.4, 0.8)
log = logging.getLogger("tokenkeys.opening")


def device_failure(kind: str, message: str) -> TokenKeysError:
    """A worker's device failure, raised again in the parent as its own class."""
    if not issubclass(error_class(kind), DEVICE_FAILURES):
        kind = DeviceError.__name__
    return cast(TokenKeysError, rebuilt(kind, message, {}))  # a DEVICE_FAILURES class


# Worker state: one token, logged in once, per worker process.
_worker_token: Token | None = None
_worker_keys: list[Identity] = []
_worker_error: TokenKeysError | None = None
_worker_stop: Any = None  # a multiprocessing Event: set at the first device failure


def _worker_init(uri: str, config: Config, pin_queue: Any, pin_ready: Any, stop: Any,
                 start: Any) -> None:
    # An initializer that raises makes Pool respawn workers forever: keep the
    # error and report it on every file instead.
    global _worker_token, _worker_keys, _worker_error, _worker_stop
    _worker_stop = stop
    # Started before the parent's login: wait for the PIN it read (through the pipe,
    # never argv), and leave if the parent dies first (killed during its login).
    parent = os.getppid()
    while not pin_ready.wait(0.2):
        if os.getppid() != parent:
            os._exit(0)
    # A worker the pool started again after one died: no PIN left, or forked from the
    # parent once it had loaded its module (a child must not use that library).
    if pin_queue.empty() or modules_loaded():
        _worker_error = DeviceError(_("a worker process restarted during the batch; "
                                      "run the command again"))
        return
    pins: PinSource = pin_queue.get()
    # One worker at a time: SoftHSM2 rewrites its token file at C_Login, and a
    # process loading the token meanwhile reads it half-written (no token, or
    # "user PIN not initialised").
    with start:
        try:
            _worker_token = open_in_worker(uri, config)
            _worker_token.login(pins)
            _worker_keys = list(_worker_token.list_keys())
        except TokenKeysError as exc:
            _worker_error = exc


def open_in_worker(uri: str, config: Config) -> Token:
    """The token the parent has just opened. SoftHSM2 (file store) sometimes shows
    a process that starts beside others no token at all: a miss here is transient,
    so look again (each look re-reads the module) before giving up."""
    for delay in WORKER_RETRIES:
        try:
            return open_token(uri, config)
        except TokenNotFound:
            time.sleep(delay)
    return open_token(uri, config)


def _worker_open(chunk: Sequence[tuple[Path, Path]]) -> list[FileResult]:
    """Open a chunk; its outputs are published (one sync) before the results return."""
    results: list[FileResult] = []
    publisher = Publisher(CommitGroup(), results.append)
    try:
        for src, dst in chunk:
            publisher.take(_worker_open_one(src, dst, publisher.group))
    finally:
        publisher.publish()
    return results


def _worker_open_one(src: Path, dst: Path, group: CommitGroup) -> FileResult:
    if _worker_error is not None:
        return FileResult.failed(src, dst, type(_worker_error).__name__, str(_worker_error))
    if _worker_stop is not None and _worker_stop.is_set():
        return FileResult(str(src), str(dst), NOT_STARTED)
    try:
        return open_one(src, dst, _worker_keys, group)
    except DEVICE_FAILURES as exc:
        if _worker_stop is not None:
            _worker_stop.set()
        return FileResult(str(src), str(dst), NOT_STARTED,
                          error_type=type(exc).__name__, error=str(exc))


class Workers:
    """--jobs N: the worker processes, started before the parent's login so that their
    start overlaps it. Each waits for the PIN the parent read, then opens the token
    and logs in, one worker at a time."""

    def __init__(self, token_uri: str, config: Config, jobs: int) -> None:
        method = start_method()
        log.debug("--jobs %d: the workers are started by %s", jobs, method)
        ctx = multiprocessing.get_context(method)
        self.jobs = jobs
        self._pins, self._pin_ready = ctx.SimpleQueue(), ctx.Event()
        self._stop, start = ctx.Event(), ctx.Lock()
        self._pool = ctx.Pool(jobs, initializer=_worker_init,
                              initargs=(token_uri, config, self._pins, self._pin_ready,
                                        self._stop, start))

    def run(self, pairs: Sequence[tuple[Path, Path]], pins: PinSource,
            on_result: Callable[[FileResult], None] | None) -> list[FileResult]:
        for _worker in range(self.jobs):
            self._pins.put(pins)
        self._pin_ready.set()
        chunk = max(1, min(16, len(pairs) // (self.jobs * 8)))
        results = []
        chunks = [pairs[i:i + chunk] for i in range(0, len(pairs), chunk)]
        for done in self._pool.imap_unordered(_worker_open, chunks):
            for result in done:
                results.append(result)
                if on_result is not None and result.status != NOT_STARTED:
                    on_result(result)
        failure = next((r for r in results if r.status == NOT_STARTED and r.error), None)
        if failure is not None:
            finished = sum(r.status != NOT_STARTED for r in results)
            exc = device_failure(failure.error_type or "", failure.error or "")
            raise stopped(exc, finished, len(pairs))
        return results

    def close(self) -> None:
        """Stop the workers, used or not (one still waiting for a PIN never gets one)."""
        self._pool.terminate()
        self._pool.join()
