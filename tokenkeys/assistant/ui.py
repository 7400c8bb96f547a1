"""The assistant's own window: pairing codes, approvals with the PIN, locked origins.

Served on the assistant's own origin, never framed (frame-ancestors 'none'); its API
calls come from that origin only and carry the per-launch secret, which the page
takes from its address's fragment (printed at launch, never sent in a request line).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tokenkeys.assistant import pages
from tokenkeys.assistant.state import assistant_of, json_body, run
from tokenkeys.assistant.state import text_field as field
from tokenkeys.errors import UsageError
from tokenkeys.i18n import _

STATIC = Path(__file__).with_name("static")
FILES = {"/ui": ("ui.html", "text/html; charset=utf-8"),
         "/ui/app.js": ("ui.js", "text/javascript"),
         "/ui/style.css": ("style.css", "text/css")}


async def page(request: Request) -> Response:
    name, kind = FILES[request.url.path]
    if name.endswith(".css"):
        return Response((STATIC / name).read_bytes(), media_type=kind)
    return Response(pages.render(name, pages.language_of_request(request.headers)),
                    media_type=kind, headers={"vary": "accept-language"})


async def home(_request: Request) -> Response:
    return RedirectResponse("/ui")


async def state(request: Request) -> Response:
    a = assistant_of(request)
    await json_body(request)
    with a.sessions_lock:
        sessions = [s.facts().to_json() for s in a.sessions.values()]
    return JSONResponse({
        "codes": [{"origin": o, "code": c} for o, c in a.desk.pending().items()],
        "approvals": [r.to_json() for r in a.consent.pending()],
        "locked": a.desk.locked_origins(),
        "sessions": sessions,
        "pairings": [p.to_json() for p in await run(a.store.list)],
        "origins": list(a.settings.origins),
    })


async def answer(request: Request) -> Response:
    a = assistant_of(request)
    data = await json_body(request)
    approve = data.get("approve")
    pin = data.get("pin")
    if not isinstance(approve, bool) or (pin is not None and not isinstance(pin, str)):
        raise UsageError(_("'approve' must be true or false and 'pin' text"))
    a.consent.answer(field(data, "id") or "", approve, pin)
    return JSONResponse({"answered": True})


async def unlock(request: Request) -> Response:
    a = assistant_of(request)
    a.desk.unlock(field(await json_body(request), "origin") or "")
    return JSONResponse({"unlocked": True})


ROUTES = [
    Route("/", home, methods=["GET"]),
    *(Route(path, page, methods=["GET"]) for path in FILES),
    Route("/ui/api/state", state, methods=["POST"]),
    Route("/ui/api/answer", answer, methods=["POST"]),
    Route("/ui/api/unlock", unlock, methods=["POST"]),
]
