"""`tokenkeys ca create|issue|list|export-cert`: the entity's own CA, on a device."""

from __future__ import annotations

from pathlib import Path

import click

from tokenkeys import keyalg
from tokenkeys.cli.context import (
    FILE_PATH,
    App,
    algorithm_option,
    check_output,
    der_option,
    force_option,
    opened,
    pass_app,
    pin_options,
    token_option,
    user_pin,
)
from tokenkeys.cli.translated import Group
from tokenkeys.i18n import N_, _, format_date
from tokenkeys.services import ca as ca_service
from tokenkeys.types import DEFAULT_ALGORITHM, Algorithm


def _show(app: App, records: list[ca_service.CaRecord]) -> None:
    if not records:
        app.say(_("no CA on this token (create one with `tokenkeys ca create`)"))
        return
    app.table(None, [N_("name"), N_("subject"), N_("algorithm"), N_("not after"), "SHA-256"],
              [(r.name, r.subject, r.algorithm, format_date(r.not_after), r.sha256[:16])
               for r in records])


@click.group(cls=Group, help=N_(
    "The entity's CA: issue certificates for keys that cannot certify themselves."))
def ca() -> None:
    pass


@ca.command("create", help=N_(
    "Generate the CA key pair on the token and self-sign its certificate there."))
@token_option
@click.option("--name", required=True, help=N_("The CA key's name on the token."))
@click.option("--cn", help=N_("The CA certificate's common name (default: the name)."))
# A CA lasts, by default, as long as the longest certificate it may issue.
@click.option("--days", type=int, default=keyalg.MAX_DAYS, show_default=True,
              help=N_("Validity in days."))
@algorithm_option(default=DEFAULT_ALGORITHM)
@pin_options
@pass_app
def ca_create(app: App, token: str | None, name: str, cn: str | None, days: int,
              algorithm: Algorithm, pin_file: Path | None, pinpad: bool) -> None:
    with opened(app, token, user_pin(app, pin_file, pinpad)) as tok:
        record = ca_service.create_ca(tok, name, cn=cn, algorithm=algorithm, days=days)
    app.emit({"ca": record.to_json()}, lambda: _show(app, [record]))


@ca.command("issue", help=N_(
    "Issue an encryption certificate for REQUEST: a PKCS#10 CSR or a public key.\n"
    "\n"
    "The certificate is signed on the CA's device."))
@click.argument("request", metavar="REQUEST", type=FILE_PATH)
@token_option
@click.option("--ca", "ca_name", required=True, help=N_("The CA's name on the token."))
@click.option("-o", "--output", type=FILE_PATH, required=True)
@click.option("--cn", help=N_("Subject common name (required for a bare public key)."))
@click.option("--days", type=int, default=365, show_default=True,
              help=N_("Validity in days (never past the CA's own)."))
@der_option
@force_option
@pin_options
@pass_app
def ca_issue(app: App, request: Path, token: str | None, ca_name: str, output: Path,
             cn: str | None, days: int, der: bool, force: bool, pin_file: Path | None,
             pinpad: bool) -> None:
    check_output(output, force)  # before any PIN or device call
    parsed = ca_service.read_request(request)
    with opened(app, token, user_pin(app, pin_file, pinpad)) as tok:
        ca_key = ca_service.find_ca(tok, ca_name)
        issued = ca_service.issue_certificate(ca_key, parsed, cn=cn, days=days)
    cert = issued.certificate
    ca_service.save_certificate(cert, output, der=der, force=force)
    document = {"output": str(output), "subject": cert.subject.rfc4514_string(),
                "issuer": cert.issuer.rfc4514_string(), "request": parsed.kind,
                "not_after": cert.not_valid_after_utc.isoformat(), "clipped": issued.clipped,
                "sha256": ca_service.fingerprint(cert)}

    def human() -> None:
        app.say(_("issued {document} by {document2}, not after "
                  "{not_valid_after_utc:%Y-%m-%d}: {output}")
                .format(document=document['subject'], document2=document['issuer'],
                        not_valid_after_utc=cert.not_valid_after_utc, output=output))
        if issued.clipped:
            app.say(_("the validity was cut to the CA's own end date"))

    app.emit(document, human)


@ca.command("list", help=N_(
    "The CAs on the token."))
@token_option
@pin_options
@pass_app
def ca_list(app: App, token: str | None, pin_file: Path | None, pinpad: bool) -> None:
    with opened(app, token, user_pin(app, pin_file, pinpad)) as tok:
        records = ca_service.list_cas(tok)
    app.emit({"cas": [r.to_json() for r in records]}, lambda: _show(app, records))


@ca.command("export-cert", help=N_(
    "Write the CA's certificate (the trust anchor for `openssl verify`). No PIN needed."))
@click.argument("name")
@click.option("-o", "--output", type=FILE_PATH, required=True)
@der_option
@force_option
@token_option
@pass_app
def ca_export_cert(app: App, name: str, output: Path, der: bool, force: bool,
                   token: str | None) -> None:
    check_output(output, force)  # before any PIN or device call
    with opened(app, token) as tok:
        ca_key = ca_service.find_ca(tok, name)
    cert = ca_key.certificate
    assert cert is not None
    ca_service.save_certificate(cert, output, der=der, force=force)
    app.emit({"ca": name, "output": str(output), "sha256": ca_service.fingerprint(cert)},
             lambda: app.say(_("wrote the certificate of CA {name!r} to {output}")
                             .format(name=name, output=output)))
