"""The CLI smoke run on opencryptoki's software token (pkcsslotd; `serial`: one per
machine). Its token is initialised by the fixture (C_InitToken where the slot is
new); `token init` here checks the refusal to re-initialise it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cli.conftest import TK
from tests.conftest import reset_opencryptoki
from tests.devices.smoke import OAEP_HASHES, device_report, run_smoke


def test_opencryptoki_cli_smoke(tk: TK, opencryptoki: Any, tmp_path: Path) -> None:
    uri = reset_opencryptoki(opencryptoki)
    again = tk("token", "init", "--token", f"pkcs11:slot-id=3?module-path={opencryptoki.module}",
               "--label", "other")
    assert again.code != 0 and "already initialised" in again.err
    seen = run_smoke(tk, uri, tmp_path, ec=False, wraps=False)
    assert seen["opens"] == [f"oaep-{h}" for h in OAEP_HASHES] + ["pkcs1v15"]
    # No EC at all: the device's own refusal.
    assert "ec-p256 key generation" in seen["ec"].json["error"]["message"]  # type: ignore[attr-defined]
    # doctor, as measured: RSA 512-4096, OAEP tried on the device (no profile vouches
    # for SHA-2 there; raw RSA backs it), a DigestInfo signed through CKM_RSA_PKCS, no
    # EC at all, no CKM_AES_KEY_WRAP_PAD (no sharing).
    device = device_report(tk, opencryptoki.label, {"TOKENKEYS_MODULE": opencryptoki.module})
    assert (device["class"], device["shares"]) == ("software", False)
    rsa_caps, ec_caps = device["key_types"]
    assert rsa_caps["key_sizes"] == [512, 4096]
    assert rsa_caps["algorithms"] == ["rsa2048", "rsa3072", "rsa4096"]
    assert list(rsa_caps["opens"]) == seen["opens"]
    assert rsa_caps["signs"] == "software sha256 + DigestInfo, device RSA_PKCS"
    assert ec_caps == {"key_type": "ec", "key_sizes": [], "algorithms": [], "opens": {},
                       "signs": None}
