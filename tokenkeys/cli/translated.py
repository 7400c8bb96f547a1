"""Click in the user's language: help texts translated where they are shown, and
click's own sentences ("Usage:", "No such option ...") from tokenkeys' catalog.

Help texts are marked N_() (English in the code) and translated when help is
formatted, not at import: the language is only known once the command line is read
(`--lang`), after the command modules defined their options.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from tokenkeys.i18n import N_, Nn_, _, ngettext

# Click's own user-facing sentences (click calls gettext on them): listed here so that
# they are extracted into tokenkeys' catalog. Click's modules look them up through
# use_catalog_for_click().
CLICK_TEXTS = (
    N_("Usage:"), N_("Options"), N_("Commands"), N_("Positional arguments"),
    N_("Show this message and exit."), N_("Show the version and exit."),
    N_("%(prog)s, version %(version)s"), N_("Aborted!"), N_("Missing command."),
    N_("Error: {message}"), N_("Try '{command} {option}' for help."),
    N_("Invalid value: {message}"), N_("Invalid value for {param_hint}: {message}"),
    N_("Missing argument"), N_("Missing option"), N_("Missing parameter"),
    N_("Missing {param_type}"), N_("Missing parameter: {param_name}"),
    N_("No such option {name!r}."), N_("No such command {name!r}."),
    N_("Option {name!r} does not take a value."), N_("Argument {name!r} takes {nargs} values."),
    N_("Could not open file {filename!r}: {message}"), N_("env var: {var}"),
    N_("default: {default}"), N_("(dynamic)"), N_("deprecated"), N_("required"),
    N_("Do you want to continue?"), N_("Repeat for confirmation"),
    N_("Error: The two entered values do not match."), N_("Error: invalid input"),
    N_("Choose from:\n\t{choices}"), N_("{value!r} is not a valid {number_type}."),
    N_("{value} is not in the range {range}."), N_("integer"), N_("float"),
    N_("{value!r} is not a valid boolean. Recognized values: {states}"),
    N_("file"), N_("directory"), N_("path"),
    N_("{name} {filename!r} does not exist."), N_("{name} {filename!r} is a file."),
    N_("{name} {filename!r} is a directory."), N_("{name} {filename!r} is not readable."),
    N_("{name} {filename!r} is not writable."), N_("{name} {filename!r} is not executable."),
)
CLICK_PLURALS = (
    Nn_("Got unexpected extra argument ({args})", "Got unexpected extra arguments ({args})"),
    Nn_("Did you mean {possibility}?", "(Did you mean one of: {possibilities}?)"),
    Nn_("Option {name!r} requires an argument.", "Option {name!r} requires {nargs} arguments."),
    Nn_("{value!r} is not {choice}.", "{value!r} is not one of {choices}."),
)


def use_catalog_for_click() -> None:
    """Click binds gettext's functions in each of its modules at import; point those
    names at tokenkeys' catalog (click documents gettext as its translation hook)."""
    for name, module in list(sys.modules.items()):
        if name == "click" or name.startswith("click."):
            if getattr(module, "_", None) is not None:
                module._ = _  # type: ignore[attr-defined]
            if getattr(module, "ngettext", None) is not None:
                module.ngettext = ngettext  # type: ignore[attr-defined]


@contextmanager
def _translated(items: list[Any]) -> Iterator[None]:
    """Each item's `help` in the current language for the time of one formatting."""
    saved = [item.help for item in items]
    try:
        for item in items:
            if item.help:
                item.help = _(item.help)
        yield
    finally:
        for item, text in zip(items, saved, strict=True):
            item.help = text


class TranslatedMixin:
    help: str | None
    params: list[click.Parameter]

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with _translated([self]):
            super().format_help_text(ctx, formatter)  # type: ignore[misc]

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with _translated([p for p in self.params if isinstance(p, click.Option)]):
            super().format_options(ctx, formatter)  # type: ignore[misc]

    def get_short_help_str(self, limit: int = 45) -> str:
        with _translated([self]):
            return super().get_short_help_str(limit)  # type: ignore[misc,no-any-return]


class Command(TranslatedMixin, click.Command):
    pass


class Group(TranslatedMixin, click.Group):
    command_class = Command
    group_class = type  # subgroups are Groups too
