"""Entry point: global options, command groups, and the error-to-exit-code mapping."""

from __future__ import annotations

import gc
import json
import logging
import sys
import warnings
from pathlib import Path

import click

from tokenkeys import __version__
from tokenkeys.cli.app import FILE_PATH, App, visible
from tokenkeys.cli.lazy import LazyCommand, LazyGroup
from tokenkeys.cli.translated import use_catalog_for_click
from tokenkeys.config import load_config
from tokenkeys.errors import TokenKeysError
from tokenkeys.i18n import LANGUAGES, N_, _, set_language

EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

# Each command's module is imported only when that command runs (see cli.lazy). The
# summaries are translated where they are shown, like the commands' own help.
COMMANDS = {
    name: LazyCommand(f"tokenkeys.cli.{target}", summary)
    for name, target, summary in [
        ("token", "token_cmds:token", N_("List and initialise tokens.")),
        ("key", "key_group:key", N_("Generate, list, export and delete key pairs.")),
        ("ca", "ca_cmds:ca",
         N_("The entity's CA: issue certificates for keys that cannot certify themselves.")),
        ("doctor", "doctor_cmd:doctor",
         N_("Check modules, tokens, mechanisms, key expiry and the registry.")),
        ("seal", "envelope_cmds:seal_cmd",
         N_("Seal INPUT to every recipient certificate (streaming, constant memory).")),
        ("open", "envelope_cmds:open_cmd",
         N_("Open envelopes (files or directories) into OUTDIR with the keys on the token.")),
        ("service", "service_cmds:service_group",
         N_("Services of the entity: each owns its keys, backup keys and consultations.")),
        ("consultation", "consultation_cmds:consultation_group",
         N_("Consultations (calls for tenders): each bound for good to one key pair.")),
        ("registry", "registry_cmds:registry_group",
         N_("The registry database (SQLite file or shared PostgreSQL).")),
        ("audit", "registry_cmds:audit_group", N_("The hash-chained audit log.")),
        ("assistant", "assistant_cmds:assistant_group",
         N_("Run the local assistant the platform's web pages talk to (Ctrl-C stops it).")),
        ("share", "share_cmds:share_group",
         N_("Share a shareable key: PKCS#12 file export/import, or device-to-device copy.")),
    ]
}


@click.group(cls=LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]}, help=N_(
    "tokenkeys: key pairs for sealed bids, kept inside PKCS#11 devices."))
@click.option("--json", "as_json", is_flag=True, help=N_("Print one JSON document on stdout."))
@click.option("--debug", is_flag=True, help=N_("Show debug logs and tracebacks."))
@click.option(
    "--config",
    "config_path",
    type=FILE_PATH,
    help=N_("Configuration file (default: TOKENKEYS_CONFIG or the user config dir)."),
)
@click.option("--lang", type=click.Choice(LANGUAGES), metavar="en|fr",
              help=N_("Language of messages (default: the configuration's lang, then "
                      "LC_ALL, LC_MESSAGES, LANG)."))
@click.version_option(__version__, prog_name="tokenkeys")
@click.pass_context
def cli(ctx: click.Context, as_json: bool, debug: bool, config_path: Path | None,
        lang: str | None) -> None:
    if debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    config = load_config(config_path)
    set_language(lang or config.lang)
    ctx.obj = App(json=as_json, debug=debug, config=config)


def _language_first(args: list[str]) -> None:
    """The language, before click reads the command line: its help and errors use it.

    Reads --lang and --config among the global options (those before the command), then
    the configuration's lang, then the environment. A configuration that does not load
    is reported by the group, in the environment's language."""
    lang, config_path = None, None
    i = 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in ("--lang", "--config"):
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            if name == "--lang":
                lang = value
            else:
                config_path = Path(value)
        i += 1
    if lang is None:
        try:
            lang = load_config(config_path).lang
        except TokenKeysError:
            lang = None
    set_language(lang)



def _report(as_json: bool, kind: str, message: str, code: int,
            recipients: tuple[str, ...] | None = None) -> None:
    if as_json:
        error: dict[str, object] = {"type": kind, "message": message, "exit_code": code}
        if recipients is not None:  # NoMatchingRecipient: who the envelope is for
            error["recipients"] = list(recipients)
        click.echo(json.dumps({"ok": False, "error": error}, indent=2))
    else:
        # Messages quote file names and certificate fields: never let them drive the terminal.
        click.echo(_("tokenkeys: error: {message}").format(message=visible(message)), err=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    debug = "--debug" in args
    # A library's warning (cryptography's on an odd certificate, a deprecation) is not
    # for users: shown with --debug only, never raw with a source path, and never an
    # internal error under PYTHONWARNINGS=error. tokenkeys' own code triggers none.
    warnings.resetwarnings()
    warnings.simplefilter("default" if debug else "ignore")
    _language_first(args)
    use_catalog_for_click()
    try:
        rv = cli.main(args=args, prog_name="tokenkeys", standalone_mode=False)
    except TokenKeysError as exc:
        if debug:
            logging.getLogger("tokenkeys").exception("failed")
        _report(as_json, type(exc).__name__, str(exc), exc.exit_code,
                getattr(exc, "recipients", None))
        return exc.exit_code
    except click.exceptions.Abort:
        _report(as_json, "Aborted", _("aborted"), EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        # One line, like every other error; `--help` shows the usage.
        _report(as_json, "UsageError", " ".join(exc.format_message().split()), exc.exit_code)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _report(as_json, "Interrupted", _("interrupted"), EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        # The message of an unexpected exception is not shown: it was not
        # written for users and could carry anything.
        _report(as_json, "InternalError",
                _("internal error ({kind}); run with --debug for details")
                .format(kind=type(exc).__name__),
                EXIT_INTERNAL)
        return EXIT_INTERNAL
    return rv if isinstance(rv, int) else 0


def entry() -> None:
    code = main()
    # The work is done and every output closed: a last collection over everything the
    # run imported would only delay the exit (PKCS#11 finalisation still runs).
    gc.freeze()
    sys.exit(code)
