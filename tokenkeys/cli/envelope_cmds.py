"""`tokenkeys seal` and `tokenkeys open`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tokenkeys import batch
from tokenkeys.cli.context import (
    App,
    pass_app,
    pin_options,
    token_option,
    user_pin,
    wait_card_option,
)
from tokenkeys.drivers import token_uri
from tokenkeys.envelope import SealOptions, seal
from tokenkeys.errors import BatchIncomplete, OutputExists, PolicyRefused, UsageError
from tokenkeys.services.envelope_kinds import key_transport_for

FULL_TABLE = 50
KEY_TRANSPORTS = ("oaep-sha256", "oaep-sha1", "oaep-sha384", "oaep-sha512", "pkcs1v15")


def load_certificates(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read recipient certificate {path}: {exc.strerror}") from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise UsageError(f"{path} is not a PEM or DER X.509 certificate") from None


@click.command("seal")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--recipient", "recipients", multiple=True, required=True, metavar="CERT",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Recipient certificate (PEM, bundle or DER); repeat for backup keys.")
@click.option("--cbc", is_flag=True, help="EnvelopedData with AES-CBC instead of AES-GCM.")
@click.option("--key-bits", type=click.Choice(["128", "192", "256"]), default="256",
              show_default=True)
@click.option("--key-transport", type=click.Choice(KEY_TRANSPORTS), default=None,
              help="For RSA recipients [default: oaep-sha256, or pkcs1v15 for a recipient "
                   "whose key is known to open PKCS#1 v1.5 only]; given, it applies to all.")
@click.option("--keyid", is_flag=True, help="Name recipients by subject key identifier.")
@click.option("--pem", is_flag=True, help="PEM armour instead of binary BER.")
@click.option("--allow-expired", is_flag=True, help="Seal even to an expired certificate.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@pass_app
def seal_cmd(app: App, input_path: Path, output: Path, recipients: tuple[Path, ...], cbc: bool,
             key_bits: str, key_transport: str | None, keyid: bool, pem: bool, allow_expired: bool,
             force: bool) -> None:
    """Seal INPUT to every recipient certificate (streaming, constant memory)."""
    certs = [c for path in recipients for c in load_certificates(path)]
    now = datetime.now(UTC)
    for cert in certs:
        if not allow_expired and not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
            raise PolicyRefused(
                f"recipient {cert.subject.rfc4514_string()} is not valid now "
                f"(valid {start:%Y-%m-%d} to {end:%Y-%m-%d}); --allow-expired overrides"
            )
    if output.exists() and not force:
        raise OutputExists(f"{output} already exists (use --force to replace it)")
    output.parent.mkdir(parents=True, exist_ok=True)
    # An explicit --key-transport applies to all; otherwise what is known of each key.
    chosen = tuple(None if key_transport else key_transport_for(app.config.registry, c)
                   for c in certs)
    options = SealOptions(authenticated=not cbc, key_bits=int(key_bits),
                          key_transport=key_transport or "oaep-sha256", use_ski=keyid, pem=pem,
                          transports=chosen)
    size = seal(input_path, output, certs, options)
    notes = [f"recipient {c.subject.rfc4514_string()}: its key opens PKCS#1 v1.5 only "
             "(its device has no OAEP), so it is sealed with pkcs1v15; --key-transport overrides"
             for c, t in zip(certs, chosen, strict=True) if t == "pkcs1v15"]
    document = {"input": str(input_path), "output": str(output), "bytes": size,
                "recipients": [c.subject.rfc4514_string() for c in certs],
                "key_transports": [t or options.key_transport if isinstance(
                    c.public_key(), rsa.RSAPublicKey) else "ecdh"
                    for c, t in zip(certs, chosen, strict=True)],
                "notes": notes}
    for note in notes:
        app.err.print(note, markup=False, highlight=False)
    app.emit(document, lambda: app.say(f"sealed {size} bytes to {len(certs)} recipient(s): "
                                       f"{output}"))


@click.command("open")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--outdir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes, each with its own session.")
@token_option
@wait_card_option
@pin_options
@pass_app
@click.pass_context
def open_cmd(ctx: click.Context, app: App, inputs: tuple[Path, ...], outdir: Path, jobs: int,
             token: str | None, pin_file: Path | None, pinpad: bool) -> None:
    """Open envelopes (files or directories) into OUTDIR with the keys on the token.

    The PIN is asked once. Outputs that already exist are skipped.
    """
    pairs = batch.plan(batch.collect_inputs(inputs), outdir)
    uri = token_uri(token, app.config)
    show = sys.stderr.isatty() and not app.json
    with Progress(TextColumn("opening"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=app.err, disable=not show) as bar:
        task = bar.add_task("open", total=len(pairs))
        results = batch.open_batch(pairs, outdir, uri, app.config,
                                   user_pin(app, pin_file, pinpad), jobs=jobs,
                                   on_result=lambda _r: bar.advance(task),
                                   allow_final_try=app.allow_final_try, announce=app.note,
                                   wait=app.wait_card)
    counts = {s: sum(r.status == s for r in results) for s in ("opened", "skipped", "failed")}
    document = {"ok": counts["failed"] == 0, "files": [r.to_json() for r in results], **counts}

    def human() -> None:
        # Thousands of rows help nobody: past FULL_TABLE, list the failures only.
        shown = results if len(results) <= FULL_TABLE else [
            r for r in results if r.status == "failed"]
        if shown:
            app.table(None, ["envelope", "status", "recipient", "bytes", "error"],
                      [(Path(r.input).name, r.status, r.recipient, r.bytes, r.error)
                       for r in shown])
        app.say(f"{counts['opened']} opened, {counts['skipped']} skipped, "
                f"{counts['failed']} failed")

    app.emit(document, human)
    if counts["failed"]:
        ctx.exit(BatchIncomplete.exit_code)
