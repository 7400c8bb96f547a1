"""The entity's CA and keys awaiting a certificate, through the real CLI.

On SoftHSM2 and the software keystore; results are checked with openssl and
pkcs11-tool, which nobody here wrote.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cli.conftest import SOFTHSM_MODULE, TK, p11_objects
from tokenkeys.errors import RegistryUnavailable


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def uri(softhsm: Any, token_label: str) -> str:
    return str(softhsm.uri(token_label))


@pytest.fixture
def ca_uri(softhsm: Any) -> str:
    return str(softhsm.uri(softhsm.new_token("ca")))


def _ext(cert: x509.Certificate, cls: type[Any]) -> Any:
    return cert.extensions.get_extension_for_class(cls)


def test_csr_verifies_and_openssl_issued_certificate_imports(
        tk: TK, uri: str, token_label: str, tmp_path: Path, cli_env: dict[str, str]) -> None:
    assert tk("key", "generate", "--token", uri, "--name", "BICLE", "--algorithm",
              "rsa2048").code == 0
    csr = tmp_path / "bicle.csr"
    made = tk("key", "csr", "BICLE", "--token", uri, "-o", csr, "--cn", "Acheteur CEA")
    assert made.code == 0, made.err
    verify = _openssl("req", "-verify", "-noout", "-in", csr)
    assert verify.returncode == 0 and "verify OK" in verify.stdout + verify.stderr
    assert tk("key", "csr", "BICLE", "--token", uri, "-o", csr).code == 10  # no --force

    # An outside CA made with openssl alone.
    ca_key, ca_pem, cert = tmp_path / "ca.key", tmp_path / "ca.pem", tmp_path / "bicle.pem"
    assert _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
                    "-out", ca_pem, "-subj", "/CN=Outside CA", "-days", "30").returncode == 0
    ext = tmp_path / "ext.cnf"
    ext.write_text("keyUsage=critical,keyEncipherment\n", encoding="utf-8")
    issued = _openssl("x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
                      "-CAcreateserial", "-days", "20", "-extfile", ext, "-out", cert)
    assert issued.returncode == 0, issued.stderr

    done = tk("--json", "key", "import-cert", "BICLE", cert, "--chain", ca_pem, "--token", uri)
    assert done.code == 0, done.err
    assert done.json["replaced"] is True and done.json["key"]["cn"] == "Acheteur CEA"
    assert done.json["chain"] == "device"
    objects = "\n".join(p11_objects(SOFTHSM_MODULE, token_label, cli_env))
    # The self-signed certificate was replaced; the CA's is kept beside it on the token.
    assert objects.count("Certificate Object") == 2 and "BICLE/chain-01" in objects
    out = tmp_path / "out.pem"
    assert tk("key", "export-cert", "BICLE", "--token", uri, "-o", out).code == 0
    assert x509.load_pem_x509_certificate(out.read_bytes()) == \
        x509.load_pem_x509_certificate(cert.read_bytes())


def test_certificate_for_another_key_is_refused_and_token_unchanged(
        tk: TK, uri: str, token_label: str, tmp_path: Path, cli_env: dict[str, str]) -> None:
    for name in ("A", "B"):
        assert tk("key", "generate", "--token", uri, "--name", name, "--algorithm",
                  "rsa2048").code == 0
    b_cert = tmp_path / "b.pem"
    assert tk("key", "export-cert", "B", "--token", uri, "-o", b_cert).code == 0
    before = p11_objects(SOFTHSM_MODULE, token_label, cli_env)
    refused = tk("key", "import-cert", "A", b_cert, "--token", uri)
    assert refused.code == 5
    assert "is for another key, not for 'A': nothing was changed" in refused.err
    assert p11_objects(SOFTHSM_MODULE, token_label, cli_env) == before


def _software_issued(public_pem: bytes, *, usage: x509.KeyUsage, start: datetime,
                     days: int) -> bytes:
    public = serialization.load_pem_public_key(public_pem)
    ca = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(public).serial_number(7)  # type: ignore[arg-type]
            .not_valid_before(start).not_valid_after(start + timedelta(days=days))
            .add_extension(usage, critical=True).sign(ca, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _usage(**on: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: on.get(n, False) for n in names})


def test_expired_or_signing_only_certificate_is_refused(
        tk: TK, uri: str, token_label: str, tmp_path: Path, cli_env: dict[str, str]) -> None:
    assert tk("key", "generate", "--token", uri, "--name", "K", "--algorithm", "rsa2048",
              "--no-self-sign").code == 0
    pub = tmp_path / "k.pub"
    assert tk("key", "export-public", "K", "--token", uri, "-o", pub).code == 0
    now = datetime.now(UTC)
    expired, signing = tmp_path / "expired.pem", tmp_path / "signing.pem"
    expired.write_bytes(_software_issued(pub.read_bytes(), usage=_usage(key_encipherment=True),
                                         start=now - timedelta(days=40), days=10))
    signing.write_bytes(_software_issued(pub.read_bytes(), usage=_usage(digital_signature=True),
                                         start=now - timedelta(days=1), days=10))
    before = p11_objects(SOFTHSM_MODULE, token_label, cli_env)
    run = tk("key", "import-cert", "K", expired, "--token", uri)
    assert run.code == 5 and "the certificate expired on" in run.err
    run = tk("key", "import-cert", "K", signing, "--token", uri)
    assert run.code == 5 and "key usage forbids encryption (no keyEncipherment)" in run.err
    assert p11_objects(SOFTHSM_MODULE, token_label, cli_env) == before
    listed = tk("--json", "key", "list", "--token", uri)
    assert listed.json["keys"][0]["status"] == "awaiting certificate"


def test_import_cert_with_an_unreachable_registry_leaves_the_token_unchanged(
        tk: TK, uri: str, token_label: str, tmp_path: Path, cli_env: dict[str, str]) -> None:
    """The registry is asked before the device changes, as `key adopt` does."""
    assert tk("key", "generate", "--token", uri, "--name", "K", "--algorithm", "rsa2048",
              "--no-self-sign").code == 0
    pub, cert = tmp_path / "k.pub", tmp_path / "k.pem"
    assert tk("key", "export-public", "K", "--token", uri, "-o", pub).code == 0
    cert.write_bytes(_software_issued(pub.read_bytes(), usage=_usage(key_encipherment=True),
                                      start=datetime.now(UTC) - timedelta(days=1), days=10))
    before = p11_objects(SOFTHSM_MODULE, token_label, cli_env)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    run = tk("key", "import-cert", "K", cert, "--token", uri,
             env={"TOKENKEYS_REGISTRY": str(blocked / "registry.sqlite")})
    assert run.code == RegistryUnavailable.exit_code, run.err
    assert p11_objects(SOFTHSM_MODULE, token_label, cli_env) == before
    assert tk("key", "import-cert", "K", cert, "--token", uri).code == 0


def test_ca_issues_for_a_bare_public_key_and_openssl_verifies(
        tk: TK, uri: str, ca_uri: str, tmp_path: Path) -> None:
    made = tk("--json", "ca", "create", "--token", ca_uri, "--name", "CA-ENTITE",
              "--cn", "Entity CA", "--days", "30", "--algorithm", "ec-p256")
    assert made.code == 0, made.err
    gen = tk("--json", "key", "generate", "--token", uri, "--name", "CARTE",
             "--algorithm", "rsa2048", "--no-self-sign", "--backup")
    assert gen.code == 0 and gen.json["key"]["status"] == "awaiting certificate"
    assert "key import-cert CARTE" in gen.json["next"]
    # Recorded from generation on, as a backup key awaiting its certificate.
    [row] = tk("--json", "key", "list", "--registry").json["keys"]
    assert row["designation"] == "CARTE" and row["status"] == "awaiting certificate"
    assert row["backup"] is True and row["fingerprint"] is None
    export = tk("key", "export-cert", "CARTE", "--token", uri, "-o", tmp_path / "none.pem")
    assert export.code == 5 and "awaiting a certificate" in export.err
    pub, cert, ca_pem = tmp_path / "carte.pub", tmp_path / "carte.pem", tmp_path / "ca.pem"
    assert tk("key", "export-public", "CARTE", "--token", uri, "-o", pub).code == 0
    no_cn = tk("ca", "issue", "--token", ca_uri, "--ca", "CA-ENTITE", pub, "-o", cert)
    assert no_cn.code == 2 and "give the certificate's --cn" in no_cn.err
    issued = tk("--json", "ca", "issue", "--token", ca_uri, "--ca", "CA-ENTITE", pub,
                "-o", cert, "--cn", "Agent Dupont", "--days", "365")
    assert issued.code == 0, issued.err
    assert issued.json["clipped"] is True and issued.json["request"] == "public-key"
    assert tk("ca", "export-cert", "CA-ENTITE", "--token", ca_uri, "-o", ca_pem).code == 0
    verify = _openssl("verify", "-x509_strict", "-CAfile", ca_pem, cert)
    assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stdout + verify.stderr

    ca_cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    bc = _ext(ca_cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = _ext(ca_cert, x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.key_encipherment
    assert leaf.not_valid_after_utc == ca_cert.not_valid_after_utc  # never outlives the CA
    lku = _ext(leaf, x509.KeyUsage)
    assert lku.critical and lku.value.key_encipherment and not lku.value.key_cert_sign
    assert not _ext(leaf, x509.BasicConstraints).value.ca
    assert _ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == \
        _ext(ca_cert, x509.SubjectKeyIdentifier).value.digest
    assert _ext(leaf, x509.SubjectKeyIdentifier).value == \
        x509.SubjectKeyIdentifier.from_public_key(leaf.public_key())

    listed = tk("--json", "ca", "list", "--token", ca_uri)
    assert [c["name"] for c in listed.json["cas"]] == ["CA-ENTITE"]
    done = tk("--json", "key", "import-cert", "CARTE", cert, "--chain", ca_pem, "--token", uri,
              "--backup")
    assert done.code == 0, done.err
    assert done.json["replaced"] is False
    assert done.json["key"]["status"] == "expiring"  # the CA itself has 30 days
    # Recorded in the registry now, as a backup key, with its device's envelope kinds.
    [row] = tk("--json", "key", "list", "--registry").json["keys"]
    assert row["designation"] == "CARTE" and row["backup"] is True
    assert "pkcs1v15" in row["envelope_kinds"]


def test_ca_issues_from_a_csr_and_refuses_a_forged_one(
        tk: TK, uri: str, ca_uri: str, tmp_path: Path) -> None:
    assert tk("ca", "create", "--token", ca_uri, "--name", "CA", "--algorithm",
              "rsa2048").code == 0
    assert tk("key", "generate", "--token", uri, "--name", "K", "--algorithm",
              "ec-p256").code == 0
    csr = tmp_path / "k.csr"
    assert tk("key", "csr", "K", "--token", uri, "-o", csr, "--cn", "Agent EC").code == 0
    cert = tmp_path / "k.pem"
    issued = tk("--json", "ca", "issue", "--token", ca_uri, "--ca", "CA", csr, "-o", cert)
    assert issued.code == 0, issued.err
    assert issued.json["subject"] == "CN=Agent EC" and issued.json["clipped"] is False
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    ku = _ext(leaf, x509.KeyUsage).value
    assert ku.key_agreement and not ku.key_encipherment

    forged = x509.load_pem_x509_csr(csr.read_bytes()).public_bytes(serialization.Encoding.DER)
    bad = tmp_path / "forged.csr"
    bad.write_bytes(forged[:-3] + bytes([forged[-3] ^ 1]) + forged[-2:])  # in the signature
    refused = tk("ca", "issue", "--token", ca_uri, "--ca", "CA", bad, "-o", tmp_path / "x.pem")
    assert refused.code == 5 and "does not verify" in refused.err
    assert not (tmp_path / "x.pem").exists()
    not_ca = tk("ca", "issue", "--token", uri, "--ca", "K", csr, "-o", tmp_path / "y.pem")
    assert not_ca.code == 2 and "is not a CA" in not_ca.err


def test_software_keystore_keeps_the_chain_beside_the_key(tk: TK, tmp_path: Path) -> None:
    store = f"soft:{tmp_path / 'ks'}"
    pin = {"TOKENKEYS_PIN": "chain keystore 2026"}  # a keystore PIN resists offline guessing
    assert tk("token", "init", "--token", store, "--label", "ks", env=pin).code == 0
    assert tk("ca", "create", "--token", store, "--name", "CA", "--algorithm", "ec-p256",
              env=pin).code == 0
    assert tk("key", "generate", "--token", store, "--name", "K", "--algorithm", "rsa2048",
              "--no-self-sign", env=pin).code == 0
    pub, cert, ca_pem = tmp_path / "k.pub", tmp_path / "k.pem", tmp_path / "ca.pem"
    assert tk("key", "export-public", "K", "--token", store, "-o", pub, "--der", env=pin).code == 0
    assert tk("ca", "issue", "--token", store, "--ca", "CA", pub, "-o", cert,
              "--cn", "K", env=pin).code == 0
    assert tk("ca", "export-cert", "CA", "--token", store, "-o", ca_pem, env=pin).code == 0
    done = tk("--json", "key", "import-cert", "K", cert, "--chain", ca_pem, "--token", store,
              env=pin)
    assert done.code == 0 and done.json["chain"] == "device", done.err
    [chain] = list((tmp_path / "ks").glob("*.chain.pem"))
    assert chain.read_bytes() == ca_pem.read_bytes()


def test_seal_chooses_pkcs1v15_for_a_key_known_to_open_only_that(
        tk: TK, uri: str, tmp_path: Path, cli_env: dict[str, str]) -> None:
    from tokenkeys.config import Config
    from tokenkeys.registry import KeyFacts
    from tokenkeys.services.access import open_registry

    assert tk("key", "generate", "--token", uri, "--name", "K", "--algorithm",
              "rsa2048").code == 0
    cert = tmp_path / "k.pem"
    assert tk("key", "export-cert", "K", "--token", uri, "-o", cert).code == 0
    plain = tmp_path / "bid.txt"
    plain.write_bytes(b"offre" * 100)
    sealed = tk("--json", "seal", plain, "-o", tmp_path / "a.p7m", "--recipient", cert)
    assert sealed.json["key_transports"] == ["oaep-sha256"] and not sealed.json["notes"]
    # The registry also records the key on a card offering RSA_PKCS only (a copy).
    with open_registry(Config(registry=cli_env["TOKENKEYS_REGISTRY"])) as reg:
        reg.create_service("cards")
        reg.add_key("cards", KeyFacts(
            designation="K-card", token_uri="pkcs11:token=card", ckaid="02",
            certificate=x509.load_pem_x509_certificate(cert.read_bytes()),
            public_key=x509.load_pem_x509_certificate(cert.read_bytes()).public_key(),
            algorithm="rsa2048", envelope_kinds=("pkcs1v15",)), "adopt")
    sealed = tk("--json", "seal", plain, "-o", tmp_path / "b.p7m", "--recipient", cert)
    assert sealed.code == 0 and sealed.json["key_transports"] == ["pkcs1v15"]
    assert "opens PKCS#1 v1.5 only" in sealed.err
    info = cms.ContentInfo.load(_openssl_der(tmp_path / "b.p7m"))
    [ri] = info["content"]["recipient_infos"]
    assert ri.chosen["key_encryption_algorithm"]["algorithm"].native == "rsaes_pkcs1v15"
    forced = tk("--json", "seal", plain, "-o", tmp_path / "c.p7m", "--recipient", cert,
                "--key-transport", "oaep-sha256")
    assert forced.json["key_transports"] == ["oaep-sha256"] and not forced.json["notes"]
    opened = tk("--json", "open", tmp_path / "b.p7m", "-o", tmp_path / "out", "--token", uri)
    assert opened.code == 0, opened.out + opened.err
    assert (tmp_path / "out" / "b").read_bytes() == plain.read_bytes()


def _openssl_der(path: Path) -> bytes:
    """The envelope re-encoded to DER by openssl (ours is indefinite-length BER)."""
    done = subprocess.run(["openssl", "cms", "-cmsout", "-inform", "DER", "-outform", "DER",
                           "-in", str(path)], capture_output=True, timeout=60, check=True)
    return done.stdout


def test_key_list_and_doctor_show_the_envelope_kinds(tk: TK, uri: str, token_label: str) -> None:
    for name, alg in (("R", "rsa2048"), ("E", "ec-p256")):
        assert tk("key", "generate", "--token", uri, "--name", name, "--algorithm", alg).code == 0
    listed = tk("--json", "key", "list", "--token", uri)
    opens = {k["designation"]: k["opens"] for k in listed.json["keys"]}
    # SoftHSM2: RSA_PKCS, and OAEP through on-device SHA-1 or raw RSA.
    rsa_kinds = ["oaep-sha1", "oaep-sha256", "oaep-sha384", "oaep-sha512", "pkcs1v15"]
    assert opens == {"R": rsa_kinds, "E": ["ecdh"]}
    doctor = tk("--json", "doctor", env={"TOKENKEYS_MODULE": SOFTHSM_MODULE,
                                         "TOKENKEYS_PIN": None})
    [mine] = [t for t in doctor.json["tokens"] if f"token={token_label};" in t["uri"]]
    assert mine["opens"] == opens
    human = tk("doctor", env={"TOKENKEYS_MODULE": SOFTHSM_MODULE, "TOKENKEYS_PIN": None})
    assert f"key 'R' opens: {', '.join(rsa_kinds)}" in human.out
