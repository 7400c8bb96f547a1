"""The assistant on the software keystore (`soft:`), the fallback when no device is
present: the same flows as on SoftHSM2 (tests/assistant/test_flows.py), with the
keystore's PIN typed in the assistant's approval."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.assistant.conftest import Running, paired
from tests.cli.share_support import PIN, soft_store
from tokenkeys.config import Config
from tokenkeys.services import sealing


@pytest.fixture
def soft(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    monkeypatch.delenv("TOKENKEYS_PIN", raising=False)  # the PIN comes from the approval only
    uri = soft_store(tmp_path / "keystore")
    config = Config(token=uri, registry=str(tmp_path / "registry.sqlite"))
    with paired(tmp_path, config) as running:
        yield running


def test_generate_bind_and_open_on_the_software_keystore(soft: Running,
                                                         tmp_path: Path) -> None:
    made = soft.with_approval(lambda: soft.client.post("/v1/keys", headers=soft.headers(), json={
        "designation": "BICLE-SOFT", "days": 365, "algorithm": "ec-p256"}), pin=PIN)
    assert made.status_code == 201, made.text
    assert made.json()["certificate_pem"].startswith("-----BEGIN CERTIFICATE-----")
    backup = soft.with_approval(lambda: soft.client.post("/v1/keys", headers=soft.headers(), json={
        "designation": "SECOURS-SOFT", "algorithm": "ec-p256", "backup": True}), pin=PIN)
    assert backup.status_code == 201, backup.text
    bound = soft.client.post("/v1/consultations", headers=soft.headers(),
                             json={"reference": "2026-AO-002", "key": "BICLE-SOFT"})
    assert bound.status_code == 201, bound.text
    plain, sealed = tmp_path / "offre.txt", tmp_path / "offre.txt.p7m"
    plain.write_bytes(b"offre de prix\n" * 50)
    sealing.seal_file(soft.assistant.config, plain, sealed, consultation="2026-AO-002")
    started = soft.with_approval(lambda: soft.client.post(
        "/v1/openings", headers=soft.headers(),
        json={"consultation": "2026-AO-002", "count": 1}), pin=PIN)
    assert started.status_code == 201, started.text
    got = soft.client.post(f"/v1/openings/{started.json()['session']}/envelopes",
                           content=sealed.read_bytes(),
                           headers=soft.headers(kind="application/octet-stream"))
    assert got.status_code == 200, got.text
    assert got.content == plain.read_bytes()
    assert len(soft.answers) == 3  # two generations, one opening session


def test_a_wrong_keystore_pin_is_refused_in_the_answer(soft: Running) -> None:
    made = soft.with_approval(lambda: soft.client.post("/v1/keys", headers=soft.headers(), json={
        "designation": "NO", "algorithm": "ec-p256"}), pin="not the PIN")
    assert made.status_code == 403, made.text
    assert made.json()["error"]["type"] == "PinIncorrect"
    assert "not the PIN" not in made.text
    assert soft.client.get("/v1/keys", headers=soft.headers()).json()["keys"] == []
