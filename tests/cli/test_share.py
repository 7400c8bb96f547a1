"""On the software keystore: PKCS#12 export/import and device copy, real CLI.

Files are checked with openssl (pkcs12 -info, cms -encrypt); envelopes sealed by
openssl to the ORIGINAL certificate must open with the imported or copied key.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.cli.conftest import TK
from tests.cli.share_support import (
    PASSPHRASE,
    PIN,
    export_cert,
    listing,
    openssl,
    seal_and_open,
    soft_store,
)


@pytest.fixture(autouse=True)
def share_env(cli_env: dict[str, str]) -> dict[str, str]:
    # Every token here is a software keystore, whose PIN resists offline guessing.
    cli_env.update({"TOKENKEYS_PASSPHRASE": PASSPHRASE, "TOKENKEYS_PIN": PIN,
                    "TOKENKEYS_TO_PIN": PIN})
    return cli_env


@pytest.fixture
def src(tmp_path: Path) -> str:
    return soft_store(tmp_path / "src", ("BICLE-2026", "rsa2048", True),
                      ("EC-SHARE", "ec-p256", True), ("LOCKED", "rsa2048", False))


def test_export_is_modern_and_private(tk: TK, share_env: dict[str, str], src: str,
                                      tmp_path: Path) -> None:
    p12 = tmp_path / "bicle.p12"
    done = tk("--json", "share", "export", "BICLE-2026", "--token", src, "-o", p12)
    assert done.code == 0, done.err
    assert done.json["share"]["protection"].startswith("AES-256-CBC, PBKDF2-HMAC-SHA256")
    assert stat.S_IMODE(p12.stat().st_mode) == 0o600
    info = openssl("pkcs12", "-info", "-noout", "-in", p12, "-passin", "env:TOKENKEYS_PASSPHRASE",
                   env=share_env)
    assert "MAC: sha256, Iteration 600000" in info
    assert info.count("PBES2, PBKDF2, AES-256-CBC, Iteration 600000, PRF hmacWithSHA256") == 2
    assert "3DES" not in info and "RC2" not in info
    # friendly name = designation; openssl recovers the key that matches the certificate
    loaded = pkcs12.load_pkcs12(p12.read_bytes(), PASSPHRASE.encode())
    assert loaded.cert is not None and loaded.cert.friendly_name == b"BICLE-2026"
    assert isinstance(loaded.key, rsa.RSAPrivateKey)
    keyout = openssl("pkcs12", "-in", p12, "-nocerts", "-nodes", "-passin",
                     "env:TOKENKEYS_PASSPHRASE", env=share_env)
    assert "friendlyName: BICLE-2026" in keyout


def test_export_import_opens_envelopes(tk: TK, share_env: dict[str, str], src: str,
                                       tmp_path: Path) -> None:
    cert = export_cert(tk, "BICLE-2026", src, tmp_path / "orig.pem")
    p12 = tmp_path / "bicle.p12"
    assert tk("share", "export", "BICLE-2026", "--token", src, "-o", p12).code == 0
    dst = soft_store(tmp_path / "agent")
    done = tk("--json", "share", "import", p12, "--token", dst, "--name", "BICLE-2026")
    assert done.code == 0, done.err
    key = done.json["share"]["key"]
    assert key["extractable"] is False and key["cn"] == "BICLE-2026"
    assert done.json["share"]["protection"] == (
        "certificates: PBES2 aes256_cbc, 600000 iterations; key: PBES2 aes256_cbc, "
        "600000 iterations; MAC: HMAC-SHA256, 600000 iterations")
    assert done.json["share"]["warnings"] == [] and "warning" not in done.err
    seal_and_open(tk, cert, dst, tmp_path / "pkcs1")
    seal_and_open(tk, cert, dst, tmp_path / "oaep", oaep=True)
    # imported without --shareable: it cannot be exported again
    again = tk("share", "export", "BICLE-2026", "--token", dst, "-o", tmp_path / "again.p12")
    assert again.code == 9 and "not extractable, by design" in again.err
    assert not (tmp_path / "again.p12").exists()


def test_ec_key_round_trip_shareable(tk: TK, share_env: dict[str, str], src: str,
                                     tmp_path: Path) -> None:
    cert = export_cert(tk, "EC-SHARE", src, tmp_path / "ec.pem")
    p12 = tmp_path / "ec.p12"
    assert tk("share", "export", "EC-SHARE", "--token", src, "-o", p12).code == 0
    dst = soft_store(tmp_path / "agent")
    done = tk("--json", "share", "import", p12, "--token", dst, "--name", "EC", "--shareable")
    assert done.code == 0, done.err
    assert done.json["share"]["key"]["extractable"] is True
    seal_and_open(tk, cert, dst, tmp_path / "env")


def test_legacy_export_warns_and_imports(tk: TK, share_env: dict[str, str], src: str,
                                         tmp_path: Path) -> None:
    p12 = tmp_path / "old.pfx"
    done = tk("share", "export", "BICLE-2026", "--token", src, "-o", p12, "--legacy")
    assert done.code == 0, done.err
    assert "warning: --legacy: TripleDES and SHA-1 are weak" in done.err
    info = openssl("pkcs12", "-info", "-noout", "-legacy", "-in", p12, "-passin",
                   "env:TOKENKEYS_PASSPHRASE", env=share_env)
    assert "MAC: sha1" in info and info.count("pbeWithSHA1And3-KeyTripleDES-CBC") == 2
    dst = soft_store(tmp_path / "agent")
    imported = tk("share", "import", p12, "--token", dst, "--name", "OLD")
    assert imported.code == 0, imported.err
    assert "was weakly protected (a legacy cipher): delete it once imported" in imported.err


@pytest.mark.parametrize(("variant", "algorithm"), [
    ("aes", "rsa:2048"), ("legacy-rc2", "rsa:2048"), ("windows-3des", "rsa:2048"),
    ("windows-3des", "ec"),
])
def test_openssl_made_files_import_and_open(tk: TK, share_env: dict[str, str], tmp_path: Path,
                                            variant: str, algorithm: str) -> None:
    key, cert, p12 = tmp_path / "k.pem", tmp_path / "c.pem", tmp_path / "f.pfx"
    newkey = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if algorithm == "ec"
              else ["-newkey", algorithm])
    openssl("req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", cert,
            "-subj", "/CN=Acheteur OpenSSL", "-days", "30")
    options = {
        "aes": [],  # OpenSSL 3 default: PBES2 AES-256-CBC, MAC SHA-256
        "legacy-rc2": ["-legacy"],  # RC2-40 certificates, 3DES key, MAC SHA-1
        "windows-3des": ["-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES",
                         "-macalg", "sha1"],
    }[variant]
    openssl("pkcs12", "-export", "-inkey", key, "-in", cert, "-out", p12, "-name", "from-ossl",
            "-passout", "env:TOKENKEYS_PASSPHRASE", *options, env=share_env)
    dst = soft_store(tmp_path / "agent")
    done = tk("share", "import", p12, "--token", dst, "--name", "IMPORTED")
    assert done.code == 0, done.err
    assert "only 2048 iterations" in done.err  # OpenSSL's default count
    seal_and_open(tk, cert, dst, tmp_path / "env")


def test_chain_from_openssl_file(tk: TK, share_env: dict[str, str], tmp_path: Path) -> None:
    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.pem", "k.pem", "r.csr",
                                                          "c.pem"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
            "-subj", "/CN=LOCAL TRUST", "-days", "30")
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
            "-subj", "/CN=Agent key")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "30")
    p12 = tmp_path / "chain.pfx"
    # CA first in the file: the import must still pick the certificate of the key
    openssl("pkcs12", "-export", "-inkey", key, "-in", cert, "-certfile", ca, "-out", p12,
            "-passout", "env:TOKENKEYS_PASSPHRASE", env=share_env)
    dst = soft_store(tmp_path / "agent")
    done = tk("--json", "share", "import", p12, "--token", dst, "--name", "CA-ISSUED",
              "--shareable")
    assert done.code == 0, done.err
    assert done.json["share"]["key"]["cn"] == "Agent key"
    assert done.json["share"]["chain_certificates"] == 1
    seal_and_open(tk, cert, dst, tmp_path / "env")
    # exported again: the chain travels with the key
    again = tmp_path / "again.p12"
    assert tk("share", "export", "CA-ISSUED", "--token", dst, "-o", again).code == 0
    loaded = pkcs12.load_pkcs12(again.read_bytes(), PASSPHRASE.encode())
    assert [c.certificate.subject.rfc4514_string() for c in loaded.additional_certs] == [
        "CN=LOCAL TRUST"]


def test_export_refusals_leave_no_file(tk: TK, share_env: dict[str, str], src: str,
                                       tmp_path: Path) -> None:
    out = tmp_path / "x.p12"
    locked = tk("share", "export", "LOCKED", "--token", src, "-o", out)
    assert locked.code == 9, locked.err
    assert "not extractable, by design" in locked.err and "--shareable" in locked.err
    weak = tk("share", "export", "BICLE-2026", "--token", src, "-o", out,
              env={"TOKENKEYS_PASSPHRASE": "short"})
    assert weak.code == 2 and "passphrase refused: it has fewer than 12 characters" in weak.err
    named = tk("share", "export", "BICLE-2026", "--token", src, "-o", out,
               env={"TOKENKEYS_PASSPHRASE": "my BICLE-2026 key"})
    assert named.code == 2 and "contains the key's name" in named.err
    missing = tk("share", "export", "BICLE-2026", "--token", src, "-o", out,
                 env={"TOKENKEYS_PASSPHRASE": None})
    assert missing.code == 4 and "no PKCS#12 passphrase available" in missing.err
    nodir = tk("share", "export", "BICLE-2026", "--token", src, "-o", tmp_path / "no" / "x.p12")
    assert nodir.code == 2, nodir.err
    assert not out.exists()
    assert [p for p in listing(tmp_path) if p.endswith(".part")] == []

    out.write_bytes(b"keep me")
    exists = tk("share", "export", "BICLE-2026", "--token", src, "-o", out)
    assert exists.code == 10 and "use --force" in exists.err
    assert out.read_bytes() == b"keep me"
    forced = tk("share", "export", "BICLE-2026", "--token", src, "-o", out, "--force")
    assert forced.code == 0, forced.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.read_bytes()[:1] == b"\x30"


def _unmatched_p12(path: Path, cert_pem: Path) -> None:
    """A key with someone else's certificate (no localKeyId: cryptography refuses the pair)."""
    other = rsa.generate_private_key(65537, 2048)
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"x", other, None, [cert],
        serialization.BestAvailableEncryption(PASSPHRASE.encode())))


def test_import_refusals_leave_nothing(tk: TK, share_env: dict[str, str], src: str,
                                       tmp_path: Path) -> None:
    good = tmp_path / "good.p12"
    assert tk("share", "export", "BICLE-2026", "--token", src, "-o", good).code == 0
    dst_dir = tmp_path / "agent"
    dst = soft_store(dst_dir)
    before = listing(dst_dir)

    def refused(path: Path, code: int, text: str, **env: str | None) -> None:
        done = tk("share", "import", path, "--token", dst, "--name", "K", env=env)
        assert done.code == code, done.err
        assert text in done.err, done.err
        assert len(done.err.strip().splitlines()) == 1
        assert listing(dst_dir) == before

    refused(good, 4, "the passphrase does not open",
            TOKENKEYS_PASSPHRASE="wrong passphrase, long enough")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.p12"
    truncated.write_bytes(data[: len(data) // 2])
    refused(truncated, 2, "is not a PKCS#12 file, or it is damaged")
    altered = tmp_path / "altered.p12"
    altered.write_bytes(data[:200] + bytes([data[200] ^ 1]) + data[201:])
    refused(altered, 4, "(or the file was altered since it was made)")
    garbage = tmp_path / "garbage.p12"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    refused(garbage, 2, "is not a PKCS#12 file, or it is damaged")
    certonly = tmp_path / "certonly.p12"
    cert = export_cert(tk, "BICLE-2026", src, tmp_path / "c.pem")
    openssl("pkcs12", "-export", "-nokeys", "-in", cert, "-out", certonly,
            "-passout", "env:TOKENKEYS_PASSPHRASE", env=share_env)
    refused(certonly, 2, "holds no private key")
    unmatched = tmp_path / "unmatched.p12"
    _unmatched_p12(unmatched, cert)
    refused(unmatched, 5, "does not belong to its private key")
    refused(tmp_path / "absent.p12", 2, "cannot read")
    refused(good, 4, "no PKCS#12 passphrase available", TOKENKEYS_PASSPHRASE=None)

    assert tk("share", "import", good, "--token", dst, "--name", "FIRST").code == 0
    before = listing(dst_dir)
    refused(good, 5, "this key is already on")
    taken = tk("share", "import", good, "--token", dst, "--name", "FIRST")
    assert taken.code == 5 and "already exists" in taken.err


def test_copy_soft_to_soft(tk: TK, share_env: dict[str, str], src: str, tmp_path: Path) -> None:
    cert = export_cert(tk, "BICLE-2026", src, tmp_path / "orig.pem")
    dst_dir = tmp_path / "agent"
    dst = soft_store(dst_dir)
    done = tk("--json", "share", "copy", "BICLE-2026", "--token", src, "--to-token", dst)
    assert done.code == 0, done.err
    assert done.json["share"]["key"]["extractable"] is False
    seal_and_open(tk, cert, dst, tmp_path / "env", oaep=True)
    before = listing(dst_dir)
    twice = tk("share", "copy", "BICLE-2026", "--token", src, "--to-token", dst)
    assert twice.code == 5 and "already exists" in twice.err
    locked = tk("share", "copy", "LOCKED", "--token", src, "--to-token", dst)
    assert locked.code == 9 and "not extractable, by design" in locked.err
    same = tk("share", "copy", "EC-SHARE", "--token", src, "--to-token", src)
    assert same.code == 2 and "same token" in same.err
    no_pin = tk("share", "copy", "EC-SHARE", "--token", src, "--to-token", dst,
                env={"TOKENKEYS_TO_PIN": None})
    assert no_pin.code == 4 and "TOKENKEYS_TO_PIN" in no_pin.err
    assert listing(dst_dir) == before
    assert os.path.exists(cert)


def test_warning_naming_a_hostile_file_is_escaped(tk: TK, share_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    """A file brought on a medium may carry any name: the weak-protection warning
    quoting it shows control characters as escapes, never sends them raw."""
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    p12 = tmp_path / "offre\x1b[2Jx.pfx"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
            "-subj", "/CN=Acheteur", "-days", "30")
    openssl("pkcs12", "-export", "-inkey", key, "-in", cert, "-out", p12,
            "-passout", "env:TOKENKEYS_PASSPHRASE", "-legacy", env=share_env)
    done = tk("share", "import", p12, "--token", soft_store(tmp_path / "agent"),
              "--name", "IMPORTED")
    assert done.code == 0, done.err
    assert "weakly protected" in done.err and "\x1b" not in done.err, repr(done.err)
    assert "offre\\x1b[2Jx.pfx" in done.err
