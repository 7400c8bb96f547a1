"""`tokenkeys key adopt` and `tokenkeys key renew` (registry-aware key commands)."""

from __future__ import annotations

from pathlib import Path

import click

from tokenkeys import keyalg
from tokenkeys.cli.context import (
    FILE_PATH,
    App,
    algorithm_option,
    opened,
    pass_app,
    pin_options,
    token_option,
    user_pin,
)
from tokenkeys.cli.registry_opts import registry, service_name, service_option
from tokenkeys.cli.translated import Command
from tokenkeys.i18n import N_, _
from tokenkeys.services.key_certs import load_certificate
from tokenkeys.types import Algorithm


@click.command("adopt", cls=Command, help=N_(
    "Reference a key pair that already exists on a token (made elsewhere)."))
@token_option
@click.option("--name", required=True, help=N_("The key's label on the token (or a key URI)."))
@click.option("--cert", type=FILE_PATH,
              help=N_("Its certificate (PEM or DER), when the token has none; stored there."))
@click.option("--self-sign", "self_sign_days", type=click.IntRange(1, keyalg.MAX_DAYS),
              metavar="DAYS",
              help=N_("No certificate anywhere: make a self-signed one on the device."))
@click.option("--backup", is_flag=True, help=N_("Record it as a backup key."))
@service_option
@pin_options
@pass_app
def key_adopt(app: App, token: str | None, name: str, cert: Path | None,
              self_sign_days: int | None, backup: bool, service: str | None,
              pin_file: Path | None, pinpad: bool) -> None:
    from tokenkeys.services import keys as key_policy

    certificate = None if cert is None else load_certificate(cert, "certificate")
    svc = service_name(app, service)
    with registry(app) as reg, opened(app, token, user_pin(app, pin_file, pinpad)) as tok:
        row = key_policy.adopt(reg, svc, tok, name, cert=certificate,
                               self_sign_days=self_sign_days, backup=backup)
    app.emit({"key": row.to_json()}, lambda: app.say(
        _("adopted key {designation!r} into service {svc!r} (sha256 {fingerprint})")
        .format(designation=row.designation, svc=svc, fingerprint=row.fingerprint)))


@click.command("renew", cls=Command, help=N_(
    "Make a new key pair replacing NAME, on the same token. The old key stays.\n"
    "\n"
    "A renewed backup key replaces the old one for new consultations only."))
@click.argument("name")
@token_option
@click.option("--new-name", help=N_("Designation of the new key (default: NAME-YYYYMMDD)."))
@click.option("--days", type=click.IntRange(1, keyalg.MAX_DAYS),
              help=N_("Validity in days (default: the old key's validity length)."))
@algorithm_option(help=N_("Default: the old key's algorithm."))
@service_option
@pin_options
@pass_app
def key_renew(app: App, name: str, token: str | None, new_name: str | None, days: int | None,
              algorithm: Algorithm | None, service: str | None, pin_file: Path | None,
              pinpad: bool) -> None:
    from tokenkeys.services import keys as key_policy

    svc = service_name(app, service)
    with registry(app) as reg:
        old = reg.key(svc, name)
        home = old.locations[0].token_uri if old.locations else None
        with opened(app, token or home, user_pin(app, pin_file, pinpad)) as tok:
            row = key_policy.renew(reg, svc, tok, old, days=days, algorithm=algorithm,
                                   name=new_name)
    app.emit({"key": row.to_json(), "replaces": old.designation}, lambda: app.say(
        _("renewed {designation!r} as {designation2!r} (until {not_after}); {designation!r} "
          "stays for its consultations")
        .format(designation=old.designation, designation2=row.designation,
                not_after=row.not_after)))
