"""Entry point: global options, command groups, and the error-to-exit-code mapping."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from tokenkeys import __version__
from tokenkeys.cli import key_cert_cmds  # noqa: F401  (adds csr/import-cert/export-public)
from tokenkeys.cli.assistant_cmds import assistant_group
from tokenkeys.cli.ca_cmds import ca
from tokenkeys.cli.consultation_cmds import consultation_group
from tokenkeys.cli.context import FILE_PATH, App, visible
from tokenkeys.cli.doctor_cmd import doctor
from tokenkeys.cli.envelope_cmds import open_cmd, seal_cmd
from tokenkeys.cli.key_cmds import key
from tokenkeys.cli.key_policy_cmds import key_adopt, key_renew
from tokenkeys.cli.registry_cmds import audit_group, registry_group
from tokenkeys.cli.service_cmds import service_group
from tokenkeys.cli.share_cmds import share_group
from tokenkeys.cli.token_cmds import token
from tokenkeys.config import load_config
from tokenkeys.errors import TokenKeysError

EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--debug", is_flag=True, help="Show debug logs and tracebacks.")
@click.option(
    "--config",
    "config_path",
    type=FILE_PATH,
    help="Configuration file (default: TOKENKEYS_CONFIG or the user config dir).",
)
@click.version_option(__version__, prog_name="tokenkeys")
@click.pass_context
def cli(ctx: click.Context, as_json: bool, debug: bool, config_path: Path | None) -> None:
    """tokenkeys: key pairs for sealed bids, kept inside PKCS#11 devices."""
    if debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    ctx.obj = App(json=as_json, debug=debug, config=load_config(config_path))


cli.add_command(token)
cli.add_command(key)
cli.add_command(ca)
cli.add_command(doctor)
cli.add_command(seal_cmd)
cli.add_command(open_cmd)
key.add_command(key_adopt)
key.add_command(key_renew)
cli.add_command(service_group)
cli.add_command(consultation_group)
cli.add_command(registry_group)
cli.add_command(audit_group)
cli.add_command(share_group)
cli.add_command(assistant_group)


def _report(as_json: bool, kind: str, message: str, code: int,
            recipients: tuple[str, ...] | None = None) -> None:
    if as_json:
        error: dict[str, object] = {"type": kind, "message": message, "exit_code": code}
        if recipients is not None:  # NoMatchingRecipient: who the envelope is for
            error["recipients"] = list(recipients)
        click.echo(json.dumps({"ok": False, "error": error}, indent=2))
    else:
        # Messages quote file names and certificate fields: never let them drive the terminal.
        click.echo(f"tokenkeys: error: {visible(message)}", err=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    debug = "--debug" in args
    try:
        rv = cli.main(args=args, prog_name="tokenkeys", standalone_mode=False)
    except TokenKeysError as exc:
        if debug:
            logging.getLogger("tokenkeys").exception("failed")
        _report(as_json, type(exc).__name__, str(exc), exc.exit_code,
                getattr(exc, "recipients", None))
        return exc.exit_code
    except click.exceptions.Abort:
        _report(as_json, "Aborted", "aborted", EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        # One line, like every other error; `--help` shows the usage.
        _report(as_json, "UsageError", " ".join(exc.format_message().split()), exc.exit_code)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _report(as_json, "Interrupted", "interrupted", EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        # The message of an unexpected exception is not shown: it was not
        # written for users and could carry anything.
        _report(as_json, "InternalError",
                f"internal error ({type(exc).__name__}); run with --debug for details",
                EXIT_INTERNAL)
        return EXIT_INTERNAL
    return rv if isinstance(rv, int) else 0


def entry() -> None:
    sys.exit(main())
