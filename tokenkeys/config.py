"""Configuration: a TOML file, found by --config, TOKENKEYS_CONFIG or the user config dir.

    module = "/usr/lib/softhsm/libsofthsm2.so"   # default PKCS#11 module
    modules = ["/opt/hsm/lib/libcs_pkcs11.so"]    # extra modules to list
    card_modules = ["/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"]  # drive as smartcards
    token = "pkcs11:token=buyer"                  # default --token
    registry = "/var/lib/tokenkeys/registry.sqlite"   # or "postgresql://officer@db/tokenkeys"
    service = "achats"                            # default --service
    audit_checkpoints = "/mnt/offsite/checkpoints"    # where checkpoints are kept (doctor)
    audit_checkpoint_days = 7                     # doctor: newest checkpoint at most this old
    audit_trust = "/etc/tokenkeys/audit-ca.pem"   # audit verify --checkpoint: signer anchor
    lang = "fr"                                   # messages in French (else LC_ALL, LANG...)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

import platformdirs

from tokenkeys.errors import UsageError
from tokenkeys.files import MAX_CONFIG, read_limited
from tokenkeys.i18n import _

APP = "tokenkeys"


def default_registry() -> str:
    return str(Path(platformdirs.user_data_dir(APP)) / "registry.sqlite")


@dataclass(frozen=True)
class Config:
    module: str | None = None
    modules: tuple[str, ...] = ()
    card_modules: tuple[str, ...] = ()
    token: str | None = None
    # A file path (SQLite) or a postgresql:// URL (no password: libpq finds it).
    # Computed when a Config is made, not at import: XDG_DATA_HOME may change in between.
    registry: str = field(default_factory=default_registry)
    service: str = "default"
    source: Path | None = None
    # Audit checkpoints (services/audit_checkpoint.py): the directory doctor reads, the
    # age doctor accepts, and the certificates a checkpoint's signer must chain to.
    audit_checkpoints: str | None = None
    audit_checkpoint_days: int = 7
    audit_trust: str | None = None
    lang: str | None = None  # "fr" or "en"; None: from the environment (tokenkeys.i18n)

    @property
    def default_module(self) -> str | None:
        """TOKENKEYS_MODULE wins over the file."""
        return os.environ.get("TOKENKEYS_MODULE") or self.module

    @property
    def default_token(self) -> str | None:
        """TOKENKEYS_TOKEN wins over the file's `token`."""
        return os.environ.get("TOKENKEYS_TOKEN") or self.token


def _strings(data: dict[str, object], key: str, path: Path) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(_("{path}: {key} must be a list of strings").format(path=path, key=key))
    return tuple(str(v) for v in value)


def load_config(path: Path | None = None) -> Config:
    env_path = os.environ.get("TOKENKEYS_CONFIG")
    if path is None and env_path:
        path = Path(env_path)
    explicit = path is not None
    if path is None:
        path = Path(platformdirs.user_config_dir(APP)) / "config.toml"
    registry_env = os.environ.get("TOKENKEYS_REGISTRY")
    if not path.exists():
        if explicit:
            raise UsageError(_("configuration file not found: {path}").format(path=path))
        config = Config()
    else:
        try:
            text = read_limited(path, MAX_CONFIG, "configuration file").decode("utf-8")
            data = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(_("cannot read configuration {path}: {exc}")
                             .format(path=path, exc=exc)) from None
        module = data.get("module")
        if module is not None and not isinstance(module, str):
            raise UsageError(_("{path}: module must be a string").format(path=path))
        registry = data.get("registry")
        token = data.get("token")
        service = data.get("service")
        for name, value in (("registry", registry), ("token", token), ("service", service)):
            if value is not None and not isinstance(value, str):
                raise UsageError(_("{path}: {name} must be a string").format(path=path, name=name))
        checkpoints, trust = data.get("audit_checkpoints"), data.get("audit_trust")
        lang = data.get("lang")
        for name, value in (("audit_checkpoints", checkpoints), ("audit_trust", trust),
                            ("lang", lang)):
            if value is not None and not isinstance(value, str):
                raise UsageError(_("{path}: {name} must be a string").format(path=path, name=name))
        days = data.get("audit_checkpoint_days", Config.audit_checkpoint_days)
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise UsageError(_("{path}: audit_checkpoint_days must be a whole number of "
                               "days, at least 1").format(path=path))
        config = Config(
            module=module,
            modules=_strings(data, "modules", path),
            card_modules=_strings(data, "card_modules", path),
            token=token,
            registry=registry or default_registry(),
            service=service or Config.service,
            source=path,
            audit_checkpoints=checkpoints,
            audit_checkpoint_days=days,
            audit_trust=trust,
            lang=lang,
        )
    if registry_env:
        config = replace(config, registry=registry_env)
    return config
