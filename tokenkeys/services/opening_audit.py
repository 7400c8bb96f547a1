"""The audit rows of a batch, written beside it (services/opening.py says why their order
is the guarantee).

The registry's side (importing SQLAlchemy, about 0.2 s of CPU; opening the database;
the consultation's checks; the rows) runs in a child forked as soon as the command
starts, so that it imports on the other core while this process loads the token's
module, finds the token and reads the PIN; this process then never imports
SQLAlchemy. Where this process cannot fork (it has threads, or has loaded a PKCS#11
module: the assistant, a test), the same side runs on a thread.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenkeys.config import Config
from tokenkeys.errors import RegistryUnavailable
from tokenkeys.i18n import _
from tokenkeys.services.crossing import described, rebuilt, start_method

if TYPE_CHECKING:  # the envelope layer is the parent's to import
    from tokenkeys.services.opening_files import FileResult

log = logging.getLogger("tokenkeys.opening")


class AuditSide:
    """Start it first thing; begin() gives it the batch; ready() waits for the start
    row (raising what the registry raised); finish() writes the end row; close()."""

    def __init__(self, config: Config) -> None:
        self.batch_id = uuid.uuid4().hex
        self._conn, far = multiprocessing.Pipe()
        self._started = False
        self.error: BaseException | None = None  # the registry's, at the start
        if start_method() == "fork":
            ctx = multiprocessing.get_context("fork")
            self._side: Any = ctx.Process(target=_side, args=(config, far, self._conn),
                                          name="tokenkeys-audit", daemon=True)
            self._side.start()
            far.close()
        else:
            self._side = threading.Thread(target=_side, args=(config, far),
                                          name="tokenkeys-audit", daemon=True)
            self._side.start()

    def begin(self, service: str, consultation: str | None, token_uri: str, outdir: Path,
              pairs: Sequence[tuple[Path, Path]]) -> None:
        self._send((service, consultation, token_uri, self.batch_id, outdir, list(pairs)))

    def ready(self) -> None:
        """Wait for the start row; raise the registry's error (again on each call)."""
        if not self._started and self.error is None:
            try:
                self._receive()
                self._started = True
            except BaseException as exc:
                self.error = exc
        if self.error is not None:
            raise self.error

    def settle(self) -> bool:
        """After the batch raised: wait for the start; True if its row was written."""
        with contextlib.suppress(BaseException):
            self.ready()
        return self._started

    def finish(self, results: Sequence[FileResult], *, error: str | None = None,
               left: int = 0) -> None:
        """The end row; raises the registry's error."""
        self._send((list(results), error, left))
        self._receive()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a side that has already left
            self._conn.send(None)
        self._side.join(10)
        if isinstance(self._side, multiprocessing.process.BaseProcess) and self._side.is_alive():
            self._side.kill()
            self._side.join()
        self._conn.close()

    def _send(self, message: Any) -> None:
        try:
            self._conn.send(message)
        except OSError:
            raise _stopped() from None

    def _receive(self) -> None:
        try:
            reply = self._conn.recv()
        except (EOFError, OSError):
            raise _stopped() from None
        if reply[0] != "ok":
            raise rebuilt(*reply[1:])


def _stopped() -> RegistryUnavailable:
    return RegistryUnavailable(_("the audit process stopped before the batch's rows were "
                                 "written; its open-start row, if written, names every output"))


def _side(config: Config, conn: Any, parents_end: Any = None) -> None:
    """The registry's side: the start row, then the end row, one message each."""
    if parents_end is not None:  # a forked child: the parent's end is the parent's
        parents_end.close()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent ends the batch
    try:
        # The slow import first, while the parent does its own.
        from tokenkeys.services import consultations
        from tokenkeys.services.access import open_registry

        batch = _receive(conn)
        if batch is None:
            return
        service, reference, token_uri, batch_id, outdir, pairs = batch
        with open_registry(config) as registry:
            if reference is not None:
                bound = consultations.load_for_use(registry, service, reference)
                for src, _dst in pairs:
                    consultations.check_envelope(bound, src)
            record_start(registry, service, reference, token_uri, batch_id, outdir, pairs)
            conn.send(("ok",))
            end = _receive(conn)
            if end is None:
                return
            results, error, left = end
            consultations.record_opening(registry, service, reference, token_uri, results,
                                         batch=batch_id, error=error, left=left)
            conn.send(("ok",))
    except BaseException as exc:  # raised again in the parent (_receive)
        with contextlib.suppress(OSError):
            conn.send(("error", *described(exc)))
    finally:
        if parents_end is not None:
            conn.close()
            os._exit(0)  # nothing of the parent's (atexit, buffers) runs twice


def _receive(conn: Any) -> Any:
    try:
        return conn.recv()
    except (EOFError, OSError):  # the parent is gone
        return None


def record_start(registry: Any, service: str, reference: str | None, token_uri: str,
                 batch_id: str, outdir: Path, pairs: Sequence[tuple[Path, Path]]) -> None:
    """The "open-start" row: every planned envelope and the output it may become.

    Names only, no digests: hashing every envelope here would read each one twice
    (the end row's digests are taken while the envelopes are opened)."""
    registry.record_event("open-start", service=service, subject=reference, details={
        "batch": batch_id, "token": token_uri, "outdir": os.path.abspath(outdir),
        "envelopes": [{"file": src.name, "output": os.path.abspath(dst)}
                      for src, dst in pairs]})
