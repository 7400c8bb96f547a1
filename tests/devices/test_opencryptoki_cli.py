"""The CLI smoke run on opencryptoki's software token (pkcsslotd; `serial`: one per
machine). Its token is initialised by the fixture (C_InitToken where the slot is
new); `token init` here checks the refusal to re-initialise it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cli.conftest import TK
from tests.conftest import reset_opencryptoki
from tests.devices.smoke import OAEP_HASHES, run_smoke


def test_opencryptoki_cli_smoke(tk: TK, opencryptoki: Any, tmp_path: Path) -> None:
    uri = reset_opencryptoki(opencryptoki)
    again = tk("token", "init", "--token", f"pkcs11:slot-id=3?module-path={opencryptoki.module}",
               "--label", "other")
    assert again.code != 0 and "already initialised" in again.err
    seen = run_smoke(tk, uri, tmp_path, ec=False, wraps=False)
    assert seen["opens"] == [f"oaep-{h}" for h in OAEP_HASHES] + ["pkcs1v15"]
    # No EC at all: the device's own refusal.
    assert "ec-p256 key generation" in seen["ec"].json["error"]["message"]  # type: ignore[attr-defined]
