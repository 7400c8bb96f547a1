"""`tokenkeys doctor`: modules, tokens, relevant mechanisms, expiring keys, the registry."""

from __future__ import annotations

import click

from tokenkeys.cli.context import App, pass_app
from tokenkeys.cli.registry_opts import registry
from tokenkeys.errors import DoctorProblems


@click.command()
@click.option("--days", type=click.IntRange(0), default=30, show_default=True,
              help="Report keys of open consultations expiring within this many days.")
@click.option("--token", "tokens", multiple=True, metavar="URI",
              help="A token TOKENKEYS_PIN is for (repeatable; default: the configured "
                   "token). Tokens the registry names are always checked.")
@pass_app
@click.pass_context
def doctor(ctx: click.Context, app: App, days: int, tokens: tuple[str, ...]) -> None:
    """Check modules, tokens, mechanisms, key expiry and the registry. Never prompts for a PIN.

    TOKENKEYS_PIN is sent only to the tokens given (--token, else the configured token)
    and to those the registry names, never to another token on the machine, and never
    when the token says its PIN's try count is low. Exits non-zero with one line per
    registry problem.
    """
    from tokenkeys.services import doctor as checks  # SQLAlchemy: only when doctor runs

    with registry(app) as reg:
        report = checks.run(app.config, reg, days=days, tokens=tokens)

    def human() -> None:
        app.say("modules: " + (", ".join(report.modules) if report.modules else "none found"))
        if not report.tokens:
            app.say("tokens: none found")
        for rep in report.tokens:
            info = rep.info
            app.say("")
            app.say(f"token {info.label!r} ({info.manufacturer} {info.model}, "
                    f"serial {info.serial}) {', '.join(info.flags)}")
            if rep.error is not None:
                app.say(f"  error: {rep.error}")
                continue
            for mech, present in rep.mechanisms.items():
                app.say(f"  {'ok ' if present else 'no '} {mech:22} {checks.RELEVANT[mech]}")
            for name, kinds in rep.opens.items():
                app.say(f"  key {name!r} opens: {', '.join(kinds) or 'nothing on this device'}")
            if rep.not_valid is None:
                app.say(f"  keys: {rep.no_login or 'set TOKENKEYS_PIN to check key expiry'}")
            elif not rep.not_valid:
                app.say("  keys: none expiring or expired")
            for k in rep.not_valid or ():
                after = k.not_after.isoformat() if k.not_after else None
                app.say(f"  key {k.designation!r}: {k.status} (not after {after})")
        app.say("")
        for note in report.registry.notes:
            app.say(f"note: {note}")
        for problem in report.registry.problems:
            app.say(f"problem: {problem}")
        if not report.registry.problems:
            app.say("registry: no problems")

    app.emit(report.to_json(), human)
    if report.registry.problems:
        ctx.exit(DoctorProblems.exit_code)
