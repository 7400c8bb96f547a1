"""Error bodies: {"error": {"type", "message", ...}} with the CLI's --json types, and one
HTTP status per error class (the most specific class in the table wins)."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from tokenkeys import errors
from tokenkeys.i18n import _

# Most specific first: the first class an error is an instance of gives the status.
STATUS: tuple[tuple[type[errors.TokenKeysError], int], ...] = (
    (errors.NotPaired, 401),
    (errors.PairingRefused, 403),
    (errors.AccessRefused, 403),
    (errors.ApprovalRefused, 403),
    (errors.SessionOver, 410),
    (errors.LimitExceeded, 413),
    (errors.PinError, 403),
    (errors.KeyExists, 409),
    (errors.KeyNotFound, 404),
    (errors.CertificateRefused, 422),
    (errors.KeyProblem, 409),
    (errors.NotRegistered, 404),
    (errors.PolicyRefused, 409),
    (errors.OutputExists, 409),
    (errors.NoMatchingRecipient, 422),
    (errors.EnvelopeError, 422),
    (errors.MechanismUnsupported, 422),
    (errors.UsageError, 400),
    (errors.RegistryError, 503),
    (errors.ModuleNotFound, 503),
    (errors.TokenNotFound, 503),
    (errors.DeviceError, 503),
)


def status_of(exc: errors.TokenKeysError) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 500)


def body(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message,
                      **{k: v for k, v in extra.items() if v is not None}}}


def facts(exc: errors.TokenKeysError) -> dict[str, Any]:
    """What a page may act on, beyond the message: tries left, attempts left, recipients."""
    out: dict[str, Any] = {"exit_code": exc.exit_code}
    for name in ("tries_left", "attempts_left", "locked", "recipients"):
        value = getattr(exc, name, None)
        if value is not None:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def response(exc: errors.TokenKeysError, headers: dict[str, str] | None = None,
             status: int | None = None) -> JSONResponse:
    return JSONResponse(body(type(exc).__name__, str(exc), **facts(exc)),
                        status_code=status or status_of(exc), headers=headers)


def internal(headers: dict[str, str] | None = None) -> JSONResponse:
    # The message of an unexpected exception is not shown: it could carry anything.
    return JSONResponse(body("InternalError", _("internal error in the assistant; see its "
                                                "console (run with --debug for details)")),
                        status_code=500, headers=headers)
