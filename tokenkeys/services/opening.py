"""Opening a batch of envelopes, audited from before the first decryption to its end.

The order is the guarantee. An "open-start" row names the batch and every output
it may write, before the PIN is read and before anything is decrypted. So a
registry that cannot be written (read-only, full, a newer schema, not a database)
stops the batch with nothing opened and no PIN spent, and a process killed at any
moment leaves no output that no audit row names. The "open" row ends the batch:
each envelope's digest, result and key; when the batch stops on an error (device
failure, PIN, Ctrl-C), what finished, the error's type and how many were left.

The registry's side (importing SQLAlchemy, about 0.2 s, opening the database, the
consultation's checks, the start row) runs on its own thread while the main thread
loads the PKCS#11 module and finds the token, whose C calls release the GIL; the
batch waits for it before the login (AuditStart.ready).

`tokenkeys open` and any other front end call open_envelopes.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tokenkeys.config import Config
from tokenkeys.i18n import _
from tokenkeys.services import opening_batch
from tokenkeys.services.opening_batch import FileResult
from tokenkeys.types import PinSource

if TYPE_CHECKING:  # the registry (SQLAlchemy) is imported on AuditStart's thread
    from tokenkeys.registry import Registry

STATUSES = ("opened", "skipped", "failed")
log = logging.getLogger("tokenkeys.opening")


@dataclass(frozen=True)
class OpenedBatch:
    """What a batch did: `results` in input order, then the inputs not collected."""

    batch_id: str
    results: tuple[FileResult, ...]

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}


def open_envelopes(
    config: Config,
    pairs: Sequence[tuple[Path, Path]],
    *,
    outdir: Path,
    token_uri: str,
    service: str,
    pins: PinSource,
    consultation: str | None = None,
    unopened: Sequence[FileResult] = (),
    jobs: int = 1,
    on_result: Callable[[FileResult], None] | None = None,
    allow_final_try: bool = False,
    announce: Callable[[str], None] | None = None,
    wait: float | None = None,
) -> OpenedBatch:
    """Open `pairs` (envelope, output) into outdir with the token's keys, audited.

    `unopened`: inputs found but not opened (opening_batch.collect's second list); they are
    reported and recorded with the rest. Raises the registry's errors before the
    PIN is read; a batch that stops (device failure, PIN error, Ctrl-C) raises
    after its end row is written.
    """
    opening_batch.check_outdir(outdir)  # a bad -o stops here, before any audit row
    # The workers before the audit's thread: a process with one thread can fork them.
    workers = opening_batch.start_workers(token_uri, config, jobs, len(pairs), pins)
    start = AuditStart(config, service, consultation, token_uri, outdir, pairs)
    try:
        start.start()
    except BaseException:
        if workers is not None:
            workers.close()
        raise
    done: list[FileResult] = []

    def collect(result: FileResult) -> None:
        done.append(result)
        if on_result is not None:
            on_result(result)

    # One registry for the whole batch: its connection is kept, no per-envelope write.
    with start.stack:
        try:
            results = opening_batch.open_batch(pairs, outdir, token_uri, config, pins, jobs=jobs,
                                               on_result=collect, allow_final_try=allow_final_try,
                                               announce=announce, wait=wait,
                                               before_login=start.ready, workers=workers)
        except BaseException as exc:
            start.join()
            if start.error is not None:  # the registry's error first, as when it ran first
                if start.error is exc:
                    raise
                raise start.error from None
            _record_stopped(start.registry(), service, consultation, token_uri, start.batch_id,
                            [*done, *unopened], exc, len(pairs) - len(done))
            raise
        results += unopened
        from tokenkeys.services import consultations

        consultations.record_opening(start.registry(), service, consultation, token_uri,
                                     results, batch=start.batch_id)
    return OpenedBatch(start.batch_id, tuple(results))


class AuditStart(threading.Thread):
    """The registry's side of the start of a batch, on its own thread: open the
    registry, check the consultation's binding and every envelope against it, write
    the "open-start" row. ready() waits for it and raises what it raised; the batch
    calls it before the PIN is read, so nothing is decrypted before the row exists."""

    def __init__(self, config: Config, service: str, consultation: str | None,
                 token_uri: str, outdir: Path, pairs: Sequence[tuple[Path, Path]]) -> None:
        super().__init__(name="tokenkeys-audit-start", daemon=True)
        self.config, self.service, self.consultation = config, service, consultation
        self.token_uri, self.outdir, self.pairs = token_uri, outdir, pairs
        self.batch_id = uuid.uuid4().hex
        self.stack = ExitStack()  # closed by the caller, after the end row
        self.error: BaseException | None = None
        self._registry: Registry | None = None

    def run(self) -> None:
        try:
            from tokenkeys.services import consultations
            from tokenkeys.services.access import open_registry

            registry = self.stack.enter_context(open_registry(self.config))
            if self.consultation is not None:
                bound = consultations.load_for_use(registry, self.service, self.consultation)
                for src, _dst in self.pairs:
                    consultations.check_envelope(bound, src)
            record_start(registry, self.service, self.consultation, self.token_uri,
                         self.batch_id, self.outdir, self.pairs)
            self._registry = registry
        except BaseException as exc:  # raised again on the caller's thread by ready()
            self.error = exc

    def ready(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error

    def registry(self) -> Registry:
        self.ready()
        assert self._registry is not None
        return self._registry


def record_start(registry: Registry, service: str, reference: str | None, token_uri: str,
                 batch_id: str, outdir: Path, pairs: Sequence[tuple[Path, Path]]) -> None:
    """The "open-start" row: every planned envelope and the output it may become.

    Names only, no digests: hashing every envelope here would read each one twice
    (the end row's digests are taken while the envelopes are opened)."""
    registry.record_event("open-start", service=service, subject=reference, details={
        "batch": batch_id, "token": token_uri, "outdir": os.path.abspath(outdir),
        "envelopes": [{"file": src.name, "output": os.path.abspath(dst)}
                      for src, dst in pairs]})


def _record_stopped(registry: Registry, service: str, reference: str | None, token_uri: str,
                    batch_id: str, finished: Sequence[FileResult], exc: BaseException,
                    left: int) -> None:
    """The end row of a batch that raised; the batch's own error stays the one raised."""
    from tokenkeys.services import consultations

    try:
        consultations.record_opening(registry, service, reference, token_uri, finished,
                                     batch=batch_id, error=type(exc).__name__, left=left)
    except Exception as failed:  # never in place of the batch's own error
        # The start row already names every output; say why the end row is missing.
        log.warning("the end row of batch %s could not be recorded: %s", batch_id, failed)
        exc.add_note(_("the audit end row of batch {batch_id} could not be recorded: {name__}")
                     .format(batch_id=batch_id, name__=type(failed).__name__))
