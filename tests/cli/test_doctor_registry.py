"""`doctor` reports registry problems, one line each, and exits 15 (both backends)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.cli.conftest import SOFTHSM_MODULE, TK
from tests.registry.conftest import soft_facts
from tokenkeys.registry import Registry


def test_doctor_registry_problems(rtk: TK, softhsm: Any, registry_location: str,
                                  cli_env: dict[str, str]) -> None:
    label = softhsm.new_token("doc")
    uri = softhsm.uri(label)
    for args in (["--name", "COURT", "--days", "10"],
                 ["--name", "SECOURS", "--backup", "--days", "365"],
                 ["--name", "PERDUE", "--days", "365"]):
        assert rtk("key", "generate", "--token", uri, "--algorithm", "ec-p256", *args).code == 0
    assert rtk("consultation", "create", "AO-1", "--key", "COURT").code == 0
    clean = rtk("--json", "doctor", "--days", "5")
    assert clean.code == 0 and clean.json["problems"] == [], clean.json

    base = ["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", label, "--login",
            "--pin", "env:TOKENKEYS_PIN"]
    subprocess.run([*base, "--keypairgen", "--key-type", "EC:prime256v1", "--label", "ORPHELINE",
                    "--id", "0c"], env=cli_env, check=True, capture_output=True)
    for kind in ("privkey", "pubkey", "cert"):
        subprocess.run([*base, "--delete-object", "--type", kind, "--label", "PERDUE"],
                       env=cli_env, check=True, capture_output=True)
    with Registry.open(registry_location) as reg:
        reg.create_service("vieux")
        long_ago = datetime.now(UTC) - timedelta(days=400)
        reg.add_key("vieux", soft_facts("OLD", backup=True, days=30, start=long_ago), "adopt")
        reg.create_service("sans")
        reg.add_key("sans", soft_facts("SEULE"), "adopt")

    run = rtk("doctor")
    assert run.code == 15, run.err
    problems = [line for line in run.out.splitlines() if line.startswith("problem: ")]
    expected = [
        "its key 'COURT' expires on",
        "service 'sans' has no backup key",
        "service 'vieux': all its backup keys have expired",
        "key 'PERDUE' (service 'default') is in the registry but missing from its token",
        "key 'ORPHELINE' on token",
    ]
    for text in expected:
        assert sum(text in p for p in problems) == 1, (text, problems)
    assert len(problems) == len(expected)
    no_pin = rtk("--json", "doctor", env={"TOKENKEYS_PIN": None})
    assert no_pin.code == 15
    assert any("set TOKENKEYS_PIN" in n for n in no_pin.json["notes"])
