"""The assistant's settings: loopback address, allowed origins, limits.

The configuration file's `[assistant]` table gives the defaults; the command line
adds to them (`--origin` repeats) or overrides them:

    [assistant]
    port = 8765
    origins = ["https://marches.example"]
    max_body = 2147483648        # bytes of one envelope
    concurrency = 8              # requests at once
    idle_timeout = 30            # seconds without a byte from the client
    approval_timeout = 120       # seconds the user has to answer
    session_count = 1000         # envelopes an opening session may open at most
    session_seconds = 3600       # and for how long
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tokenkeys.errors import UsageError
from tokenkeys.i18n import _

LOOPBACK = ("127.0.0.1", "::1")
DEFAULT_PORT = 8765
DEMO_PORT = 8766
GiB = 1024**3


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    origins: tuple[str, ...] = ()
    console: bool = False
    max_body: int = 2 * GiB
    max_json: int = 1024 * 1024
    concurrency: int = 8
    idle_timeout: float = 30.0
    approval_timeout: float = 120.0
    session_count: int = 1000
    session_seconds: float = 3600.0
    pairings: Path | None = None  # None: services.pairings.default_path()
    workdir: Path | None = None  # None: a private directory in the user cache dir

    @property
    def own_hosts(self) -> frozenset[str]:
        """The Host values the assistant answers to (anything else may be DNS rebinding)."""
        name = f"[{self.host}]" if ":" in self.host else self.host
        return frozenset({f"{name}:{self.port}", f"localhost:{self.port}"})

    @property
    def own_origins(self) -> frozenset[str]:
        return frozenset(f"http://{host}" for host in self.own_hosts)

    @property
    def base_url(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{name}:{self.port}"


def check_bind(host: str) -> str:
    """`host` when it is a loopback address the assistant may listen on."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None or str(address) not in LOOPBACK:
        raise UsageError(_("the assistant listens on 127.0.0.1 or ::1 only, not on {host}: "
                           "it must never be reachable from another machine").format(host=host))
    return str(address)


def normalize_origin(text: str) -> str:
    """A web origin as browsers send it: scheme://host[:port], no path, lower case."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username \
            or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(_("{text!r} is not a web origin (scheme://host[:port], e.g. "
                           "https://marches.example)").format(text=text))
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[parts.scheme]
    port = "" if parts.port in (None, default) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}"


_NUMBERS: dict[str, type] = {"port": int, "max_body": int, "max_json": int, "concurrency": int,
                             "idle_timeout": float, "approval_timeout": float,
                             "session_count": int, "session_seconds": float}


def from_config(source: Path | None) -> Settings:
    """The `[assistant]` table of the configuration file, when there is one."""
    if source is None or not source.exists():
        return Settings()
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8")).get("assistant", {})
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(_("cannot read configuration {source}: {exc}")
                         .format(source=source, exc=exc)) from None
    if not isinstance(data, dict):
        raise UsageError(_("{source}: [assistant] must be a table").format(source=source))
    return merge(Settings(), source, **data)


def merge(base: Settings, source: Path | str | None = None, **given: Any) -> Settings:
    """`base` with the values given (None means not given); origins are added."""
    source = _("the command line") if source is None else source
    changes: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        if name == "origins":
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise UsageError(_("{source}: origins must be a list of strings")
                                 .format(source=source))
            changes["origins"] = tuple(dict.fromkeys(
                [*base.origins, *(normalize_origin(v) for v in value)]))
        elif name in _NUMBERS:
            kind = _NUMBERS[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise UsageError(_("{source}: {name} must be a number above 0")
                                 .format(source=source, name=name))
            changes[name] = kind(value)
        elif name == "host":
            changes["host"] = check_bind(str(value))
        elif name in ("console",):
            changes[name] = bool(value)
        elif name in ("pairings", "workdir"):
            changes[name] = Path(value)
        else:
            raise UsageError(_("{source}: unknown assistant setting {name!r}")
                             .format(source=source, name=name))
    return dataclasses.replace(base, **changes)
