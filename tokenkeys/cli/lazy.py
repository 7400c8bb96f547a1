"""A click group whose commands are imported only when one of them runs.

`tokenkeys --help` lists every command from a table of summaries instead of importing
each command's module, and so the drivers, the registry and the envelope code.
tests/cli/test_startup.py checks that each summary is the command's own.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click

from tokenkeys.cli.translated import Group
from tokenkeys.i18n import _


@dataclass(frozen=True)
class LazyCommand:
    target: str  # "module:attribute"
    summary: str  # the command's get_short_help_str(), untruncated, in English

    def load(self) -> click.Command:
        module, _sep, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), self.target
        return command


class LazyGroup(Group):
    def __init__(self, *args: Any, lazy: Mapping[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(self.lazy[cmd_name].load(), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        # The same layout as click's own listing, without loading what is not loaded.
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.commands:
                command = self.commands[name]
                if command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit)))
            else:
                # A bare command truncates the summary exactly as the real one would.
                stand_in = click.Command(name, help=_(self.lazy[name].summary))
                rows.append((name, stand_in.get_short_help_str(limit)))
        with formatter.section(_("Commands")):
            formatter.write_dl(rows)
