"""`tokenkeys doctor`: modules, tokens, relevant mechanisms, expiring keys."""

from __future__ import annotations

import os
from typing import Any

import click

from tokenkeys import manager
from tokenkeys.cli.context import App, pass_app
from tokenkeys.drivers import list_modules, list_tokens, open_token
from tokenkeys.errors import TokenKeysError
from tokenkeys.types import PinSource

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


def _check_token(info_uri: str, app: App) -> dict[str, Any]:
    report: dict[str, Any] = {"uri": info_uri}
    try:
        with open_token(info_uri, app.config) as tok:
            mechs = tok.mechanisms()
            report["mechanisms"] = {m: (m in mechs) for m in RELEVANT}
            if os.environ.get("TOKENKEYS_PIN") is None:
                report["keys"] = "set TOKENKEYS_PIN to check key expiry"
                return report
            tok.login(PinSource(interactive=False))
            report["keys"] = [
                r.to_json() for r in manager.list_keys(tok) if r.status != "valid"
            ]
    except TokenKeysError as exc:
        report["error"] = str(exc)
    return report


@click.command()
@pass_app
def doctor(app: App) -> None:
    """Check modules, tokens, mechanisms and key expiry. Never prompts for a PIN."""
    modules = list_modules(app.config)
    tokens = list_tokens(app.config)
    reports = [_check_token(t.uri, app) for t in tokens]

    def human() -> None:
        app.say("modules: " + (", ".join(modules) if modules else "none found"))
        if not tokens:
            app.say("tokens: none found")
        for info, rep in zip(tokens, reports, strict=True):
            app.say(f"\ntoken {info.label!r} ({info.manufacturer} {info.model}, "
                    f"serial {info.serial}) {', '.join(info.flags)}")
            if "error" in rep:
                app.say(f"  error: {rep['error']}")
                continue
            for mech, present in rep["mechanisms"].items():
                app.say(f"  {'ok ' if present else 'no '} {mech:22} {RELEVANT[mech]}")
            keys = rep["keys"]
            if isinstance(keys, str):
                app.say(f"  keys: {keys}")
            elif not keys:
                app.say("  keys: none expiring or expired")
            for k in keys if isinstance(keys, list) else []:
                app.say(f"  key {k['designation']!r}: {k['status']} (not after {k['not_after']})")

    app.emit({"modules": modules, "tokens": reports}, human)
