"""`tokenkeys assistant demo-platform`: a stand-in for the procurement platform's pages,
served on another loopback origin, so the whole flow can be seen on one machine.

Two screens: administration (the assistant's state, pairing, the list of key pairs,
"Create a key pair" with the backup flag) and opening (open the bids of a
consultation, one result per envelope). It holds no secret and uses only the
assistant's public client module (/v1/client.js).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tokenkeys.assistant import pages
from tokenkeys.assistant.settings import DEFAULT_PORT, DEMO_PORT, check_bind
from tokenkeys.i18n import _

STATIC = Path(__file__).with_name("static")
PAGES = {"/admin": "demo-admin.html", "/opening": "demo-opening.html",
         "/demo.js": "demo.js", "/demo.css": "style.css"}
KINDS = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}


def build(assistant_url: str) -> Any:
    async def page(request: Request) -> Response:
        name = PAGES[request.url.path]
        if name.endswith(".css"):
            body = (STATIC / name).read_text(encoding="utf-8")
        else:
            body = pages.render(name, pages.language_of_request(request.headers))
        if name.endswith(".html"):
            body = body.replace("{{assistant}}", assistant_url)
        return Response(body, media_type=KINDS[Path(name).suffix],
                        headers={"cache-control": "no-store", "vary": "accept-language"})

    async def home(_request: Request) -> Response:
        return RedirectResponse("/admin")

    return Starlette(routes=[Route("/", home), *(Route(p, page) for p in PAGES)])


def serve(*, port: int | None = None, assistant_url: str | None = None, host: str = "127.0.0.1"
          ) -> None:
    import uvicorn

    port = port or DEMO_PORT
    check_bind(host)
    url = assistant_url or f"http://127.0.0.1:{DEFAULT_PORT}"
    print(_("The demo platform is at http://{host}:{port}/admin; start the assistant with "
            "--origin http://{host}:{port}").format(host=host, port=port),
          file=sys.stderr, flush=True)
    uvicorn.run(build(url), host=host, port=port, log_level="warning")
