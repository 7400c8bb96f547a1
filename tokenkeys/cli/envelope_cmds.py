"""`tokenkeys seal` and `tokenkeys open`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric import rsa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tokenkeys import keyalg
from tokenkeys.cli.context import (
    FILE_PATH,
    App,
    check_output,
    force_option,
    pass_app,
    pin_options,
    token_option,
    user_pin,
    wait_card_option,
)
from tokenkeys.cli.registry_opts import registry, service_name, service_option
from tokenkeys.drivers import token_uri
from tokenkeys.envelope import SealOptions, named_by_issuer, seal
from tokenkeys.errors import BatchIncomplete, PolicyRefused, UsageError
from tokenkeys.services import key_certs, opening_batch
from tokenkeys.services.envelope_kinds import key_transports_for

FULL_TABLE = 50
# The default first, as the help shows them.
KEY_TRANSPORTS = (keyalg.DEFAULT_KEY_TRANSPORT,
                  *(t for t in keyalg.KEY_TRANSPORTS if t != keyalg.DEFAULT_KEY_TRANSPORT))


@click.command("seal")
@click.argument("input_path", metavar="INPUT", type=FILE_PATH)
@click.option("-o", "--output", type=FILE_PATH, required=True)
@click.option("--recipient", "recipients", multiple=True, metavar="CERT",
              type=FILE_PATH,
              help="Recipient certificate (PEM, bundle or DER); repeat for backup keys.")
@click.option("--consultation", metavar="REF",
              help="Seal to exactly this consultation's key and recorded backup keys.")
@service_option
@click.option("--cbc", is_flag=True, help="EnvelopedData with AES-CBC instead of AES-GCM.")
@click.option("--key-bits", type=click.Choice(["128", "192", "256"]), default="256",
              show_default=True)
@click.option("--key-transport", type=click.Choice(KEY_TRANSPORTS),
              help="For RSA recipients [default: oaep-sha256, or pkcs1v15 for a recipient "
                   "whose key is known to open PKCS#1 v1.5 only; with --consultation what "
                   "every recipient key can open]; given, it applies to all.")
@click.option("--keyid", is_flag=True,
              help="Name recipients by subject key identifier (issuer and serial for a "
                   "certificate without one).")
@click.option("--pem", is_flag=True, help="PEM armour instead of binary BER.")
@click.option("--allow-expired", is_flag=True, help="Seal even to an expired certificate.")
@click.option("--allow-any-usage", is_flag=True,
              help="Seal even when a certificate's keyUsage forbids key encipherment/agreement.")
@force_option
@pass_app
def seal_cmd(app: App, input_path: Path, output: Path, recipients: tuple[Path, ...],
             consultation: str | None, service: str | None, cbc: bool, key_bits: str,
             key_transport: str | None, keyid: bool, pem: bool, allow_expired: bool,
             allow_any_usage: bool, force: bool) -> None:
    """Seal INPUT to every recipient certificate (streaming, constant memory)."""
    if bool(recipients) == bool(consultation):
        raise UsageError("give --recipient CERT... or --consultation REF (one of them)")
    if consultation:
        from tokenkeys.services import consultations as consultation_policy

        with registry(app) as reg:
            bound = consultation_policy.load_for_use(reg, service_name(app, service),
                                                     consultation)
        certs = consultation_policy.certificates(bound)
        key_transport = consultation_policy.seal_transport(bound, key_transport)
    else:
        certs = [c for path in recipients
                 for c in key_certs.load_certificates(path, "recipient certificate")]
    now = datetime.now(UTC)
    for cert in certs:
        if not allow_expired and not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
            raise PolicyRefused(
                f"recipient {cert.subject.rfc4514_string()} is not valid now "
                f"(valid {start:%Y-%m-%d} to {end:%Y-%m-%d}); --allow-expired overrides"
            )
    check_output(output, force)
    # An explicit --key-transport (or a consultation's choice) applies to all; otherwise
    # what the registry knows of each recipient's key. seal() checks every recipient
    # (check_recipient) before anything is written.
    chosen = ((None,) * len(certs) if key_transport
              else key_transports_for(app.config, certs))
    options = SealOptions(authenticated=not cbc, key_bits=int(key_bits),
                          key_transport=key_transport or keyalg.DEFAULT_KEY_TRANSPORT,
                          use_ski=keyid, pem=pem, allow_any_usage=allow_any_usage,
                          transports=chosen)
    size = seal(input_path, output, certs, options, overwrite=force)
    notes = [f"recipient {who} has no subject key identifier: named by issuer and serial"
             for who in named_by_issuer(certs, options)]
    notes += [f"recipient {c.subject.rfc4514_string()}: its key opens PKCS#1 v1.5 only "
              "(its device has no OAEP), so it is sealed with pkcs1v15; --key-transport "
              "overrides" for c, t in zip(certs, chosen, strict=True) if t == keyalg.PKCS1V15]
    for note in notes:
        app.note(note)
    document = {"input": str(input_path), "output": str(output), "bytes": size,
                "recipients": [c.subject.rfc4514_string() for c in certs],
                "key_transports": [t or options.key_transport if isinstance(
                    c.public_key(), rsa.RSAPublicKey) else "ecdh"
                    for c, t in zip(certs, chosen, strict=True)],
                "notes": notes}
    app.emit(document, lambda: app.say(f"sealed {size} bytes to {len(certs)} recipient(s): "
                                       f"{output}"))


@click.command("open")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--outdir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes, each with its own session.")
@click.option("--consultation", metavar="REF",
              help="Refuse envelopes not sealed to this consultation's keys.")
@service_option
@token_option
@wait_card_option
@pin_options
@pass_app
@click.pass_context
def open_cmd(ctx: click.Context, app: App, inputs: tuple[Path, ...], outdir: Path, jobs: int,
             consultation: str | None, service: str | None, token: str | None,
             pin_file: Path | None, pinpad: bool) -> None:
    """Open envelopes (files or directories) into OUTDIR with the keys on the token.

    The PIN is asked once. Outputs that already exist are skipped. Each batch is
    recorded in the audit log: before the first decryption (every planned output),
    then at its end (envelope digests, results, key used).
    """
    from tokenkeys.services import opening  # SQLAlchemy: not for `--help`

    found, unopened = opening_batch.collect(inputs)
    pairs = opening_batch.plan(found, outdir)
    show = sys.stderr.isatty() and not app.json
    with Progress(TextColumn("opening"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=app.err, disable=not show) as bar:
        task = bar.add_task("open", total=len(pairs))
        opened = opening.open_envelopes(
            app.config, pairs, outdir=outdir, token_uri=token_uri(token, app.config),
            service=service_name(app, service), pins=user_pin(app, pin_file, pinpad),
            consultation=consultation, unopened=unopened, jobs=jobs,
            on_result=lambda _r: bar.advance(task), allow_final_try=app.allow_final_try,
            announce=app.note, wait=app.wait_card)
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
            app.table(None, ["envelope", "status", "recipient", "bytes", "error"],
                      [(Path(r.input).name, r.status, r.recipient, r.bytes, r.error or r.reason)
                       for r in shown])
        app.say(f"{counts['opened']} opened, {counts['skipped']} skipped, "
                f"{counts['failed']} failed")

    app.emit(document, human)
    if single is not None and single.status == "failed":
        ctx.exit(opening_batch.error_class(single.error_type).exit_code)
    if counts["failed"]:
        ctx.exit(BatchIncomplete.exit_code)

