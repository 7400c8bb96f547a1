"""The CLI smoke run on an emulated TPM 2.0 (swtpm + tpm2-abrmd, tpm2-pkcs11)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cli.conftest import TK
from tests.devices.smoke import OAEP_HASHES, device_report, ok, run_smoke


def test_tpm2_cli_smoke(tk: TK, tpm2: Any, tmp_path: Path) -> None:
    def on_tpm(*args: Any, **kw: Any) -> Any:
        return tk(*args, env={**tpm2.env, **kw.pop("env", {})}, **kw)

    init = ok(on_tpm("--json", "token", "init", "--token",
                     f"pkcs11:?module-path={tpm2.module}", "--label", "smoke-tpm"))
    assert init.json
    uri = tpm2.uri("smoke-tpm")
    seen = run_smoke(on_tpm, uri, tmp_path, ec=False, wraps=False)
    # The TPM opens OAEP with every SHA-1/SHA-2 hash, and v1.5.
    assert seen["opens"] == [f"oaep-{h}" for h in OAEP_HASHES] + ["pkcs1v15"]
    # EC keys sign on a TPM but cannot open ECDH envelopes: refused for bids.
    assert "ECDH1_DERIVE" in seen["ec"].json["error"]["message"]  # type: ignore[attr-defined]
    listing = ok(on_tpm("token", "list")).out
    assert "smoke-tpm" in listing
    # doctor, as measured: a TPM, RSA 1024-3072, OAEP on the device with the hashes its
    # profile vouches for, hash-and-sign, EC that signs but opens nothing, no wrapping.
    device = device_report(on_tpm, "smoke-tpm", {"TOKENKEYS_MODULE": tpm2.module})
    assert (device["class"], device["shares"]) == ("TPM", False)
    rsa_caps, ec_caps = device["key_types"]
    assert (rsa_caps["key_sizes"], rsa_caps["algorithms"]) == ([1024, 3072],
                                                               ["rsa2048", "rsa3072"])
    assert list(rsa_caps["opens"]) == seen["opens"]
    assert set(rsa_caps["opens"].values()) == {"device RSA_PKCS_OAEP", "device RSA_PKCS"}
    assert rsa_caps["signs"] == "device SHA256_RSA_PKCS"
    assert (ec_caps["opens"], ec_caps["signs"]) == ({}, "device ECDSA_SHA256")
