"""Opening a batch of envelopes, audited from before the first decryption to its end.

The order is the guarantee. The registry is opened and written first: an
"open-start" row names the batch and every output it may write, before the PIN
is read and before anything is decrypted. So a registry that cannot be written
(read-only, full, a newer schema, not a database) stops the batch with nothing
opened and no PIN spent, and a process killed at any moment leaves no output that
no audit row names. The "open" row ends the batch: each envelope's digest, result
and key; when the batch stops on an error (device failure, PIN, Ctrl-C), what
finished, the error's type and how many were left.

`tokenkeys open` and any other front end call open_envelopes.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenkeys.config import Config
from tokenkeys.i18n import _
from tokenkeys.registry import Registry
from tokenkeys.services import consultations, opening_batch
from tokenkeys.services.access import open_registry
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
) -> OpenedBatch:
    """Open `pairs` (envelope, output) into outdir with the token's keys, audited.

    `unopened`: inputs found but not opened (opening_batch.collect's second list); they are
    reported and recorded with the rest. Raises the registry's errors before the
    PIN is read; a batch that stops (device failure, PIN error, Ctrl-C) raises
    after its end row is written.
    """
    # One registry for the whole batch: its connection is kept, no per-envelope write.
    with open_registry(config) as registry:
        if consultation is not None:
            bound = consultations.load_for_use(registry, service, consultation)
            for src, _dst in pairs:
                consultations.check_envelope(bound, src)
        opening_batch.check_outdir(outdir)  # a bad -o stops here, before any audit row
        batch_id = uuid.uuid4().hex
        record_start(registry, service, consultation, token_uri, batch_id, outdir, pairs)
        done: list[FileResult] = []

        def collect(result: FileResult) -> None:
            done.append(result)
            if on_result is not None:
                on_result(result)

        try:
            results = opening_batch.open_batch(pairs, outdir, token_uri, config, pins, jobs=jobs,
                                               on_result=collect, allow_final_try=allow_final_try,
                                               announce=announce, wait=wait)
        except BaseException as exc:
            _record_stopped(registry, service, consultation, token_uri, batch_id,
                            [*done, *unopened], exc, len(pairs) - len(done))
            raise
        results += unopened
        consultations.record_opening(registry, service, consultation, token_uri, results,
                                     batch=batch_id)
    return OpenedBatch(batch_id, tuple(results))


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
    try:
        consultations.record_opening(registry, service, reference, token_uri, finished,
                                     batch=batch_id, error=type(exc).__name__, left=left)
    except Exception as failed:  # never in place of the batch's own error
        # The start row already names every output; say why the end row is missing.
        log.warning("the end row of batch %s could not be recorded: %s", batch_id, failed)
        exc.add_note(_("the audit end row of batch {batch_id} could not be recorded: {name__}")
                     .format(batch_id=batch_id, name__=type(failed).__name__))
