"""`tokenkeys doctor`: modules, tokens, relevant mechanisms, expiring keys, the registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from tokenkeys.cli.context import App, pass_app
from tokenkeys.cli.registry_opts import registry
from tokenkeys.cli.translated import Command
from tokenkeys.errors import DoctorProblems
from tokenkeys.i18n import N_, _

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
            app.say(_("  {name}: no key generation").format(name=name))
        else:
            app.say(_("  {key_type}: generates {algorithms} ({low}-{high} bits)").format(
                key_type=name,
                algorithms=", ".join(caps.algorithms) or _("nothing tokenkeys makes"),
                low=caps.sizes[0], high=caps.sizes[1]))
        for kind, route in caps.opens.items():
            app.say(_("    opens {kind} through {route}").format(kind=kind, route=route))
        if not caps.opens:
            app.say(_("    opens nothing on this device"))
        app.say(_("    signs certificates through {route}").format(route=caps.signs)
                if caps.signs else _("    signs nothing: its certificate comes from a CA"))


@click.command(cls=Command, help=N_(
    "Check modules, tokens, mechanisms, key expiry and the registry. Never prompts for a "
    "PIN.\n"
    "\n"
    "TOKENKEYS_PIN is sent only to the tokens given (--token, else the configured token)\n"
    "and to those the registry names, never to another token on the machine, and never\n"
    "when the token says its PIN's try count is low. Exits non-zero with one line per\n"
    "registry problem."))
@click.option("--days", type=click.IntRange(0), default=30, show_default=True,
              help=N_("Report keys of open consultations expiring within this many days."))
@click.option("--token", "tokens", multiple=True, metavar="URI",
              help=N_("A token TOKENKEYS_PIN is for (repeatable; default: the configured "
                      "token). Tokens the registry names are always checked."))
@pass_app
@click.pass_context
def doctor(ctx: click.Context, app: App, days: int, tokens: tuple[str, ...]) -> None:
    from tokenkeys.services import doctor as checks  # SQLAlchemy: only when doctor runs

    with registry(app) as reg:
        report = checks.run(app.config, reg, days=days, tokens=tokens)

    def human() -> None:
        app.say(_("modules: {modules}").format(
            modules=", ".join(report.modules) if report.modules else _("none found")))
        if not report.tokens:
            app.say(_("tokens: none found"))
        for rep in report.tokens:
            info = rep.info
            app.say("")
            app.say(_("token {label!r} ({manufacturer} {model}, serial {serial}) {flags}")
                    .format(label=info.label, manufacturer=info.manufacturer, model=info.model,
                            serial=info.serial, flags=', '.join(info.flags)))
            if rep.error is not None:
                app.say(_("  error: {error}").format(error=rep.error))
                continue
            if rep.device is not None:
                device_lines(app, rep.device)
            for mech, present in rep.mechanisms.items():
                app.say(f"  {'ok ' if present else 'no '} {mech:22} {_(checks.RELEVANT[mech])}")
            for name, kinds in rep.opens.items():
                app.say(_("  key {name!r} opens: {value}")
                        .format(name=name, value=', '.join(kinds) or 'nothing on this device'))
            if rep.not_valid is None:
                app.say(_("  keys: {value}")
                        .format(value=rep.no_login or 'set TOKENKEYS_PIN to check key expiry'))
            elif not rep.not_valid:
                app.say(_("  keys: none expiring or expired"))
            for k in rep.not_valid or ():
                after = k.not_after.isoformat() if k.not_after else None
                app.say(_("  key {designation!r}: {status} (not after {after})")
                        .format(designation=k.designation, status=k.status, after=after))
        app.say("")
        for note in report.registry.notes:
            app.say(_("note: {note}").format(note=note))
        for problem in report.registry.problems:
            app.say(_("problem: {problem}").format(problem=problem))
        if not report.registry.problems:
            app.say(_("registry: no problems"))

    app.emit(report.to_json(), human)
    if report.registry.problems:
        ctx.exit(DoctorProblems.exit_code)
