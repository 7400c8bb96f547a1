"""Who may talk to the assistant, checked before any route runs (a plain ASGI middleware).

- Host must be the assistant's own loopback name and port: a page on a rebound DNS
  name (attacker.example -> 127.0.0.1) is refused (the Ollama CVE-2024-28224 fix).
- /v1 needs an Origin on the allow-list; nothing else gets CORS headers. Preflights
  (including Private Network Access) are answered for those origins only.
- Nothing that changes state is a "simple request": it needs the custom header and a
  JSON or octet-stream body, which an HTML form cannot send without a preflight.
- The assistant's own page (/ui) takes API calls from its own origin only, with the
  per-launch secret; no page can frame it.
- Limits: body size, requests at once, and seconds without a byte from the client.
"""

from __future__ import annotations

import hmac
from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenkeys.assistant import problems
from tokenkeys.assistant.settings import Settings
from tokenkeys.errors import AccessRefused, LimitExceeded, TokenKeysError
from tokenkeys.i18n import _, accepted, language

CLIENT_HEADER = "x-tokenkeys-client"
SECRET_HEADER = "x-tokenkeys-secret"
ENVELOPE_SUFFIX = "/envelopes"
ALLOWED_METHODS = "GET, POST, DELETE"
ALLOWED_HEADERS = "authorization, content-type, x-tokenkeys-client"
EXPOSED = "x-tokenkeys-recipient, x-tokenkeys-bytes, x-tokenkeys-remaining"
PUBLIC = frozenset({"/v1/client.js"})
UI_PAGES = frozenset({"/", "/ui", "/ui/app.js", "/ui/style.css"})
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
]


def is_envelope_post(method: str, path: str) -> bool:
    return method == "POST" and path.startswith("/v1/openings/") and path.endswith(
        ENVELOPE_SUFFIX)


class Guard:
    def __init__(self, app: ASGIApp, settings: Settings, secret: str) -> None:
        self.app = app
        self.settings = settings
        self.secret = secret
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Messages (refusals, errors, approvals) in the language the browser asks for.
        with language(accepted(Headers(scope=scope).get("accept-language"))):
            await self._guarded(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        cors = origin if origin in self.settings.origins else None
        try:
            self._check(scope, headers, origin)
        except TokenKeysError as exc:
            # Refused before anything ran: no CORS headers, so the page reads nothing.
            await problems.response(exc, _cors(None))(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await self._preflight(headers, cors)(scope, receive, send)
            return
        if self.in_flight >= self.settings.concurrency:
            busy = LimitExceeded(_("the assistant is busy ({concurrency} requests at once): "
                                   "try again shortly")
                                 .format(concurrency=self.settings.concurrency))
            await problems.response(busy, _cors(cors), status=503)(scope, receive, send)
            return
        limit = (self.settings.max_body if is_envelope_post(scope["method"], scope["path"])
                 else self.settings.max_json)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await problems.response(_too_large(limit), _cors(cors))(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, self._limited(limit, receive),
                           self._decorated(send, cors))
        finally:
            self.in_flight -= 1

    def _check(self, scope: Scope, headers: Headers, origin: str | None) -> None:
        host = headers.get("host", "")
        if host.lower() not in self.settings.own_hosts:
            raise AccessRefused(_("Host {host!r} is not this assistant's address: refused (a "
                                  "page on another name may be a DNS rebinding attack)")
                                .format(host=host)
                                )
        path, method = scope["path"], scope["method"]
        if path in UI_PAGES or path in PUBLIC:
            if method not in ("GET", "HEAD"):
                raise AccessRefused(_("only GET is allowed here"))
            if origin is not None and origin not in self.settings.own_origins | (
                    set(self.settings.origins) if path in PUBLIC else set()):
                raise AccessRefused(_("origin {origin} may not load this").format(origin=origin))
            return
        if path.startswith("/ui/api/"):
            self._check_ui(headers, origin, method)
            return
        if not path.startswith("/v1/"):
            raise AccessRefused(_("no such address on the assistant"))
        if origin is None:
            raise AccessRefused(_("a request without an Origin header is refused: only the "
                                  "platform's web pages may call the assistant"))
        if origin not in self.settings.origins:
            raise AccessRefused(_("origin {origin} is not on the assistant's list of "
                                  "platform origins").format(origin=origin))
        if method in ("GET", "HEAD", "OPTIONS"):
            return
        _check_not_simple(headers, is_envelope_post(method, path))

    def _check_ui(self, headers: Headers, origin: str | None, method: str) -> None:
        if method != "POST" or origin not in self.settings.own_origins:
            raise AccessRefused(_("the assistant's own page is the only caller of this address"))
        if not hmac.compare_digest(headers.get(SECRET_HEADER, "").encode(),
                                   self.secret.encode()):
            raise AccessRefused(_("this request does not carry the assistant's launch secret"))
        _check_not_simple(headers, False)

    def _preflight(self, headers: Headers, cors: str | None) -> Any:
        from starlette.responses import Response

        if cors is None:  # _check let it through: it was for a page or a UI address
            return problems.response(AccessRefused(_("no preflight here")))
        extra = {"access-control-allow-methods": ALLOWED_METHODS,
                 "access-control-allow-headers": ALLOWED_HEADERS,
                 "access-control-max-age": "600"}
        if headers.get("access-control-request-private-network") == "true":
            extra["access-control-allow-private-network"] = "true"
        return Response(status_code=204, headers={**_cors(cors), **extra})

    def _limited(self, limit: int, receive: Receive) -> Receive:
        seen = 0
        idle = self.settings.idle_timeout

        async def counted() -> Message:
            nonlocal seen
            try:
                with anyio.fail_after(idle):
                    message = await receive()
            except TimeoutError:
                raise LimitExceeded(_("no data from the page for {idle:g} s: request abandoned")
                                    .format(idle=idle)) from None
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit)
            return message
        return counted

    def _decorated(self, send: Send, cors: str | None) -> Send:
        extra = [(k.encode(), v.encode()) for k, v in _cors(cors).items()]

        async def decorated(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS, *extra]
            await send(message)
        return decorated


def _check_not_simple(headers: Headers, octets: bool) -> None:
    if headers.get(CLIENT_HEADER) != "1":
        raise AccessRefused(_("a request that changes something needs the header "
                              "X-Tokenkeys-Client: 1 (a plain HTML form cannot send it)"))
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    wanted = "application/octet-stream" if octets else "application/json"
    if kind != wanted:
        raise AccessRefused(_("this request needs a {wanted} body, not {kind!r}").format(
            wanted=wanted, kind=kind or "none"))


def _too_large(limit: int) -> LimitExceeded:
    return LimitExceeded(_("the request body is over the assistant's limit of {limit} bytes")
                         .format(limit=limit)
                         )


def _cors(origin: str | None) -> dict[str, str]:
    if origin is None:
        return {"vary": "Origin"}
    return {"access-control-allow-origin": origin, "vary": "Origin",
            "access-control-expose-headers": EXPOSED}
