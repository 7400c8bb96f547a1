"""`tokenkeys doctor`: modules, tokens, relevant mechanisms, expiring keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from tokenkeys.cli.context import App, pass_app
from tokenkeys.drivers import list_modules, list_tokens, open_token
from tokenkeys.errors import DoctorProblems, TokenKeysError
from tokenkeys.services import token_keys

if TYPE_CHECKING:  # SQLAlchemy loads only when doctor runs (CLI start-up time)
    from tokenkeys.services.doctor import Logins

# What tokenkeys uses, and for what.
RELEVANT = {
    "RSA_PKCS_KEY_PAIR_GEN": "generate RSA keys",
    "EC_KEY_PAIR_GEN": "generate EC keys",
    "RSA_PKCS_OAEP": "open OAEP envelopes on the device",
    "RSA_X_509": "open OAEP-SHA-2 envelopes (raw RSA + software decoding)",
    "RSA_PKCS": "open PKCS#1 v1.5 envelopes",
    "ECDH1_DERIVE": "open ECDH envelopes",
    "SHA256_RSA_PKCS": "sign certificates (RSA)",
    "ECDSA": "sign certificates (EC)",
    "AES_KEY_WRAP_PAD": "share keys between tokens",
}


def _check_token(info_uri: str, app: App, logins: Logins) -> dict[str, Any]:
    report: dict[str, Any] = {"uri": info_uri}
    try:
        with open_token(info_uri, app.config) as tok:
            mechs = tok.mechanisms()
            report["mechanisms"] = {m: (m in mechs) for m in RELEVANT}
            if not logins.pin_given():
                # Public objects only: no PIN needed to say what each key can open.
                records = token_keys.list_keys(tok)
                report["opens"] = {r.designation: list(r.opens) for r in records}
                report["keys"] = "set TOKENKEYS_PIN to check key expiry"
                return report
            logins.login(tok)
            records = token_keys.list_keys(tok)
            report["opens"] = {r.designation: list(r.opens) for r in records}
            report["keys"] = [r.to_json() for r in records if r.status != "valid"]
    except TokenKeysError as exc:
        report["error"] = str(exc)
    return report


@click.command()
@click.option("--days", type=click.IntRange(0), default=30, show_default=True,
              help="Report keys of open consultations expiring within this many days.")
@pass_app
@click.pass_context
def doctor(ctx: click.Context, app: App, days: int) -> None:
    """Check modules, tokens, mechanisms, key expiry and the registry. Never prompts for a PIN.

    Exits non-zero with one line per registry problem.
    """
    modules = list_modules(app.config)
    tokens = list_tokens(app.config)
    from tokenkeys.services.doctor import Logins

    logins = Logins()
    reports = [_check_token(t.uri, app, logins) for t in tokens]
    registry_report = _check_registry(app, days, logins)

    def human() -> None:
        app.say("modules: " + (", ".join(modules) if modules else "none found"))
        if not tokens:
            app.say("tokens: none found")
        for info, rep in zip(tokens, reports, strict=True):
            app.say("")
            app.say(f"token {info.label!r} ({info.manufacturer} {info.model}, "
                    f"serial {info.serial}) {', '.join(info.flags)}")
            if "error" in rep:
                app.say(f"  error: {rep['error']}")
                continue
            for mech, present in rep["mechanisms"].items():
                app.say(f"  {'ok ' if present else 'no '} {mech:22} {RELEVANT[mech]}")
            for name, kinds in rep["opens"].items():
                app.say(f"  key {name!r} opens: {', '.join(kinds) or 'nothing on this device'}")
            keys = rep["keys"]
            if isinstance(keys, str):
                app.say(f"  keys: {keys}")
            elif not keys:
                app.say("  keys: none expiring or expired")
            for k in keys if isinstance(keys, list) else []:
                app.say(f"  key {k['designation']!r}: {k['status']} (not after {k['not_after']})")
        app.say("")
        for note in registry_report.notes:
            app.say(f"note: {note}")
        for problem in registry_report.problems:
            app.say(f"problem: {problem}")
        if not registry_report.problems:
            app.say("registry: no problems")

    app.emit({"modules": modules, "tokens": reports, "problems": registry_report.problems,
              "notes": registry_report.notes}, human)
    if registry_report.problems:
        ctx.exit(DoctorProblems.exit_code)


def _check_registry(app: App, days: int, logins: Logins) -> Any:
    from tokenkeys.cli.registry_opts import registry
    from tokenkeys.services.doctor import check_registry

    with registry(app) as reg:
        return check_registry(reg, lambda uri: open_token(uri, app.config), days=days,
                              logins=logins)
