"""Build the assistant's ASGI application and run it with uvicorn on loopback.

Stopping it (Ctrl-C, SIGTERM): uvicorn stops accepting, lets the requests in flight
finish (an envelope being opened completes or fails whole), then the lifespan's end
refuses what still waits for approval, closes every opening session (its audit rows
written, the token logged out) and removes the private work directory.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from tokenkeys.assistant import api, openings, problems, texts, ui
from tokenkeys.assistant.consent import console_loop
from tokenkeys.assistant.guard import Guard
from tokenkeys.assistant.settings import Settings, check_bind
from tokenkeys.assistant.state import Assistant, run
from tokenkeys.config import Config
from tokenkeys.errors import TokenKeysError
from tokenkeys.i18n import _

log = logging.getLogger("tokenkeys.assistant")
SWEEP_SECONDS = 2.0


async def _known(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TokenKeysError)
    return problems.response(exc)


async def _unknown(_request: Request, exc: Exception) -> Response:
    log.error("internal error in the assistant", exc_info=exc)
    return problems.internal()


def _sweep(a: Assistant, stop: threading.Event) -> None:
    """Close sessions whose count or time is over (they log out at once)."""
    while not stop.wait(SWEEP_SECONDS):
        with a.sessions_lock:
            over = [s for s in a.sessions.values() if s.over]
            for s in over:
                a.sessions.pop(s.id, None)
        for s in over:
            try:
                s.close()
            except Exception:  # a failing audit write must not stop the sweeper
                log.exception("closing opening session %s", s.id)


def build(settings: Settings, config: Config,
          announce: Callable[[str], None] | None = None) -> tuple[Any, Assistant]:
    """The guarded application and its state (tests use both through a TestClient)."""
    check_bind(settings.host)
    assistant = Assistant(settings, config)
    if announce is not None:
        assistant.announce = announce
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        threading.Thread(target=_sweep, args=(assistant, stop), daemon=True,
                         name="tokenkeys-sweep").start()
        if settings.console:
            threading.Thread(target=console_loop, args=(assistant.consent, stop), daemon=True,
                             name="tokenkeys-console").start()
        try:
            yield
        finally:
            stop.set()
            await run(assistant.shutdown)

    app = Starlette(routes=[*api.ROUTES, *openings.ROUTES, *ui.ROUTES], lifespan=lifespan,
                    exception_handlers={TokenKeysError: _known, Exception: _unknown})
    app.state.assistant = assistant
    return Guard(app, settings, assistant.secret), assistant


def serve(settings: Settings, config: Config, *, open_window: bool = False) -> None:
    """Run until Ctrl-C or SIGTERM."""
    import uvicorn

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    app, assistant = build(settings, config, announce=say)
    say(_(texts.STARTED).format(url=settings.base_url, window=assistant.window_url))
    say(_(texts.ORIGINS).format(origins=", ".join(settings.origins)) if settings.origins
        else _(texts.NO_ORIGINS))
    if open_window:
        import webbrowser

        webbrowser.open(assistant.window_url)
    server = uvicorn.Server(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning",
        timeout_keep_alive=int(settings.idle_timeout), timeout_graceful_shutdown=60,
        server_header=False, date_header=False, lifespan="on"))
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again under the
    # handlers it found: these make that a clean return instead of a death by signal.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _sig, _frame: None)
    server.run()
    say(_(texts.STOPPED))
