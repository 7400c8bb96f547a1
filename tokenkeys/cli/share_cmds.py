"""`tokenkeys share export|import|copy`: give a key to the entity's other agents."""

from __future__ import annotations

from pathlib import Path

import click

from tokenkeys.cli.context import (
    FILE_PATH,
    App,
    check_output,
    force_option,
    opened,
    pass_app,
    pin_options,
    token_option,
    user_pin,
)
from tokenkeys.cli.registry_opts import service_name, service_option
from tokenkeys.cli.translated import Group
from tokenkeys.errors import UsageError
from tokenkeys.i18n import N_, _
from tokenkeys.services import share, token_keys
from tokenkeys.services import share_copy as copying
from tokenkeys.types import PinSource


def audit_hook(app: App, service: str | None) -> share.AuditHook:
    from tokenkeys.services.access import open_registry

    return share.registry_recorder(lambda: open_registry(app.config),
                                   service_name(app, service))


def locator(app: App) -> copying.Locator:
    from tokenkeys.services.access import open_registry

    return copying.registry_locator(lambda: open_registry(app.config))


def _done(app: App, result: share.ShareResult, text: str) -> None:
    for warning in result.warnings:
        app.warn(warning)
    app.emit({"share": result.to_json()}, lambda: app.say(text))


@click.group("share", cls=Group, help=N_(
    "Share a shareable key: PKCS#12 file export/import, or device-to-device copy."))
def share_group() -> None:
    pass


@share_group.command("export", help=N_(
    "Write a shareable key with its certificate and chain to a PKCS#12 file.\n"
    "\n"
    "The passphrase comes from TOKENKEYS_PASSPHRASE or a prompt (typed twice)."))
@click.argument("name_or_uri")
@click.option("-o", "--output", type=FILE_PATH, required=True,
              help=N_("The .p12/.pfx file to write (mode 0600)."))
@click.option("--legacy", is_flag=True,
              help=N_("TripleDES-SHA1 for old systems (weak: prefer the default AES-256)."))
@force_option
@token_option
@service_option
@pin_options
@pass_app
def share_export(app: App, name_or_uri: str, output: Path, legacy: bool, force: bool,
                 token: str | None, service: str | None, pin_file: Path | None,
                 pinpad: bool) -> None:
    # Both before any PIN is asked or sent. A key file goes only into an existing
    # directory (never created for it, unlike other outputs).
    if not output.parent.is_dir():
        raise UsageError(_("cannot write next to {output}: {parent} is not a directory")
                         .format(output=output, parent=output.parent))
    check_output(output, force)
    with opened(app, token_keys.key_token_uri(name_or_uri) or token,
                user_pin(app, pin_file, pinpad)) as tok:
        result = share.export_pkcs12(
            tok, name_or_uri, output,
            lambda: share.read_passphrase(new=True, interactive=app.interactive),
            legacy=legacy, force=force, audit=audit_hook(app, service))
    _done(app, result, _("exported key {designation!r} to {output} ({protection}); give the "
                         "passphrase by another channel")
                       .format(designation=result.key.designation, output=output,
                               protection=result.protection))


@share_group.command("import", help=N_(
    "Import a PKCS#12 (.p12/.pfx) key onto a token; non-extractable unless --shareable.\n"
    "\n"
    "The passphrase comes from TOKENKEYS_PASSPHRASE or a prompt."))
@click.argument("file", type=FILE_PATH)
@token_option
@click.option("--name", required=True, help=N_("Designation of the key on this token."))
@click.option("--shareable", is_flag=True,
              help=N_("Keep the key extractable (wrapped only) so it can be shared again."))
@click.option("--allow-any-usage", is_flag=True,
              help=N_("Import even when the certificate's keyUsage forbids encryption."))
@service_option
@pin_options
@pass_app
def share_import(app: App, file: Path, token: str | None, name: str, shareable: bool,
                 allow_any_usage: bool, service: str | None, pin_file: Path | None,
                 pinpad: bool) -> None:
    with opened(app, token, user_pin(app, pin_file, pinpad)) as tok:
        result = share.import_pkcs12(
            tok, file, lambda: share.read_passphrase(new=False, interactive=app.interactive),
            name=name, shareable=shareable, allow_any_usage=allow_any_usage,
            audit=audit_hook(app, service))
    kind = _("extractable (wrapped only)") if shareable else "non-extractable"
    _done(app, result, _("imported key {name!r} ({kind}) onto {uri}")
                       .format(name=name, kind=kind, uri=result.key.uri))


@share_group.command("copy", help=N_(
    "Copy a shareable key to another device; it is never in clear outside the devices."))
@click.argument("name_or_uri")
@token_option
@click.option("--to-token", "to_token", required=True, metavar="URI",
              help=N_("The token that receives the copy."))
@click.option("--shareable", is_flag=True, help=N_("Keep the copy extractable (wrapped only)."))
@click.option("--to-pin-file", type=FILE_PATH,
              help=N_("Read the target token's user PIN from this file (else TOKENKEYS_TO_PIN "
                      "or a prompt)."))
@service_option
@pin_options
@pass_app
def share_copy(app: App, name_or_uri: str, token: str | None, to_token: str, shareable: bool,
               to_pin_file: Path | None, service: str | None, pin_file: Path | None,
               pinpad: bool) -> None:
    target_pins = PinSource(env_var="TOKENKEYS_TO_PIN", file=to_pin_file,
                            what=_("target token user PIN"), interactive=app.interactive)
    with opened(app, token_keys.key_token_uri(name_or_uri) or token,
                user_pin(app, pin_file, pinpad)) as src, \
            opened(app, to_token, target_pins) as dst:
        result = copying.copy_key(src, name_or_uri, dst, shareable=shareable,
                                     audit=audit_hook(app, service), locates=locator(app))
    _done(app, result, _("copied key {designation!r} to {uri} (test decryption passed; "
                         "transport keys destroyed)")
                       .format(designation=result.key.designation, uri=result.key.uri))
