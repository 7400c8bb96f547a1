"""SoftHSM2 as doctor measures it, and every envelope kind `key list` claims opened
from a real `openssl cms` envelope: OAEP SHA-1 on the device, SHA-2 through raw RSA
and software decoding, v1.5 through CKM_RSA_PKCS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cli.conftest import SOFTHSM_MODULE, TK
from tests.devices.smoke import device_report, ok, open_every_claimed


def test_softhsm2_doctor_and_every_claimed_kind(tk: TK, softhsm: Any, token_label: str,
                                               tmp_path: Path) -> None:
    uri = softhsm.uri(token_label)
    for name, alg in (("R", "rsa2048"), ("E", "ec-p256")):
        ok(tk("key", "generate", "--token", uri, "--name", name, "--algorithm", alg))
    pem = tmp_path / "r.pem"
    ok(tk("key", "export-cert", "R", "--token", uri, "-o", pem))
    claimed = open_every_claimed(tk, uri, "R", pem, tmp_path)
    assert claimed == ["oaep-sha1", "oaep-sha256", "oaep-sha384", "oaep-sha512", "pkcs1v15"]

    device = device_report(tk, token_label, {"TOKENKEYS_MODULE": SOFTHSM_MODULE})
    assert (device["class"], device["shares"]) == ("software", True)
    rsa_caps, ec_caps = device["key_types"]
    assert rsa_caps["key_sizes"] == [512, 16384]
    assert rsa_caps["algorithms"] == ["rsa2048", "rsa3072", "rsa4096"]
    assert list(rsa_caps["opens"]) == claimed  # the same rule as key list
    assert rsa_caps["opens"]["oaep-sha1"] == "device RSA_PKCS_OAEP"
    for h in ("sha256", "sha384", "sha512"):  # SoftHSM2 answers CKR_ARGUMENTS_BAD
        assert rsa_caps["opens"][f"oaep-{h}"] == "device RSA_X_509 + software OAEP"
    assert rsa_caps["signs"] == "device SHA256_RSA_PKCS"
    assert ec_caps["algorithms"] == ["ec-p256", "ec-p384"]
    assert ec_caps["opens"] == {"ecdh": "device ECDH1_DERIVE"}
    assert ec_caps["signs"] == "software sha256, device ECDSA"  # no CKM_ECDSA_SHA256
    human = tk("doctor", env={"TOKENKEYS_MODULE": SOFTHSM_MODULE, "TOKENKEYS_PIN": None})
    assert "device class: software; shares keys" in human.out
    assert "opens oaep-sha256 through device RSA_X_509 + software OAEP" in human.out
