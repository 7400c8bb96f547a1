"""The `key` group, assembled from the modules that define its commands."""

from __future__ import annotations

from tokenkeys.cli import key_cert_cmds  # noqa: F401  (adds csr/import-cert/export-public)
from tokenkeys.cli.key_cmds import key
from tokenkeys.cli.key_policy_cmds import key_adopt, key_renew

key.add_command(key_adopt)
key.add_command(key_renew)

__all__ = ["key"]
