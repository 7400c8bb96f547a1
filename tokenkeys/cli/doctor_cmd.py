"""`tokenkeys doctor`: modules, tokens, relevant mechanisms, expiring keys, the registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from tokenkeys.cli.context import App, pass_app
from tokenkeys.cli.registry_opts import registry
from tokenkeys.errors import DoctorProblems

if TYPE_CHECKING:
    from tokenkeys.services.device_caps import DeviceCaps


def device_lines(app: App, device: DeviceCaps) -> None:
    """The device's class and, per key type, what it can do (as measured)."""
    app.say("  device class: {device_class}; {shares}".format(
        device_class=device.device_class,
        shares="shares keys (a --shareable key leaves wrapped)" if device.shares
        else "does not share keys (no key wrapping)"))
    for caps in device.key_types:
        name = caps.key_type.value.upper()
        if caps.sizes is None:
            app.say(f"  {name}: no key generation")
        else:
            app.say("  {key_type}: generates {algorithms} ({low}-{high} bits)".format(
                key_type=name, algorithms=", ".join(caps.algorithms) or "nothing tokenkeys "
                "makes", low=caps.sizes[0], high=caps.sizes[1]))
        for kind, route in caps.opens.items():
            app.say(f"    opens {kind} through {route}")
        if not caps.opens:
            app.say("    opens nothing on this device")
        app.say(f"    signs certificates through {caps.signs}"
                if caps.signs else "    signs nothing: its certificate comes from a CA")


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
            if rep.device is not None:
                device_lines(app, rep.device)
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
