"""Nothing from a bid reaches the terminal as markup or control codes."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cli.conftest import TK
from tests.cli.test_open_batch import token_with_keys  # noqa: F401 - fixture
from tokenkeys.cli.context import visible
from tokenkeys.envelope import seal

ISSUERS = {
    "crash": "[/]",
    "forged": "[link=https://evil.example]K1[/link] [green]genuine",
}


def _same_key_foreign_issuer(cert: x509.Certificate, issuer_cn: str) -> x509.Certificate:
    """A certificate for the token's key, but with an issuer chosen by the bidder."""
    signer = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
            .public_key(cert.public_key()).serial_number(7)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=10))
            .sign(signer, hashes.SHA256()))


def test_visible_escapes_controls_and_keeps_text() -> None:
    assert visible("offre-2026.pdf") == "offre-2026.pdf"
    assert visible("é [b]x[/b]") == "é [b]x[/b]"  # markup is left to rich.Text: shown as is
    assert visible("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert visible("row\nfake") == "row\\nfake"
    assert visible("cod\u202eexe.pdf") == "cod\\u202eexe.pdf"
    assert visible("\x9b31m") == "\\x9b31m"


def test_hostile_issuers_and_names_are_shown_not_obeyed(
        tk: TK, token_with_keys: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    rsa_cert = token_with_keys["certs"]["rsa"]
    bids = tmp_path / "bids"
    bids.mkdir()
    src = tmp_path / "plain"
    src.write_bytes(b"prix: 1 EUR\n")
    for name, cn in ISSUERS.items():
        seal(src, bids / f"{name}.p7m", [_same_key_foreign_issuer(rsa_cert, cn)])
    hostile_names = ["esc\x1b[31mred\x1b[0m.p7m", "nl\nfake | opened | row.p7m",
                     "bidi\u202egpj.exe.p7m", ":warning: [bold]x[red].p7m"]
    for name in hostile_names:
        seal(src, bids / name, [rsa_cert])
    run = tk("open", bids, "-o", tmp_path / "out", "--token", token_with_keys["uri"])
    assert run.code == 0, run.err
    out = run.out
    assert "\x1b" not in out and "\u202e" not in out
    assert "CN=[/]" in out
    assert "[link=https://evil.example]K1[/link] [green]genuine" in out
    assert "esc\\x1b[31mred\\x1b[0m.p7m" in out
    assert "nl\\nfake | opened | row.p7m" in out
    assert ":warning: [bold]x[red].p7m" in out
    # One table row per envelope: the newline in a name drew no extra row.
    assert sum("opened" in line for line in out.splitlines()) == 6 + 1  # rows + summary
    assert "6 opened, 0 skipped, 0 failed" in out


def test_error_messages_quoting_names_are_escaped(tk: TK, tmp_path: Path) -> None:
    missing = tmp_path / "gone\x1b]0;owned\x07.p7m"
    run = tk("open", missing, "-o", tmp_path / "out", "--token", "pkcs11:token=x")
    assert run.code == 2
    assert "\x1b" not in run.err and "\x07" not in run.err
    assert "gone\\x1b]0;owned\\x07.p7m" in run.err
