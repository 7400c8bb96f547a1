"""A key pair and its copies on SoftHSM2, through the CLI: where it lives, its current
certificate, and the routes around the deletion guard that no longer delete a bound key."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.cli.conftest import SOFTHSM_MODULE, TK
from tests.cli.share_support import PASSPHRASE, signature_only_p12

pytestmark = pytest.mark.softhsm


@pytest.fixture
def share_env(cli_env: dict[str, str]) -> dict[str, str]:
    cli_env.update({"TOKENKEYS_PASSPHRASE": PASSPHRASE, "TOKENKEYS_TO_PIN": "123456"})
    return cli_env


def _bound(tk: TK, uri: str, name: str, *, shareable: bool = False) -> None:
    """A key NAME and a backup key, NAME bound to consultation AO-1."""
    for args in (["--name", name, *(["--shareable"] if shareable else [])],
                 ["--name", f"{name}-SECOURS", "--backup"]):
        done = tk("key", "generate", "--token", uri, "--algorithm", "rsa2048", *args)
        assert done.code == 0, done.err
    made = tk("consultation", "create", "AO-1", "--key", name)
    assert made.code == 0, made.err


def _ca_issued(tk: TK, softhsm: Any, uri: str, name: str, tmp: Path) -> Path:
    ca_uri = softhsm.uri(softhsm.new_token("ca"))
    assert tk("ca", "create", "--token", ca_uri, "--name", "CA", "--cn", "Entity CA",
              "--algorithm", "ec-p256").code == 0
    pub, cert = tmp / "pub.pem", tmp / "issued.pem"
    assert tk("key", "export-public", name, "--token", uri, "-o", pub).code == 0
    issued = tk("ca", "issue", "--token", ca_uri, "--ca", "CA", pub, "-o", cert,
                "--cn", name, "--days", "300")
    assert issued.code == 0, issued.err
    return cert


def _on_token(uri: str, env: dict[str, str]) -> str:
    label = uri.split("token=")[1].split(";")[0].split("?")[0]
    return subprocess.run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", label,
                           "--login", "--pin", "env:TOKENKEYS_PIN", "-O"], env=env,
                          capture_output=True, text=True, check=False).stdout


def test_a_copy_deleted_elsewhere_leaves_the_original(
        tk: TK, softhsm: Any, share_env: dict[str, str], tmp_path: Path) -> None:
    p, q = softhsm.uri(softhsm.new_token("p")), softhsm.uri(softhsm.new_token("q"))
    _bound(tk, p, "K", shareable=True)
    p12 = tmp_path / "k.p12"
    assert tk("share", "export", "K", "--token", p, "-o", p12).code == 0
    imported = tk("share", "import", p12, "--token", q, "--name", "K-agent")
    assert imported.code == 0, imported.err
    deleted = tk("key", "delete", "K-agent", "--token", q, "--yes")
    assert deleted.code == 0, deleted.err
    listed = tk("--json", "key", "list", "--registry").json["keys"]
    original = next(k for k in listed if k["designation"] == "K")
    [where] = original["locations"]
    assert "token=p" in where["token_uri"] and where["deleted_at"] is None
    agent = tk("--json", "key", "list", "--registry", "--all").json["keys"]
    assert next(k for k in agent if k["designation"] == "K-agent")["deleted_at"]
    assert original["open_consultations"] == ["AO-1"]
    again = tk("consultation", "create", "AO-2", "--key", "K")
    assert again.code == 0, again.err
    # The last copy of a bound key pair stays.
    last = tk("key", "delete", "K", "--token", p, "--yes")
    assert last.code == 9 and "last copy" in last.err, last.err


def test_import_cert_becomes_the_current_certificate(
        tk: TK, softhsm: Any, share_env: dict[str, str], tmp_path: Path) -> None:
    p, q = softhsm.uri(softhsm.new_token("p")), softhsm.uri(softhsm.new_token("q"))
    _bound(tk, p, "K", shareable=True)
    cert = _ca_issued(tk, softhsm, p, "K", tmp_path)
    done = tk("key", "import-cert", "K", cert, "--token", p)
    assert done.code == 0, done.err
    bundle = tmp_path / "recipients.pem"
    served = tk("consultation", "recipients", "AO-1", "-o", bundle)
    assert served.code == 0, served.err
    first = x509.load_pem_x509_certificates(bundle.read_bytes())[0]
    assert first == x509.load_pem_x509_certificate(cert.read_bytes())
    copied = tk("share", "copy", "K", "--token", p, "--to-token", q)
    assert copied.code == 0, copied.err
    bid = tmp_path / "bid.txt"
    bid.write_bytes(b"offre")
    assert tk("seal", bid, "-o", tmp_path / "bid.p7m", "--consultation", "AO-1").code == 0
    opened = tk("open", tmp_path / "bid.p7m", "-o", tmp_path / "out", "--token", q)
    assert opened.code == 0, opened.err


@pytest.mark.parametrize("route", ["ca-cert-other-service", "certificate-removed",
                                   "empty-registry"])
def test_no_route_deletes_a_bound_key(tk: TK, softhsm: Any, share_env: dict[str, str],
                                      tmp_path: Path, route: str) -> None:
    uri = softhsm.uri(softhsm.new_token("p"))
    _bound(tk, uri, "K")
    extra: list[str] = []
    env: dict[str, str | None] = {}
    if route == "ca-cert-other-service":
        assert tk("service", "create", "other").code == 0
        cert = _ca_issued(tk, softhsm, uri, "K", tmp_path)
        assert tk("key", "import-cert", "K", cert, "--token", uri).code == 0
        extra = ["--service", "other"]
    elif route == "certificate-removed":
        label = uri.split("token=")[1].split(";")[0].split("?")[0]
        gone = subprocess.run(
            ["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", label, "--login",
             "--pin", "env:TOKENKEYS_PIN", "--delete-object", "--type", "cert", "--label", "K"],
            env=share_env, capture_output=True, text=True, check=False)
        assert gone.returncode == 0, gone.stderr
    else:
        empty = tmp_path / "empty.sqlite"
        env = {"TOKENKEYS_REGISTRY": str(empty)}
    before = _on_token(uri, share_env)
    refused = tk("key", "delete", "K", "--token", uri, "--yes", *extra, env=env)
    assert refused.code == 9, (refused.code, refused.err)
    assert _on_token(uri, share_env) == before
    if route == "empty-registry":
        assert "--unregistered" in refused.err


def test_share_import_checks_the_certificate_like_import_cert(
        tk: TK, softhsm: Any, share_env: dict[str, str], tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    p12 = signature_only_p12(tmp_path / "sig.p12",
                             rsa.generate_private_key(public_exponent=65537, key_size=2048))
    uri = softhsm.uri(softhsm.new_token("q"))
    before = _on_token(uri, share_env)
    refused = tk("share", "import", p12, "--token", uri, "--name", "SIG")
    assert refused.code == 5 and "forbids encryption" in refused.err, refused.err
    assert _on_token(uri, share_env) == before
    allowed = tk("share", "import", p12, "--token", uri, "--name", "SIG", "--allow-any-usage")
    assert allowed.code == 0, allowed.err
