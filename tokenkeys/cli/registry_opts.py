"""CLI plumbing for registry commands: --service and opening the configured registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tokenkeys.cli.context import App
from tokenkeys.i18n import N_

if TYPE_CHECKING:
    from tokenkeys.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])


def service_option(func: F) -> F:
    return click.option(
        "--service", "service", metavar="NAME",
        help=N_("The service (default: `service` in the configuration, else 'default')."),
    )(func)


def service_name(app: App, given: str | None) -> str:
    return given or app.config.service


def open_registry(app: App) -> Registry:
    # Imported here: SQLAlchemy costs commands that never touch the registry.
    from tokenkeys.services.access import open_registry as open_configured

    return open_configured(app.config)


@contextmanager
def registry(app: App) -> Iterator[Registry]:
    reg = open_registry(app)
    try:
        yield reg
    finally:
        reg.close()
