"""`tokenkeys assistant [OPTIONS]`, `assistant pairings list|revoke`, `assistant demo-platform`.

The assistant itself (tokenkeys.assistant) is imported only when it runs: Starlette and
uvicorn cost nothing to the other commands."""

from __future__ import annotations

import click

from tokenkeys.cli.context import App, pass_app
from tokenkeys.cli.translated import Group
from tokenkeys.i18n import N_, _
from tokenkeys.services.pairings import PairingStore


@click.group("assistant", invoke_without_command=True, cls=Group, help=N_(
    "Run the local assistant the platform's web pages talk to (Ctrl-C stops it).\n"
    "\n"
    "It listens on 127.0.0.1 only, answers the platform origins allowed in the\n"
    "configuration ([assistant] origins) or with --origin, and asks for your\n"
    "approval and the PIN in its own window (or here with --console) before any key\n"
    "is used."))
@click.option("--host", default=None, metavar="ADDRESS",
              help=N_("Loopback address to listen on: 127.0.0.1 (default) or ::1."))
@click.option("--port", type=int, default=None, help=N_("Port (default 8765)."))
@click.option("--origin", "origins", multiple=True, metavar="URL",
              help=N_("A platform origin allowed to call the assistant (repeat it)."))
@click.option("--console", is_flag=True,
              help=N_("Ask for approvals and the PIN on this terminal too."))
@click.option("--open", "open_window", is_flag=True,
              help=N_("Open the assistant's window in the web browser."))
@click.option("--max-body", type=int, default=None, metavar="BYTES",
              help=N_("Largest envelope accepted."))
@click.option("--concurrency", type=int, default=None, help=N_("Requests handled at once."))
@click.option("--idle-timeout", type=float, default=None, metavar="SECONDS",
              help=N_("Seconds without a byte from a page before its request is dropped."))
@click.option("--approval-timeout", type=float, default=None, metavar="SECONDS",
              help=N_("Seconds the user has to approve an operation."))
@click.pass_context
def assistant_group(ctx: click.Context, host: str | None, port: int | None,
                    origins: tuple[str, ...], console: bool, open_window: bool,
                    max_body: int | None, concurrency: int | None, idle_timeout: float | None,
                    approval_timeout: float | None) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from tokenkeys.assistant import server, settings

    app = ctx.find_object(App)
    assert app is not None
    chosen = settings.merge(settings.from_config(app.config.source), host=host, port=port,
                            origins=list(origins), console=console or None,
                            max_body=max_body, concurrency=concurrency,
                            idle_timeout=idle_timeout, approval_timeout=approval_timeout)
    server.serve(chosen, app.config, open_window=open_window)


@assistant_group.group("pairings", help=N_(
    "The platform origins paired with the assistant."))
def pairings_group() -> None:
    pass


@pairings_group.command("list", help=N_(
    "Every paired origin (the tokens themselves are never kept, only their hashes)."))
@pass_app
def pairings_list(app: App) -> None:
    rows = PairingStore().list()
    app.emit({"pairings": [p.to_json() for p in rows]},
             lambda: app.table(None, [N_("origin"), N_("token id"), N_("paired at")],
                               [(p.origin, p.to_json()["token_id"], p.created_at)
                                for p in rows]) if rows else app.say(_("no paired origins")))


@pairings_group.command("revoke", help=N_(
    "Revoke ORIGIN's pairing: its pages must pair again."))
@click.argument("origin")
@pass_app
def pairings_revoke(app: App, origin: str) -> None:
    from tokenkeys.assistant.settings import normalize_origin

    gone = PairingStore().revoke(normalize_origin(origin))
    app.emit({"revoked": gone.to_json()},
             lambda: app.say(_("revoked the pairing of {origin}").format(origin=gone.origin)))


@assistant_group.command("demo-platform", help=N_(
    "Serve a demo of the platform's pages on another loopback origin."))
@click.option("--port", type=int, default=None, help=N_("Port (default 8766)."))
@click.option("--assistant", "assistant_url", default=None, metavar="URL",
              help=N_("The assistant's address (default http://127.0.0.1:8765)."))
def demo_platform(port: int | None, assistant_url: str | None) -> None:
    from tokenkeys.assistant import demo

    demo.serve(port=port, assistant_url=assistant_url)
