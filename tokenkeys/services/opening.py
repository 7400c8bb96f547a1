"""Opening a batch of envelopes, audited from before the first decryption to its end.

The order is the guarantee. An "open-start" row names the batch and every output
it may write, before the PIN is read and before anything is decrypted. So a
registry that cannot be written (read-only, full, a newer schema, not a database)
stops the batch with nothing opened and no PIN spent, and a process killed at any
moment leaves no output that no audit row names. The "open" row ends the batch:
each envelope's digest, result and key; when the batch stops on an error (device
failure, PIN, Ctrl-C), what finished, the error's type and how many were left.

The registry's side (importing SQLAlchemy, opening the database, the consultation's
checks, the rows) runs beside the batch (services/opening_audit.py); the batch waits
for its start row before the login (AuditSide.ready).

`tokenkeys open` and any other front end call open_envelopes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenkeys.config import Config
from tokenkeys.i18n import _
from tokenkeys.services import opening_batch
from tokenkeys.services.opening_audit import AuditSide
from tokenkeys.services.opening_batch import FileResult
from tokenkeys.types import PinSource

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
    audit: AuditSide | None = None,
) -> OpenedBatch:
    """Open `pairs` (envelope, output) into outdir with the token's keys, audited.

    `unopened`: inputs found but not opened (opening_batch.collect's second list); they are
    reported and recorded with the rest. `audit`: the registry's side, started as early
    as the caller could (the earlier, the more of its import overlaps the command's own
    start); closed here. Raises the registry's errors before the PIN is read; a batch
    that stops (device failure, PIN error, Ctrl-C) raises after its end row is written.
    """
    audit = audit or AuditSide(config)
    try:
        opening_batch.check_outdir(outdir)  # a bad -o stops here, before any audit row
        # The workers while this process has one thread: they can be forked.
        workers = opening_batch.start_workers(token_uri, config, jobs, len(pairs), pins)
        try:
            audit.begin(service, consultation, token_uri, outdir, pairs)
        except BaseException:  # its side is gone: open_batch, which closes them, never runs
            if workers is not None:
                workers.close()
            raise
        return _audited(audit, config, pairs, outdir=outdir, token_uri=token_uri, pins=pins,
                        unopened=unopened, jobs=jobs, on_result=on_result,
                        allow_final_try=allow_final_try, announce=announce, wait=wait,
                        workers=workers)
    finally:
        audit.close()


def _audited(audit: AuditSide, config: Config, pairs: Sequence[tuple[Path, Path]], *,
             outdir: Path, token_uri: str, pins: PinSource, unopened: Sequence[FileResult],
             jobs: int, on_result: Callable[[FileResult], None] | None, allow_final_try: bool,
             announce: Callable[[str], None] | None, wait: float | None,
             workers: opening_batch.Helpers | None) -> OpenedBatch:
    done: list[FileResult] = []

    def collect(result: FileResult) -> None:
        done.append(result)
        if on_result is not None:
            on_result(result)

    try:
        results = opening_batch.open_batch(pairs, outdir, token_uri, config, pins, jobs=jobs,
                                           on_result=collect, allow_final_try=allow_final_try,
                                           announce=announce, wait=wait,
                                           before_login=audit.ready, workers=workers)
    except BaseException as exc:
        if not audit.settle():  # the registry's error first, as when it ran first
            if audit.error is None or audit.error is exc:
                raise
            raise audit.error from None
        _record_stopped(audit, [*done, *unopened], exc, len(pairs) - len(done))
        raise
    results += unopened
    audit.finish(results)
    return OpenedBatch(audit.batch_id, tuple(results))


def _record_stopped(audit: AuditSide, finished: Sequence[FileResult], exc: BaseException,
                    left: int) -> None:
    """The end row of a batch that raised; the batch's own error stays the one raised."""
    try:
        audit.finish(finished, error=type(exc).__name__, left=left)
    except Exception as failed:  # never in place of the batch's own error
        # The start row already names every output; say why the end row is missing.
        log.warning("the end row of batch %s could not be recorded: %s", audit.batch_id, failed)
        exc.add_note(_("the audit end row of batch {batch_id} could not be recorded: {name__}")
                     .format(batch_id=audit.batch_id, name__=type(failed).__name__))
