"""`tokenkeys key export-public|csr|import-cert`: certificates from a CA for a key."""

from __future__ import annotations

from pathlib import Path

import click

from tokenkeys.cli.context import (
    FILE_PATH,
    App,
    check_output,
    der_option,
    force_option,
    opened,
    pass_app,
    pin_options,
    token_option,
    user_pin,
)
from tokenkeys.cli.key_cmds import key
from tokenkeys.cli.registry_opts import open_registry as reg_of
from tokenkeys.cli.registry_opts import registry, service_name, service_option
from tokenkeys.drivers import KeyHandle, Token
from tokenkeys.i18n import N_, _
from tokenkeys.services import key_certs, token_keys
from tokenkeys.services.envelope_kinds import beside_registry


def _resolve(app: App, tok: Token, name_or_uri: str, service: str | None) -> KeyHandle:
    from tokenkeys.services import keys as key_policy  # SQLAlchemy: only when used

    return key_policy.resolve(tok, name_or_uri, service=service_name(app, service),
                              registry=lambda: reg_of(app))


@key.command("export-public", help=N_(
    "Write the key's public key (SubjectPublicKeyInfo), for `ca issue`. No PIN needed."))
@click.argument("name_or_uri")
@click.option("-o", "--output", type=FILE_PATH, required=True)
@der_option
@force_option
@token_option
@service_option
@pass_app
def key_export_public(app: App, name_or_uri: str, output: Path, der: bool, force: bool,
                      token: str | None, service: str | None) -> None:
    check_output(output, force)  # before any PIN or device call
    with opened(app, token_keys.key_token_uri(name_or_uri) or token) as tok:
        handle = _resolve(app, tok, name_or_uri, service)
        key_certs.export_public(handle, output, der=der, force=force)
    app.emit({"key": name_or_uri, "output": str(output)},
             lambda: app.say(_("wrote the public key of {name_or_uri!r} to {output}")
                             .format(name_or_uri=name_or_uri, output=output)))


@key.command("csr", help=N_(
    "Write a PKCS#10 certificate request signed on the device (keys that can sign)."))
@click.argument("name_or_uri")
@click.option("-o", "--output", type=FILE_PATH, required=True)
@click.option("--cn", help=N_("Subject common name (default: the key's name)."))
@force_option
@token_option
@service_option
@pin_options
@pass_app
def key_csr(app: App, name_or_uri: str, output: Path, cn: str | None, force: bool,
            token: str | None, service: str | None, pin_file: Path | None,
            pinpad: bool) -> None:
    check_output(output, force)  # before any PIN or device call
    with opened(app, token_keys.key_token_uri(name_or_uri) or token,
                user_pin(app, pin_file, pinpad)) as tok:
        handle = _resolve(app, tok, name_or_uri, service)
        csr = key_certs.make_csr(handle, cn or key_certs.request_cn(name_or_uri, handle))
    key_certs.write_csr(csr, output, force=force)
    app.emit({"key": name_or_uri, "subject": csr.subject.rfc4514_string(),
              "output": str(output)},
             lambda: app.say(_("wrote a certificate request for {name_or_uri!r} to {output}")
                             .format(name_or_uri=name_or_uri, output=output)))


@key.command("import-cert", help=N_(
    "Store a CA-issued certificate with the key, replacing a self-signed one.\n"
    "\n"
    "Refused, and the device left unchanged, when the certificate is for\n"
    "another key, has expired, or its key usage forbids encryption. A key the\n"
    "registry does not know yet is recorded in the service (--service), as `key adopt`\n"
    "would; a known one gets it as its current certificate, in every service."))
@click.argument("name_or_uri")
@click.argument("cert_path", metavar="CERT", type=FILE_PATH)
@click.option("--chain", "chain_path", type=FILE_PATH,
              help=N_("The issuer certificates (PEM bundle), nearest first."))
@click.option("--backup", is_flag=True,
              help=N_("Record the key as a backup key, when the registry does not know it yet."))
@click.option("--allow-any-usage", is_flag=True,
              help=N_("Store the certificate even when its keyUsage forbids encryption."))
@token_option
@service_option
@pin_options
@pass_app
def key_import_cert(app: App, name_or_uri: str, cert_path: Path, chain_path: Path | None,
                    backup: bool, allow_any_usage: bool, token: str | None,
                    service: str | None, pin_file: Path | None, pinpad: bool) -> None:
    certs = key_certs.load_certificates(cert_path, "certificate")
    cert, extra = certs[0], certs[1:]
    chain = extra + (key_certs.load_certificates(chain_path, "chain") if chain_path else [])
    from tokenkeys.services import key_inventory  # SQLAlchemy: only when used

    svc = service_name(app, service)
    with registry(app) as reg, opened(app, token_keys.key_token_uri(name_or_uri) or token,
                                      user_pin(app, pin_file, pinpad)) as tok:
        handle = _resolve(app, tok, name_or_uri, service)
        done = key_inventory.certify(reg, svc, tok, handle, cert, chain,
                                     beside_registry(app.config, key_certs.CHAINS_DIR),
                                     backup=backup, allow_any_usage=allow_any_usage)
    record = done.record
    imported = done.imported
    what = (_("the certificate of {designation!r} is already on the card or token, nothing "
              "was written to it").format(designation=record.designation) if imported.already
            else _("replaced the certificate of {designation!r}")
                 .format(designation=record.designation) if imported.replaced
            else _("stored a certificate for {designation!r}")
                 .format(designation=record.designation))
    app.emit({"key": record.to_json(), "replaced": imported.replaced,
              "already": imported.already, "chain": imported.chain_kept},
             lambda: app.say(_("{what} ({cn}, not after {not_after:%Y-%m-%d}); chain: "
                               "{chain_kept}")
                             .format(what=what, cn=record.cn, not_after=record.not_after,
                                     chain_kept=imported.chain_kept)))
