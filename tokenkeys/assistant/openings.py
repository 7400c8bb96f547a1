"""/v1/openings: an opening session (one approval, one PIN), then one envelope per POST.

Each envelope is spooled to a private file as it arrives (bounded memory, the body
limit and the idle timeout hold), opened by the session (services.opening_session:
nothing unauthenticated is released), and its plaintext streamed back from the
authenticated output, which is unlinked first so that nothing stays on disk.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tokenkeys.assistant import problems, texts
from tokenkeys.assistant.state import Assistant, assistant_of, caller, int_field, json_body, run
from tokenkeys.assistant.state import text_field as field
from tokenkeys.errors import SessionOver
from tokenkeys.i18n import _
from tokenkeys.services.opening_files import DEVICE_FAILURES, FileResult, error_class
from tokenkeys.services.opening_session import OpeningSession, known_token

CHUNK = 1024 * 1024


async def start(request: Request) -> Response:
    origin = caller(request)
    a = assistant_of(request)
    data = await json_body(request)
    reference = field(data, "consultation") or ""
    count = int_field(data, "count", 1, low=1, high=a.settings.session_count)
    minutes = int_field(data, "minutes", max(1, round(a.settings.session_seconds / 60)),
                        low=1, high=max(1, round(a.settings.session_seconds / 60)))
    service = field(data, "service", required=False) or a.config.service
    token_uri = await run(lambda: known_token(a.config, a.lane,
                                              field(data, "token", required=False)))
    a.check_token_free(token_uri)
    session = await run(lambda: OpeningSession.prepare(
        a.config, a.lane, origin=origin, service=service, consultation=reference,
        token_uri=token_uri, limit=count, seconds=minutes * 60, workdir=a.workdir))
    try:
        text = _(texts.APPROVE_OPEN).format(origin=origin, count=count, reference=reference,
                                         key=session.bound.key.designation, minutes=minutes)
        needs_pin = await run(lambda: a.needs_pin(token_uri))
        pin = await run(lambda: a.consent.ask(origin=origin, operation="open", text=text,
                                              token=a.token_name(token_uri), needs_pin=needs_pin))
        await run(lambda: session.login(a.config, a.pins_for(token_uri, pin)))
    except BaseException as exc:
        why = type(exc).__name__
        await run(lambda: session.close(error=why))
        raise
    with a.sessions_lock:
        a.sessions[session.id] = session
    return JSONResponse(session.facts().to_json(), status_code=201)


def _session(a: Assistant, request: Request, origin: str) -> OpeningSession:
    with a.sessions_lock:
        found = a.sessions.get(request.path_params["session"])
    if found is None or found.origin != origin:
        raise SessionOver(_("there is no opening session {id} for this page: start one").format(
            id=request.path_params["session"]))
    return found


async def show(request: Request) -> Response:
    session = _session(assistant_of(request), request, caller(request))
    return JSONResponse(session.facts().to_json())


async def close(request: Request) -> Response:
    a = assistant_of(request)
    session = _session(a, request, caller(request))
    with a.sessions_lock:
        a.sessions.pop(session.id, None)
    await run(session.close)
    return JSONResponse({**session.facts().to_json(), "closed": True})


async def envelope(request: Request) -> Response:
    a = assistant_of(request)
    session = _session(a, request, caller(request))
    if session.over:
        raise SessionOver(_("this opening session is over (count or time limit): start a new "
                            "one"))
    spool = a.workdir / f"{uuid.uuid4().hex}.p7m"
    try:
        await _spool(request, spool)
        try:
            result = await run(lambda: session.open_one(spool))
        except DEVICE_FAILURES:
            # The device failed, not the envelope: the session ends, as a batch would stop.
            with a.sessions_lock:
                a.sessions.pop(session.id, None)
            await run(lambda: session.close(error="DeviceFailure"))
            raise
    finally:
        spool.unlink(missing_ok=True)
    remaining = session.facts().to_json()["remaining"]
    if result.status != "opened":
        return _failed(result, remaining)
    return _plaintext(Path(result.output), result, remaining)


async def _spool(request: Request, path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        async for chunk in request.stream():
            out.write(chunk)  # small chunks (the server's), to a local file


def _failed(result: FileResult, remaining: object) -> Response:
    cls = error_class(result.error_type)
    exc = cls.__new__(cls)
    Exception.__init__(exc, result.error or "")
    status = problems.status_of(exc)
    return JSONResponse(problems.body(result.error_type or "TokenKeysError", result.error or "",
                                      exit_code=cls.exit_code,
                                      recipients=list(result.recipients)
                                      if result.recipients else None),
                        status_code=status, headers={"x-tokenkeys-remaining": str(remaining)})


def _plaintext(path: Path, result: FileResult, remaining: object) -> Response:
    # Open, then unlink: the plaintext lives only as long as the response.
    fd = os.open(path, os.O_RDONLY)
    path.unlink(missing_ok=True)
    size = os.fstat(fd).st_size

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                chunk = await anyio.to_thread.run_sync(os.read, fd, CHUNK)
                if not chunk:
                    break
                yield chunk
        finally:
            os.close(fd)
    return StreamingResponse(body(), media_type="application/octet-stream", headers={
        "content-length": str(size), "x-tokenkeys-recipient": quote(result.recipient or ""),
        "x-tokenkeys-bytes": str(size), "x-tokenkeys-remaining": str(remaining)})


ROUTES = [
    Route("/v1/openings", start, methods=["POST"]),
    Route("/v1/openings/{session}", show, methods=["GET"]),
    Route("/v1/openings/{session}", close, methods=["DELETE"]),
    Route("/v1/openings/{session}/envelopes", envelope, methods=["POST"]),
]
