"""/v1: status, pairing, tokens, keys, consultations. Each route checks the caller,
asks the user when a key or a token is involved, calls one service, renders JSON."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tokenkeys import __version__
from tokenkeys.assistant import texts
from tokenkeys.assistant.state import (
    assistant_of,
    caller,
    int_field,
    json_body,
    run,
    text_field,
)
from tokenkeys.errors import UsageError
from tokenkeys.i18n import _
from tokenkeys.services import consultations, service_keys
from tokenkeys.services.access import open_registry
from tokenkeys.services.opening_session import is_default, known_token, tokens
from tokenkeys.types import DEFAULT_ALGORITHM, Algorithm

STATIC = Path(__file__).with_name("static")


async def status(request: Request) -> Response:
    """The platform's "état de l'assistant": no token needed."""
    a = assistant_of(request)
    origin = request.headers["origin"]
    return JSONResponse({"ready": True, "version": __version__, "api": 1,
                         "paired": a.store.is_paired(origin),
                         "pairing_locked": a.desk.locked(origin)})


async def pairing_start(request: Request) -> Response:
    a = assistant_of(request)
    origin = request.headers["origin"]
    await json_body(request)
    code = a.desk.start(origin)
    a.announce(_(texts.PAIRING_CODE).format(origin=origin, code=code))
    return JSONResponse({"started": True, "digits": len(code),
                         "expires_in": round(a.desk.lifetime)})


async def pairing_confirm(request: Request) -> Response:
    a = assistant_of(request)
    origin = request.headers["origin"]
    code = text_field(await json_body(request), "code") or ""
    token = await run(lambda: a.desk.confirm(origin, code.strip()))
    return JSONResponse({"paired": True, "origin": origin, "token": token})


async def token_list(request: Request) -> Response:
    caller(request)
    a = assistant_of(request)
    found = await run(lambda: tokens(a.config, a.lane))
    return JSONResponse({"tokens": [
        {"label": t.label, "uri": t.uri, "manufacturer": t.manufacturer, "model": t.model,
         "serial": t.serial, "pinpad": "protected-auth-path" in t.flags,
         "default": is_default(a.config, t)} for t in found]})


def _service(request: Request, data: dict[str, object] | None = None) -> str:
    given = (data or {}).get("service", request.query_params.get("service"))
    if given is None:
        return assistant_of(request).config.service
    return text_field({"service": given}, "service") or ""


async def key_list(request: Request) -> Response:
    caller(request)
    a = assistant_of(request)
    service = _service(request)
    keys = await run(lambda: service_keys.listed(a.config, service))
    return JSONResponse({"service": service, "keys": [k.to_json() for k in keys]})


async def key_generate(request: Request) -> Response:
    origin = caller(request)
    a = assistant_of(request)
    data = await json_body(request)
    name = text_field(data, "designation") or ""
    cn = text_field(data, "cn", required=False)
    days = int_field(data, "days", 365, low=1, high=3650)
    algorithm = Algorithm.parse(text_field(data, "algorithm", required=False)
                                or DEFAULT_ALGORITHM.value)
    backup = data.get("backup", False)
    if not isinstance(backup, bool):
        raise UsageError(_("the field 'backup' must be true or false"))
    service = _service(request, data)
    token_uri = await run(lambda: known_token(a.config, a.lane,
                                              text_field(data, "token", required=False)))
    await run(lambda: service_keys.check_free(a.config, service, name))
    a.check_token_free(token_uri)
    template = _(texts.APPROVE_GENERATE_BACKUP) if backup else _(texts.APPROVE_GENERATE)
    text = template.format(origin=origin, name=name, algorithm=algorithm.value, days=days,
                           token=a.token_name(token_uri))
    needs_pin = await run(lambda: a.needs_pin(token_uri))
    pin = await run(lambda: a.consent.ask(origin=origin, operation="generate", text=text,
                                          token=a.token_name(token_uri), needs_pin=needs_pin))
    pins = a.pins_for(token_uri, pin)
    done = await run(lambda: a.lane.run(lambda: service_keys.generate(
        a.config, service, lambda: a.logged_in(token_uri, pins), name, cn=cn,
        algorithm=algorithm, days=days, backup=backup)))
    return JSONResponse(done.to_json(), status_code=201)


async def key_certificate(request: Request) -> Response:
    origin = caller(request)
    a = assistant_of(request)
    data = await json_body(request)
    name = text_field(request.path_params, "name") or ""
    pem = data.get("certificate_pem")
    chain = data.get("chain_pem")
    if not isinstance(pem, str) or (chain is not None and not isinstance(chain, str)):
        raise UsageError(_("the field 'certificate_pem' (and 'chain_pem', when given) must "
                           "be PEM text"))
    service = _service(request, data)
    token_uri = await run(lambda: known_token(a.config, a.lane,
                                              text_field(data, "token", required=False)))
    a.check_token_free(token_uri)
    text = _(texts.APPROVE_CERTIFY).format(origin=origin, name=name,
                                        token=a.token_name(token_uri))
    needs_pin = await run(lambda: a.needs_pin(token_uri))
    pin = await run(lambda: a.consent.ask(origin=origin, operation="certify", text=text,
                                          token=a.token_name(token_uri), needs_pin=needs_pin))
    pins = a.pins_for(token_uri, pin)

    def certify() -> dict[str, object]:
        with a.logged_in(token_uri, pins) as token:
            done = service_keys.certify(a.config, service, token, name, pem, chain)
        return {"key": done.record.to_json(), "replaced": done.imported.replaced}
    return JSONResponse(await run(lambda: a.lane.run(certify)))


async def recipients(request: Request) -> Response:
    caller(request)
    a = assistant_of(request)
    service, reference = _service(request), text_field(request.path_params, "reference") or ""

    def pems() -> list[str]:
        with open_registry(a.config) as registry:
            found = consultations.load_for_use(registry, service, reference)
        return service_keys.recipient_pems(found)
    return JSONResponse({"consultation": reference, "recipients": await run(pems)})


async def consultation_create(request: Request) -> Response:
    caller(request)
    a = assistant_of(request)
    data = await json_body(request)
    reference = text_field(data, "reference") or ""
    key = text_field(data, "key") or ""
    closes = text_field(data, "closes", required=False)
    title = text_field(data, "title", required=False)
    no_backup = data.get("no_backup", False) is True
    service = _service(request, data)

    def create() -> dict[str, object]:
        with open_registry(a.config) as registry:
            made = consultations.create(registry, service, reference, key, closes=closes,
                                        title=title, no_backup=no_backup)
        return {"consultation": made.consultation.to_json(), "warnings": list(made.warnings)}
    return JSONResponse(await run(create), status_code=201)


async def consultation_close(request: Request) -> Response:
    caller(request)
    a = assistant_of(request)
    await json_body(request)
    service, reference = _service(request), text_field(request.path_params, "reference") or ""

    def close() -> dict[str, object]:
        with open_registry(a.config) as registry:
            return {"consultation": registry.close_consultation(service, reference).to_json()}
    return JSONResponse(await run(close))


async def client_js(_request: Request) -> Response:
    return Response((STATIC / "client.js").read_bytes(), media_type="text/javascript")


ROUTES = [
    Route("/v1/status", status, methods=["GET"]),
    Route("/v1/client.js", client_js, methods=["GET"]),
    Route("/v1/pairing/start", pairing_start, methods=["POST"]),
    Route("/v1/pairing/confirm", pairing_confirm, methods=["POST"]),
    Route("/v1/tokens", token_list, methods=["GET"]),
    Route("/v1/keys", key_list, methods=["GET"]),
    Route("/v1/keys", key_generate, methods=["POST"]),
    Route("/v1/keys/{name}/certificate", key_certificate, methods=["POST"]),
    Route("/v1/consultations", consultation_create, methods=["POST"]),
    Route("/v1/consultations/{reference}/recipients", recipients, methods=["GET"]),
    Route("/v1/consultations/{reference}/close", consultation_close, methods=["POST"]),
]
