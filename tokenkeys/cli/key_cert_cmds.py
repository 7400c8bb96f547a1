"""`tokenkeys key export-public|csr|import-cert`: certificates from a CA for a key."""

from __future__ import annotations

from pathlib import Path

import click

from tokenkeys import manager
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
from tokenkeys.cli.registry_opts import registry, service_name, service_option
from tokenkeys.services import key_certs
from tokenkeys.services.envelope_kinds import beside_registry


@key.command("export-public")
@click.argument("name_or_uri")
@click.option("-o", "--output", type=FILE_PATH, required=True)
@der_option
@force_option
@token_option
@pass_app
def key_export_public(app: App, name_or_uri: str, output: Path, der: bool, force: bool,
                      token: str | None) -> None:
    """Write the key's public key (SubjectPublicKeyInfo), for `ca issue`. No PIN needed."""
    check_output(output, force)  # before any PIN or device call
    with opened(app, manager.key_token_uri(name_or_uri) or token) as tok:
        handle = manager.resolve_key(tok, name_or_uri)
        key_certs.export_public(handle, output, der=der, force=force)
    app.emit({"key": handle.label, "output": str(output)},
             lambda: app.say(f"wrote the public key of {handle.label!r} to {output}"))


@key.command("csr")
@click.argument("name_or_uri")
@click.option("-o", "--output", type=FILE_PATH, required=True)
@click.option("--cn", help="Subject common name (default: the key's name).")
@force_option
@token_option
@pin_options
@pass_app
def key_csr(app: App, name_or_uri: str, output: Path, cn: str | None, force: bool,
            token: str | None, pin_file: Path | None, pinpad: bool) -> None:
    """Write a PKCS#10 certificate request signed on the device (keys that can sign)."""
    check_output(output, force)  # before any PIN or device call
    with opened(app, manager.key_token_uri(name_or_uri) or token,
                user_pin(app, pin_file, pinpad)) as tok:
        handle = manager.resolve_key(tok, name_or_uri)
        csr = key_certs.make_csr(handle, cn)
    key_certs.write_csr(csr, output, force=force)
    app.emit({"key": handle.label, "subject": csr.subject.rfc4514_string(),
              "output": str(output)},
             lambda: app.say(f"wrote a certificate request for {handle.label!r} to {output}"))


@key.command("import-cert")
@click.argument("name_or_uri")
@click.argument("cert_path", metavar="CERT", type=FILE_PATH)
@click.option("--chain", "chain_path", type=FILE_PATH,
              help="The issuer certificates (PEM bundle), nearest first.")
@click.option("--backup", is_flag=True,
              help="Record the key as a backup key, when the registry does not know it yet "
                   "(a key that awaited this certificate).")
@token_option
@service_option
@pin_options
@pass_app
def key_import_cert(app: App, name_or_uri: str, cert_path: Path, chain_path: Path | None,
                    backup: bool, token: str | None, service: str | None,
                    pin_file: Path | None, pinpad: bool) -> None:
    """Store a CA-issued certificate with the key, replacing a self-signed one.

    Refused, and the device left unchanged, when the certificate is for
    another key, has expired, or its key usage forbids encryption. A key the
    registry does not know yet (one that awaited its certificate) is recorded in
    the service (--service), as `key adopt` would.
    """
    certs = key_certs.load_certificates(cert_path, "certificate")
    cert, extra = certs[0], certs[1:]
    chain = extra + (key_certs.load_certificates(chain_path, "chain") if chain_path else [])
    from tokenkeys.services import keys as key_policy  # SQLAlchemy: only when used

    svc = service_name(app, service)
    with registry(app) as reg, opened(app, manager.key_token_uri(name_or_uri) or token,
                                      user_pin(app, pin_file, pinpad)) as tok:
        handle = manager.resolve_key(tok, name_or_uri)
        # The registry answers (reachable, service known) before the device changes.
        key_policy.is_recorded(reg, svc, handle.label)
        # import_certificate checks the certificate first, before the SO PIN is asked.
        done = key_certs.import_certificate(tok, handle, cert, chain,
                                            beside_registry(app.config, key_certs.CHAINS_DIR))
        record = manager.describe(handle, mechanisms=tok.mechanisms())
        key_policy.record_certified(reg, svc, tok, handle, backup=backup)
    verb = "replaced the certificate of" if done.replaced else "stored a certificate for"
    app.emit({"key": record.to_json(), "replaced": done.replaced, "chain": done.chain_kept},
             lambda: app.say(f"{verb} {record.designation!r} ({record.cn}, not after "
                             f"{record.not_after:%Y-%m-%d}); chain: {done.chain_kept}"))
