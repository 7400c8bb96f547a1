"""`tokenkeys seal` and `tokenkeys open`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tokenkeys import keyalg
from tokenkeys.cli.app import word
from tokenkeys.cli.context import (
    FILE_PATH,
    App,
    force_option,
    pass_app,
    pin_options,
    token_option,
    user_pin,
    wait_card_option,
)
from tokenkeys.cli.registry_opts import service_name, service_option
from tokenkeys.cli.translated import Command
from tokenkeys.drivers import token_uri
from tokenkeys.errors import BatchIncomplete
from tokenkeys.i18n import N_, _, format_number, ngettext

FULL_TABLE = 50
# The default first, as the help shows them.
KEY_TRANSPORTS = (keyalg.DEFAULT_KEY_TRANSPORT,
                  *(t for t in keyalg.KEY_TRANSPORTS if t != keyalg.DEFAULT_KEY_TRANSPORT))


@click.command("seal", cls=Command, help=N_(
    "Seal INPUT to every recipient certificate (streaming, constant memory)."))
@click.argument("input_path", metavar="INPUT", type=FILE_PATH)
@click.option("-o", "--output", type=FILE_PATH, required=True)
@click.option("--recipient", "recipients", multiple=True, metavar="CERT",
              type=FILE_PATH,
              help=N_("Recipient certificate (PEM, bundle or DER); repeat for backup keys."))
@click.option("--consultation", metavar="REF",
              help=N_("Seal to exactly this consultation's key and recorded backup keys."))
@service_option
@click.option("--cbc", is_flag=True, help=N_("EnvelopedData with AES-CBC instead of AES-GCM."))
@click.option("--key-bits", type=click.Choice(["128", "192", "256"]), default="256",
              show_default=True)
@click.option("--key-transport", type=click.Choice(KEY_TRANSPORTS),
              help=N_("For RSA recipients [default: oaep-sha256, or pkcs1v15 for a recipient "
                      "whose key is known to open PKCS#1 v1.5 only; with --consultation what "
                      "every recipient key can open]; given, it applies to all."))
@click.option("--keyid", is_flag=True,
              help=N_("Name recipients by subject key identifier (issuer and serial for a "
                      "certificate without one)."))
@click.option("--pem", is_flag=True, help=N_("PEM armour instead of binary BER."))
@click.option("--allow-expired", is_flag=True, help=N_("Seal even to an expired certificate."))
@click.option("--allow-any-usage", is_flag=True,
              help=N_("Seal even when a certificate's keyUsage forbids key "
                      "encipherment/agreement."))
@force_option
@pass_app
def seal_cmd(app: App, input_path: Path, output: Path, recipients: tuple[Path, ...],
             consultation: str | None, service: str | None, cbc: bool, key_bits: str,
             key_transport: str | None, keyid: bool, pem: bool, allow_expired: bool,
             allow_any_usage: bool, force: bool) -> None:
    from tokenkeys.services import sealing  # the registry only for --consultation

    done = sealing.seal_file(
        app.config, input_path, output, certificates=recipients, consultation=consultation,
        service=service_name(app, service), authenticated=not cbc, key_bits=int(key_bits),
        key_transport=key_transport, use_ski=keyid, pem=pem, allow_expired=allow_expired,
        allow_any_usage=allow_any_usage, force=force)
    for note in done.notes:
        app.note(note)
    app.emit(done.to_json(), lambda: app.say(
        _("sealed {size} bytes to {count} recipient(s): {output}")
        .format(size=done.size, count=len(done.recipients), output=output)))


@click.command("open", cls=Command, help=N_(
    "Open envelopes (files or directories) into OUTDIR with the keys on the token.\n"
    "\n"
    "The PIN is asked once. Outputs that already exist are skipped. Each batch is\n"
    "recorded in the audit log: before the first decryption (every planned output),\n"
    "then at its end (envelope digests, results, key used)."))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--outdir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help=N_("Worker processes, each with its own session."))
@click.option("--consultation", metavar="REF",
              help=N_("Refuse envelopes not sealed to this consultation's keys."))
@service_option
@token_option
@wait_card_option
@pin_options
@pass_app
@click.pass_context
def open_cmd(ctx: click.Context, app: App, inputs: tuple[Path, ...], outdir: Path, jobs: int,
             consultation: str | None, service: str | None, token: str | None,
             pin_file: Path | None, pinpad: bool) -> None:
    from tokenkeys.services.opening_audit import AuditSide

    # First (the imports this needs come after it): the registry's side imports
    # SQLAlchemy on the other core while this process imports the rest and finds the
    # token.
    audit = AuditSide(app.config)
    try:
        from tokenkeys.services import opening, opening_batch

        found, unopened = opening_batch.collect(inputs)
        pairs = opening_batch.plan(found, outdir)
        uri, pins = token_uri(token, app.config), user_pin(app, pin_file, pinpad)
        service = service_name(app, service)
    except BaseException:
        audit.close()
        raise
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    show = sys.stderr.isatty() and not app.json
    bar = Progress(TextColumn("opening"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=app.err, disable=not show)
    task = bar.add_task("open", total=len(pairs))

    def advance(_result: object) -> None:
        # Shown from the first envelope on: not over the PIN prompt, and its thread
        # not there yet when --jobs forks its workers (crossing.start_method).
        if not bar.live.is_started:
            bar.start()
        bar.advance(task)

    try:
        opened = opening.open_envelopes(
            app.config, pairs, outdir=outdir, token_uri=uri, service=service, pins=pins,
            consultation=consultation, unopened=unopened, jobs=jobs, on_result=advance,
            allow_final_try=app.allow_final_try, announce=app.note, wait=app.wait_card,
            audit=audit)
    finally:
        bar.stop()
    results = list(opened.results)
    counts = opened.counts
    document = {"ok": counts["failed"] == 0, "files": [r.to_json() for r in results], **counts}
    # One envelope named on the command line fails like any single command: one
    # line on stderr and the error's own exit code (docs/errors.md).
    single = results[0] if len(results) == 1 and len(inputs) == 1 and not inputs[0].is_dir() \
        else None
    if single is not None and single.status == "failed" and not app.json:
        app.fail(f"{single.input}: {single.error}")
        ctx.exit(opening_batch.error_class(single.error_type).exit_code)

    def human() -> None:
        # Thousands of rows help nobody: past FULL_TABLE, list the failures only.
        shown = results if len(results) <= FULL_TABLE else [
            r for r in results if r.status == "failed"]
        if shown:
            app.table(None, [N_("envelope"), N_("status"), N_("recipient"), N_("bytes"),
                             N_("error")],
                      [(Path(r.input).name, word(r.status), r.recipient,
                        None if r.bytes is None else format_number(r.bytes), r.error or r.reason)
                       for r in shown])
        # English says the same in both forms; French agrees "1 pli ouvert", "12 plis ouverts".
        app.say(ngettext("{opened} opened, {skipped} skipped, {failed} failed",
                         "{opened} opened, {skipped} skipped, {failed} failed",
                         counts["opened"])
                .format(opened=counts["opened"], skipped=counts["skipped"],
                        failed=counts["failed"]))

    app.emit(document, human)
    if single is not None and single.status == "failed":
        ctx.exit(opening_batch.error_class(single.error_type).exit_code)
    if counts["failed"]:
        ctx.exit(BatchIncomplete.exit_code)

