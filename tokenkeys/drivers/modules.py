"""Finding PKCS#11 modules: URI, configuration, environment, p11-kit's registry.

Pure path logic; loading a module is the driver's job (each binding loads its own).
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenkeys.config import Config
from tokenkeys.errors import ModuleNotFound, UsageError
from tokenkeys.i18n import _
from tokenkeys.uri import Pkcs11Uri

P11KIT_REGISTRY_DIRS = (Path("/usr/share/p11-kit/modules"), Path("/etc/pkcs11/modules"))
_MULTIARCH = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
# Where p11-kit resolves a relative `module:` name (its compiled-in module dir).
P11KIT_MODULE_DIRS = (
    Path(f"/usr/lib/{_MULTIARCH}/pkcs11"),
    Path("/usr/lib64/pkcs11"),
    Path("/usr/lib/pkcs11"),
)
# The trust module holds CA anchors, never keys.
P11KIT_SKIP = frozenset({"p11-kit-trust"})
CARD_MODULE_NAMES = frozenset({"opensc-pkcs11.so", "onepin-opensc-pkcs11.so"})


@dataclass(frozen=True)
class RegisteredModule:
    name: str  # the .module file's stem, e.g. "softhsm2"
    path: str


def _short_name(path: str) -> str:
    """libsofthsm2.so -> softhsm2 (RFC 7512 module-name)."""
    base = os.path.basename(path).split(".so")[0]
    return base[3:] if base.startswith("lib") else base


def _resolve_relative(module: str) -> str:
    if os.path.isabs(module):
        return module
    for directory in P11KIT_MODULE_DIRS:
        candidate = directory / module
        if candidate.exists():
            return str(candidate)
    return str(P11KIT_MODULE_DIRS[0] / module)


def p11kit_modules(dirs: Iterable[Path] = P11KIT_REGISTRY_DIRS) -> list[RegisteredModule]:
    """Modules registered with p11-kit (`module:` lines), trust module skipped."""
    found: dict[str, RegisteredModule] = {}
    for directory in dirs:
        if not directory.is_dir():
            continue
        for file in sorted(directory.glob("*.module")):
            if file.stem in P11KIT_SKIP or file.stem in found:
                continue
            try:
                lines = file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            for line in lines:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "module" and value.strip():
                    found[file.stem] = RegisteredModule(file.stem, _resolve_relative(value.strip()))
                    break
    return list(found.values())


def check_module(path: str) -> str:
    if not os.path.isfile(path):
        raise ModuleNotFound(_("PKCS#11 module not found: {path}").format(path=path))
    return path


def _by_name(name: str) -> str:
    registered = p11kit_modules()
    for module in registered:
        if name in (module.name, _short_name(module.path), os.path.basename(module.path)):
            return check_module(module.path)
    known = ", ".join(m.name for m in registered) or "none"
    raise ModuleNotFound(_("no p11-kit module named {name!r} (registered: {known})")
                         .format(name=name, known=known))


def explicit_module(uri: Pkcs11Uri, config: Config) -> str | None:
    """Steps 1-3: module-path, module-name, then config/TOKENKEYS_MODULE."""
    if uri.module_path:
        return check_module(uri.module_path)
    if uri.module_name:
        return _by_name(uri.module_name)
    if config.default_module:
        return check_module(config.default_module)
    return None


def candidate_modules(uri: Pkcs11Uri, config: Config) -> list[str]:
    """The one explicit module, else every p11-kit module that exists."""
    module = explicit_module(uri, config)
    if module is not None:
        return [module]
    found = [m.path for m in p11kit_modules() if os.path.isfile(m.path)]
    if not found:
        raise ModuleNotFound(
            _("no PKCS#11 module: give module-path in the URI, set TOKENKEYS_MODULE, or "
              "register one with p11-kit")
        )
    return found


def resolve_module(
    uri: Pkcs11Uri, config: Config, has_token: Callable[[str], bool] | None = None
) -> str:
    """One module for `uri`. Among several p11-kit modules, the one holding the token.

    Without `has_token` (or when several match) the choice is ambiguous: UsageError.
    """
    candidates = candidate_modules(uri, config)
    if len(candidates) == 1:
        return candidates[0]
    matching = [m for m in candidates if has_token(m)] if has_token else candidates
    if len(matching) == 1:
        return matching[0]
    if not matching:
        searched = ", ".join(candidates)
        raise ModuleNotFound(_("no module holds the token asked for (searched {searched})")
                             .format(searched=searched))
    raise UsageError(
        _("several PKCS#11 modules match ({matching}): add module-path to the URI or set "
          "TOKENKEYS_MODULE").format(matching=', '.join(matching))
    )


def all_modules(config: Config) -> list[str]:
    """Every module worth listing: config.module, config.modules, TOKENKEYS_MODULE, p11-kit."""
    paths: list[str] = []
    if config.module:
        paths.append(config.module)
    paths.extend(config.modules)
    env = os.environ.get("TOKENKEYS_MODULE")
    if env:
        paths.append(env)
    paths.extend(m.path for m in p11kit_modules() if os.path.isfile(m.path))
    seen: set[str] = set()
    unique: list[str] = []
    for path in paths:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique


def is_card_module(path: str, config: Config) -> bool:
    """OpenSC, or listed in config.card_modules: those get the PyKCS11 adapter."""
    if os.path.basename(path) in CARD_MODULE_NAMES:
        return True
    real = os.path.realpath(path)
    return any(os.path.realpath(card) == real for card in config.card_modules)
