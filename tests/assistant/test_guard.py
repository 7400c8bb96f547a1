"""Who may talk to the assistant: every refusal of the guard, each with its own test."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.assistant.conftest import BASE, OTHER, PLATFORM, Running, make
from tokenkeys.assistant.settings import Settings, check_bind, merge, normalize_origin
from tokenkeys.config import Config
from tokenkeys.errors import UsageError


def _no_cors(r: object) -> None:
    headers = r.headers  # type: ignore[attr-defined]
    assert "access-control-allow-origin" not in headers


def test_status_answers_an_allowed_origin_with_cors(running: Running) -> None:
    r = running.client.get("/v1/status", headers={"Origin": PLATFORM})
    assert r.status_code == 200
    assert r.json()["ready"] is True and r.json()["paired"] is False
    assert r.headers["access-control-allow-origin"] == PLATFORM


def test_a_foreign_origin_is_refused_without_cors_headers(running: Running) -> None:
    r = running.client.get("/v1/status", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "AccessRefused"
    _no_cors(r)


def test_a_missing_origin_is_refused(running: Running) -> None:
    r = running.client.get("/v1/status")
    assert r.status_code == 403
    assert "Origin" in r.json()["error"]["message"]
    _no_cors(r)


def test_a_rebinding_host_is_refused(running: Running) -> None:
    r = running.client.get("/v1/status", headers={"Origin": PLATFORM,
                                                  "Host": "attacker.example"})
    assert r.status_code == 403
    assert "DNS rebinding" in r.json()["error"]["message"]
    _no_cors(r)


def test_a_host_with_another_port_is_refused(running: Running) -> None:
    r = running.client.get("/v1/status", headers={"Origin": PLATFORM,
                                                  "Host": "127.0.0.1:9999"})
    assert r.status_code == 403


def test_preflight_is_answered_for_an_allowed_origin_with_private_network(
        running: Running) -> None:
    r = running.client.options("/v1/keys", headers={
        "Origin": PLATFORM, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-tokenkeys-client, authorization",
        "Access-Control-Request-Private-Network": "true"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == PLATFORM
    assert r.headers["access-control-allow-private-network"] == "true"
    assert "x-tokenkeys-client" in r.headers["access-control-allow-headers"]


def test_preflight_from_a_foreign_origin_gets_no_cors(running: Running) -> None:
    r = running.client.options("/v1/keys", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Private-Network": "true"})
    assert r.status_code == 403
    _no_cors(r)
    assert "access-control-allow-private-network" not in r.headers


def test_a_text_plain_form_post_is_refused(running: Running) -> None:
    running.pair()
    # What a <form enctype="text/plain"> on the platform's own origin could send.
    r = running.client.post("/v1/consultations", content=b'{"reference": "x", "key": "k"}',
                            headers={"Origin": PLATFORM, "Content-Type": "text/plain",
                                     "Authorization": f"Bearer {running.token}"})
    assert r.status_code == 403
    assert "X-Tokenkeys-Client" in r.json()["error"]["message"]
    r = running.client.post("/v1/consultations", content=b"reference=x&key=k",
                            headers={**running.headers(),
                                     "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 403
    assert "application/json" in r.json()["error"]["message"]


def test_no_token_is_refused(running: Running) -> None:
    r = running.client.get("/v1/tokens", headers={"Origin": PLATFORM})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "NotPaired"


def test_a_revoked_token_is_refused(running: Running) -> None:
    running.pair()
    assert running.client.get("/v1/keys", headers=running.headers()).status_code == 200
    from tokenkeys.services.pairings import PairingStore

    PairingStore(running.assistant.settings.pairings).revoke(PLATFORM)  # the CLI's way
    r = running.client.get("/v1/keys", headers=running.headers())
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "NotPaired"


def test_a_token_from_another_origin_is_refused(running: Running) -> None:
    other = running.pair(OTHER)
    r = running.client.get("/v1/keys", headers=running.headers(PLATFORM, token=other))
    assert r.status_code == 401
    assert running.client.get("/v1/keys", headers=running.headers(OTHER, token=other)
                              ).status_code == 200


def test_the_sixth_wrong_code_is_refused_even_when_right(running: Running) -> None:
    h = running.headers()
    assert running.client.post("/v1/pairing/start", json={}, headers=h).status_code == 200
    code = running.assistant.desk.pending()[PLATFORM]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for left in (4, 3, 2, 1):
        r = running.client.post("/v1/pairing/confirm", json={"code": wrong}, headers=h)
        assert r.status_code == 403 and r.json()["error"]["attempts_left"] == left
    r = running.client.post("/v1/pairing/confirm", json={"code": wrong}, headers=h)
    assert r.json()["error"]["locked"] is True
    # The 6th, with the right code: still refused; a new code cannot be asked for either.
    r = running.client.post("/v1/pairing/confirm", json={"code": code}, headers=h)
    assert r.status_code == 403 and r.json()["error"]["locked"] is True
    assert running.client.post("/v1/pairing/start", json={}, headers=h).status_code == 403
    status = running.client.get("/v1/status", headers={"Origin": PLATFORM}).json()
    assert status["pairing_locked"] is True and status["paired"] is False
    # Another origin is not locked; the user unlocks in the assistant's window.
    running.pair(OTHER)
    assert running.ui("/ui/api/unlock", {"origin": PLATFORM}).status_code == 200
    running.pair()


def test_pairing_tokens_are_stored_hashed(running: Running) -> None:
    token = running.pair()
    stored = Path(running.assistant.settings.pairings or "").read_text()
    assert token not in stored and PLATFORM in stored


def test_a_body_over_the_limit_is_refused(tmp_path: Path, config: Config) -> None:
    app, _assistant = make(tmp_path, config, max_json=1000, max_body=5000)
    with TestClient(app, base_url=BASE) as client:
        r = client.post("/v1/pairing/start", content=b"{" + b" " * 2000 + b"}",
                        headers={"Origin": PLATFORM, "X-Tokenkeys-Client": "1",
                                 "Content-Type": "application/json"})
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "LimitExceeded"
        # Without a Content-Length (streamed): counted while read.
        r = client.post("/v1/pairing/start", content=iter([b"{", b" " * 2000, b"}"]),
                        headers={"Origin": PLATFORM, "X-Tokenkeys-Client": "1",
                                 "Content-Type": "application/json"})
        assert r.status_code == 413


def test_the_assistants_page_cannot_be_framed_and_needs_the_secret(running: Running) -> None:
    r = running.client.get("/ui")
    assert r.status_code == 200
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert running.assistant.secret not in r.text  # it travels in the fragment only
    ok = running.ui("/ui/api/state", {})
    assert ok.status_code == 200
    bad = running.client.post("/ui/api/state", json={}, headers={
        "Origin": "http://127.0.0.1:8765", "X-Tokenkeys-Client": "1",
        "X-Tokenkeys-Secret": "guess"})
    assert bad.status_code == 403
    foreign = running.client.post("/ui/api/state", json={}, headers={
        "Origin": PLATFORM, "X-Tokenkeys-Client": "1",
        "X-Tokenkeys-Secret": running.assistant.secret})
    assert foreign.status_code == 403
    _no_cors(foreign)


def test_the_pairing_code_is_never_in_an_api_answer(running: Running) -> None:
    r = running.client.post("/v1/pairing/start", json={}, headers=running.headers())
    code = running.assistant.desk.pending()[PLATFORM]
    assert code not in r.text


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "localhost", "example.com"])
def test_binding_anything_but_loopback_is_refused(host: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"127\.0\.0\.1 or ::1 only"):
        check_bind(host)
    with pytest.raises(UsageError):
        make(tmp_path, Config(), host=host)


def test_loopback_addresses_are_accepted() -> None:
    assert check_bind("127.0.0.1") == "127.0.0.1"
    assert check_bind("::1") == "::1"
    assert Settings(host="::1", port=8765).own_hosts == {"[::1]:8765", "localhost:8765"}


def test_origins_are_normalised_and_bad_ones_refused() -> None:
    assert normalize_origin("HTTPS://Marches.Example:443/") == "https://marches.example"
    assert normalize_origin("http://127.0.0.1:8766") == "http://127.0.0.1:8766"
    for bad in ("*", "null", "ftp://x", "https://x/path", "https://u@x"):
        with pytest.raises(UsageError):
            normalize_origin(bad)
    merged = merge(Settings(origins=("https://a.example",)), origins=["https://b.example"])
    assert merged.origins == ("https://a.example", "https://b.example")


def test_names_with_control_characters_are_refused(running: Running) -> None:
    running.pair()
    r = running.client.post("/v1/consultations", headers=running.headers(), json={
        "reference": "AO\x1b[2J-1", "key": "K"})
    assert r.status_code == 400 and "control" in r.json()["error"]["message"]
