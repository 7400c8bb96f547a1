"""Names from the command line and from certificates: a CN over 64 characters is refused
at the boundary with a clear message (not "internal error (ValueError)"); a certificate
whose subject holds control characters or 10 kB is refused by `key import-cert`, and a
certificate that reached a token by another way is shown cut to one line."""

from __future__ import annotations

import datetime
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cli.conftest import TK
from tests.cli.share_support import PIN, listing, soft_store

LONG = "N" * 65


@pytest.fixture(autouse=True)
def pin_env(cli_env: dict[str, str]) -> dict[str, str]:
    cli_env["TOKENKEYS_PIN"] = PIN
    return cli_env


def _refused(done: object, text: str = "has 65 characters: a certificate's CN holds at most 64"
             ) -> None:
    assert done.code == 2, (done.out, done.err)  # type: ignore[attr-defined]
    assert text in done.err, done.err  # type: ignore[attr-defined]
    assert len(done.err.strip().splitlines()) == 1  # type: ignore[attr-defined]


def test_long_cn_refused_by_every_command_that_makes_one(tk: TK, tmp_path: Path) -> None:
    store = tmp_path / "store"
    uri = soft_store(store, ("K", "ec-p256", False))
    before = listing(store)
    _refused(tk("key", "generate", "--token", uri, "--name", LONG, "--algorithm", "ec-p256"))
    _refused(tk("key", "generate", "--token", uri, "--name", "OK", "--cn", LONG,
                "--algorithm", "ec-p256"))
    _refused(tk("ca", "create", "--token", uri, "--name", LONG, "--algorithm", "ec-p256"))
    assert listing(store) == before  # refused before anything was generated
    _refused(tk("key", "csr", "K", "--token", uri, "--cn", LONG, "-o", tmp_path / "k.csr"))
    assert not (tmp_path / "k.csr").exists()
    done = tk("ca", "create", "--token", uri, "--name", "CA", "--algorithm", "ec-p256")
    assert done.code == 0, done.err
    public = tmp_path / "k.pub"
    assert tk("key", "export-public", "K", "--token", uri, "-o", public).code == 0
    _refused(tk("ca", "issue", public, "--token", uri, "--ca", "CA", "--cn", LONG,
                "-o", tmp_path / "k.pem"))
    assert not (tmp_path / "k.pem").exists()


def _hostile_cert(public_pem: bytes, cn: str) -> bytes:
    """A certificate for the token's key whose CN no CA should write (cryptography
    itself refuses to build it unless told not to check)."""
    signer = ec.generate_private_key(ec.SECP256R1())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning that tokenkeys must never leak
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)])
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    cert = (x509.CertificateBuilder().subject_name(name)
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")]))
            .public_key(serialization.load_pem_public_key(public_pem))  # type: ignore[arg-type]
            .serial_number(9).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.KeyUsage(False, False, False, False, True, False, False,
                                         False, False), critical=True)
            .sign(signer, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(("cn", "text"), [
    ("Agent\x1b[2J\nfake row", "holds control characters"),
    ("A" * 10_000, "has 10000 characters (at most 64)"),
])
def test_import_cert_refuses_a_hostile_subject_without_a_warning(
        tk: TK, tmp_path: Path, cn: str, text: str) -> None:
    uri = soft_store(tmp_path / "store", ("K", "ec-p256", False))
    public = tmp_path / "k.pub"
    assert tk("key", "export-public", "K", "--token", uri, "-o", public).code == 0
    cert = tmp_path / "hostile.pem"
    cert.write_bytes(_hostile_cert(public.read_bytes(), cn))
    done = tk("--json", "key", "import-cert", "K", cert, "--token", uri,
              env={"PYTHONWARNINGS": "error"})
    assert done.code == 5, (done.out, done.err)
    assert text in done.json["error"]["message"]
    assert "Warning" not in done.err and "site-packages" not in done.err, done.err


def test_key_list_shows_a_foreign_hostile_cn_on_one_line(tk: TK, tmp_path: Path) -> None:
    """A certificate stored on the token by another tool: `key list` escapes it and cuts
    it to 64 characters, one row, no warning."""
    from tokenkeys.drivers.software import SoftwareToken
    from tokenkeys.types import Secret, given_pin

    store = tmp_path / "store"
    uri = soft_store(store, ("K", "ec-p256", False))
    with SoftwareToken(store.resolve()) as token:
        token.login(given_pin(Secret(PIN)))
        key = token.find_key(label="K")
        pem = key.public_key.public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
        hostile = x509.load_pem_x509_certificate(
            _hostile_cert(pem, "Agent\x1b[31m\n" + "B" * 10_000))
        token.store_certificate(key, hostile)
    done = tk("key", "list", "--token", uri, env={"PYTHONWARNINGS": "error", "COLUMNS": "400"})
    assert done.code == 0, done.err
    assert "\x1b" not in done.out and "B" * 65 not in done.out
    assert "Warning" not in done.err
    rows = [line for line in done.out.splitlines() if "Agent" in line]
    assert len(rows) == 1, done.out
