"""The assistant's flows on a real SoftHSM2 token, through the Python test client: generate
after approval, list with the certificate, bind a consultation, open envelopes in a
session (one approval, one PIN); and the refusals that need a token."""

from __future__ import annotations

import json
import os
import subprocess
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.assistant.conftest import PLATFORM, Running, free_port, make, paired, served
from tests.conftest import SoftHSM
from tokenkeys.config import Config
from tokenkeys.services import sealing
from tokenkeys.services.access import open_registry

pytestmark = pytest.mark.softhsm


@pytest.fixture
def hsm(softhsm: SoftHSM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    monkeypatch.delenv("TOKENKEYS_PIN", raising=False)  # the PIN comes from the approval only
    uri = softhsm.uri(softhsm.new_token("asst"))
    config = Config(token=uri, registry=str(tmp_path / "registry.sqlite"))
    with paired(tmp_path, config) as running:
        yield running


def _generate(r: Running, name: str, *, backup: bool = False) -> Any:
    return r.with_approval(lambda: r.client.post("/v1/keys", headers=r.headers(), json={
        "designation": name, "days": 365, "algorithm": "rsa2048", "backup": backup}))


def _bound(r: Running, tmp_path: Path, reference: str = "2026-AO-001") -> Config:
    assert _generate(r, "BICLE-2026").status_code == 201
    assert _generate(r, "SECOURS", backup=True).status_code == 201
    made = r.client.post("/v1/consultations", headers=r.headers(),
                         json={"reference": reference, "key": "BICLE-2026"})
    assert made.status_code == 201, made.text
    return r.assistant.config


def _seal(config: Config, tmp_path: Path, data: bytes, name: str,
          reference: str = "2026-AO-001") -> bytes:
    src, out = tmp_path / f"{name}.txt", tmp_path / f"{name}.p7m"
    src.write_bytes(data)
    sealing.seal_file(config, src, out, consultation=reference)
    return out.read_bytes()


def test_generate_after_approval_then_list_with_certificate(hsm: Running) -> None:
    r = _generate(hsm, "BICLE-2026")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "certified"
    assert body["certificate_pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PUBLIC KEY" in body["public_key_pem"]
    [asked] = hsm.answers
    assert asked["origin"] == PLATFORM and asked["operation"] == "generate"
    assert "BICLE-2026" in asked["text"] and PLATFORM in asked["text"]
    listed = hsm.client.get("/v1/keys", headers=hsm.headers()).json()["keys"]
    [key] = listed
    assert key["designation"] == "BICLE-2026" and key["backup"] is False
    assert key["certificate_pem"] == body["certificate_pem"] and key["expiry"] == "valid"
    tokens = hsm.client.get("/v1/tokens", headers=hsm.headers()).json()["tokens"]
    assert any(t["default"] for t in tokens)


def test_refused_approval_changes_nothing(hsm: Running) -> None:
    r = hsm.with_approval(lambda: hsm.client.post("/v1/keys", headers=hsm.headers(), json={
        "designation": "NO"}), approve=False)
    assert r.status_code == 403 and r.json()["error"]["type"] == "ApprovalRefused"
    assert hsm.client.get("/v1/keys", headers=hsm.headers()).json()["keys"] == []


def test_an_approval_not_given_in_time_is_refused(softhsm: SoftHSM, tmp_path: Path) -> None:
    config = Config(token=softhsm.uri(softhsm.new_token("late")),
                    registry=str(tmp_path / "registry.sqlite"))
    with paired(tmp_path, config, approval_timeout=0.5) as r:
        answer = r.client.post("/v1/keys", headers=r.headers(), json={"designation": "LATE"})
    assert answer.status_code == 403
    assert answer.json()["error"]["type"] == "ApprovalRefused"
    assert "within" in answer.json()["error"]["message"]


def test_a_wrong_pin_says_tries_left_after_exactly_one_login(
        hsm: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenkeys.drivers.p11.python_pkcs11 import PyPkcs11Session

    _bound(hsm, tmp_path)
    logins: list[bool] = []
    real = PyPkcs11Session.login

    def counted(self: PyPkcs11Session, pin: str | None, so: bool = False) -> None:
        logins.append(so)
        real(self, pin, so)
    monkeypatch.setattr(PyPkcs11Session, "login", counted)
    r = hsm.with_approval(lambda: hsm.client.post("/v1/openings", headers=hsm.headers(), json={
        "consultation": "2026-AO-001", "count": 2}), pin="999999")
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["type"] == "PinIncorrect" and "tries_left" in error
    assert "999999" not in r.text
    assert logins == [False]
    assert hsm.assistant.sessions == {}


def test_opening_session_one_approval_one_pin(hsm: Running, tmp_path: Path) -> None:
    config = _bound(hsm, tmp_path)
    recipients = hsm.client.get("/v1/consultations/2026-AO-001/recipients",
                                headers=hsm.headers()).json()["recipients"]
    assert len(recipients) == 2
    bids = [f"bid {i} ".encode() * (i + 1) for i in range(3)]
    envelopes = [_seal(config, tmp_path, b, f"bid{i}") for i, b in enumerate(bids)]
    hsm.answers.clear()
    r = hsm.with_approval(lambda: hsm.client.post("/v1/openings", headers=hsm.headers(), json={
        "consultation": "2026-AO-001", "count": 4, "minutes": 5}))
    assert r.status_code == 201, r.text
    session = r.json()["session"]
    assert r.json()["remaining"] == 4
    [asked] = hsm.answers
    assert "open 4 bids of consultation 2026-AO-001 with BICLE-2026" in asked["text"]
    octets = hsm.headers(kind="application/octet-stream")
    for bid, envelope in zip(bids, envelopes, strict=True):
        got = hsm.client.post(f"/v1/openings/{session}/envelopes", content=envelope,
                              headers=octets)
        assert got.status_code == 200, got.text
        assert got.content == bid
    # Not sealed to this consultation: refused for this envelope, the session goes on.
    stranger = hsm.client.post(f"/v1/openings/{session}/envelopes", content=b"0" * 100,
                               headers=octets)
    assert stranger.status_code in (409, 422)
    assert stranger.json()["error"]["type"] in ("EnvelopeMalformed", "PolicyRefused")
    over = hsm.client.post(f"/v1/openings/{session}/envelopes", content=envelopes[0],
                           headers=octets)
    assert over.status_code == 410 and over.json()["error"]["type"] == "SessionOver"
    assert len(hsm.answers) == 1  # one approval for the whole session
    closed = hsm.client.request("DELETE", f"/v1/openings/{session}", headers=hsm.headers(),
                                json={})
    assert closed.status_code == 200
    with open_registry(config) as registry:
        rows = [json.loads(a.details) for a in registry.audit_rows(event="open")]
        starts = [json.loads(a.details) for a in registry.audit_rows(event="open-start")]
    assert starts[-1]["origin"] == PLATFORM and starts[-1]["limit"] == 4
    assert {row["origin"] for row in rows} == {PLATFORM}
    assert sum(row["opened"] for row in rows) == 3
    assert list(Path(hsm.assistant.workdir).iterdir()) == []  # nothing left on disk


def test_another_origin_cannot_use_a_session(hsm: Running, tmp_path: Path) -> None:
    from tests.assistant.conftest import OTHER

    _bound(hsm, tmp_path)
    r = hsm.with_approval(lambda: hsm.client.post("/v1/openings", headers=hsm.headers(), json={
        "consultation": "2026-AO-001", "count": 1}))
    session = r.json()["session"]
    other = hsm.pair(OTHER)
    got = hsm.client.post(f"/v1/openings/{session}/envelopes", content=b"x",
                          headers=hsm.headers(OTHER, token=other,
                                              kind="application/octet-stream"))
    assert got.status_code == 410
    # While the session holds the token, no second login on it (it would log it out).
    busy = hsm.client.post("/v1/keys", headers=hsm.headers(), json={"designation": "LATER"})
    assert busy.status_code == 409 and "opening session is using" in busy.text


def test_a_binding_the_registry_refuses(hsm: Running, tmp_path: Path) -> None:
    _bound(hsm, tmp_path)
    assert _generate(hsm, "AUTRE").status_code == 201
    again = hsm.client.post("/v1/consultations", headers=hsm.headers(),
                            json={"reference": "2026-AO-001", "key": "AUTRE"})
    assert again.status_code == 409, again.text
    assert again.json()["error"]["type"] == "PolicyRefused"
    unknown = hsm.client.post("/v1/consultations", headers=hsm.headers(),
                              json={"reference": "2026-AO-002", "key": "NOPE"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "KeyNotFound"


def test_a_hostile_envelope_costs_bounded_memory_and_releases_nothing(
        softhsm: SoftHSM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large envelope whose content was altered, streamed to a real uvicorn: nothing of
    it is released, and what the assistant allocates for it is bounded like the CLI's
    (the same service opens it), far below the envelope's size."""
    import httpx

    from tokenkeys.services.opening import open_envelopes
    from tokenkeys.types import PinSource, Secret

    monkeypatch.delenv("TOKENKEYS_PIN", raising=False)
    port = free_port()
    config = Config(token=softhsm.uri(softhsm.new_token("hostile")),
                    registry=str(tmp_path / "registry.sqlite"))
    app, assistant = make(tmp_path, config, port=port, approval_timeout=10.0)
    with served(app, port) as url, httpx.Client(base_url=url, timeout=60) as http:
        r = Running(http, assistant)
        r.pair()
        _bound(r, tmp_path)
        size = 24 * 1024 * 1024
        plain = os.urandom(1024) * (size // 1024)
        envelope = bytearray(_seal(config, tmp_path, plain, "big"))
        envelope[len(envelope) // 2] ^= 0x01
        hostile = tmp_path / "hostile.p7m"
        hostile.write_bytes(envelope)
        del envelope

        def chunks() -> Iterator[bytes]:
            with hostile.open("rb") as f:
                while chunk := f.read(65536):
                    yield chunk

        start = r.with_approval(lambda: http.post("/v1/openings", headers=r.headers(),
                                                  json={"consultation": "2026-AO-001"}))
        assert start.status_code == 201, start.text
        session = start.json()["session"]
        tracemalloc.start()
        try:
            got = http.post(f"/v1/openings/{session}/envelopes", content=chunks(),
                            headers=r.headers(kind="application/octet-stream"))
            assistant_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            out = tmp_path / "cli-out"
            cli = open_envelopes(config, [(hostile, out / "hostile")], outdir=out,
                                 token_uri=config.token or "", service="default",
                                 pins=PinSource(value=Secret("123456"), interactive=False))
            cli_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert got.status_code == 422 and got.json()["error"]["type"] == "EnvelopeIntegrity"
        assert plain[:1024] not in got.content
        assert list(Path(assistant.workdir).iterdir()) == []
    assert cli.results[0].error_type == "EnvelopeIntegrity"
    assert not (out / "hostile").exists()
    assert assistant_peak < 8 * 1024 * 1024, assistant_peak
    assert assistant_peak < cli_peak + 4 * 1024 * 1024, (assistant_peak, cli_peak)


def test_an_envelope_over_the_limit_is_refused_and_leaves_nothing(
        softhsm: SoftHSM, tmp_path: Path) -> None:
    config = Config(token=softhsm.uri(softhsm.new_token("lim")),
                    registry=str(tmp_path / "registry.sqlite"))
    with paired(tmp_path, config, max_body=4096) as r:
        _bound(r, tmp_path)
        start = r.with_approval(lambda: r.client.post("/v1/openings", headers=r.headers(),
                                                      json={"consultation": "2026-AO-001"}))
        session = start.json()["session"]
        big = r.client.post(f"/v1/openings/{session}/envelopes",
                            content=iter([b"0" * 4096] * 3),
                            headers=r.headers(kind="application/octet-stream"))
        assert big.status_code == 413 and big.json()["error"]["type"] == "LimitExceeded"
        assert list(Path(r.assistant.workdir).iterdir()) == []


def test_stopping_closes_sessions_and_logs_out(softhsm: SoftHSM, tmp_path: Path) -> None:
    label = softhsm.new_token("stop")
    config = Config(token=softhsm.uri(label), registry=str(tmp_path / "registry.sqlite"))
    with paired(tmp_path, config) as r:
        _bound(r, tmp_path)
        start = r.with_approval(lambda: r.client.post("/v1/openings", headers=r.headers(),
                                                      json={"consultation": "2026-AO-001"}))
        assert start.status_code == 201
        workdir = r.assistant.workdir
    assert r.assistant.sessions == {} and not workdir.exists()
    with open_registry(config) as registry:
        ends = [json.loads(a.details) for a in registry.audit_rows(event="open")]
    assert ends and ends[-1]["error"] == "Interrupted"
    # Logged out: a fresh listing of private objects without a PIN sees no private key.
    done = subprocess.run(["pkcs11-tool", "--module", softhsm.module, "--token-label", label,
                           "-O", "--type", "privkey"], capture_output=True, text=True,
                          env={**os.environ, "SOFTHSM2_CONF": str(softhsm.conf)}, check=False)
    assert "Private Key Object" not in done.stdout
