"""On the real opensc-pkcs11.so and the emulated OpenPGP card,
through the CLI only: generate on the card, `ca issue` on a SoftHSM2 CA,
`import-cert` onto the card, `openssl verify`, OpenSSL envelopes and a
`tokenkeys seal` (PKCS#1 v1.5 chosen by itself) opened on the card; then the
agent's side: waiting for the card, the card pulled out mid-batch.

Runs after test_smartcard.py on the same session card (which left a key in
the card's slot 02).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from tests.smartcard.conftest import EmulatedCard, card_cli, card_cli_env, run_until_card_inserted
from tokenkeys.envelope.seal import SealOptions, seal
from tokenkeys.errors import MechanismUnsupported

pytestmark = pytest.mark.smartcard


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)


def _card_public(card: EmulatedCard, tmp: Path) -> bytes:
    out = tmp / f"pub-{time.monotonic_ns()}.der"
    done = card.tool("--read-object", "--type", "pubkey", "--id", "02", "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


@pytest.fixture(scope="module")
def provisioned(card: EmulatedCard, softhsm: Any,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The security officer's flow: a key generated on the card, its certificate
    issued by the entity's CA on SoftHSM2, imported onto the card."""
    tmp = tmp_path_factory.mktemp("provision")
    if "Public Key Object" not in card.tool("-O").stdout:  # run alone: a fresh card
        first = card_cli(card, tmp, "key", "generate", "--token", card.uri, "--name", "FIRST",
                     "--algorithm", "rsa2048")
        assert first.returncode == 0, first.stderr
    before = _card_public(card, tmp)
    refused = card_cli(card, tmp, "key", "generate", "--token", card.uri, "--name", "CARTE-AGENT",
                   "--algorithm", "rsa2048")
    assert refused.returncode == 5 and "--replace" in refused.stderr, refused.stderr
    assert _card_public(card, tmp) == before  # the card's key was not touched

    replace = card_cli(card, tmp, "key", "generate", "--token", card.uri, "--name", "CARTE-AGENT",
                   "--algorithm", "rsa2048", "--replace")
    # OpenSC can neither delete nor overwrite an OpenPGP key: the fix is named.
    assert replace.returncode == 6 and "openpgp-tool --erase" in replace.stderr, replace.stderr
    assert _card_public(card, tmp) == before
    erase = subprocess.run(["openpgp-tool", "--erase"], capture_output=True, check=False)
    assert erase.returncode == 0  # factory PINs again: the ones the tests use

    gen = card_cli(card, tmp, "--json", "key", "generate", "--token", card.uri, "--name",
               "CARTE-AGENT", "--algorithm", "rsa2048")
    assert gen.returncode == 0, gen.stderr
    key = json.loads(gen.stdout)["key"]
    assert key["status"] == "awaiting certificate" and key["id"] == "02"
    assert key["designation"] == "CARTE-AGENT" and key["public_key_sha256"]
    assert "slot 02" in json.loads(gen.stdout)["next"]
    assert _card_public(card, tmp) != before
    # The card keeps no label: the registry knows the key by its designation.
    listed = card_cli(card, tmp, "--json", "key", "list", "--token", card.uri)
    [row] = json.loads(listed.stdout)["keys"]
    assert row["designation"] == "CARTE-AGENT" and row["registered"], listed.stdout

    csr = card_cli(card, tmp, "key", "csr", "CARTE-AGENT", "--token", card.uri,
                   "-o", tmp / "card.csr")
    assert csr.returncode == 6 and "key export-public" in csr.stderr, csr.stderr
    assert not (tmp / "card.csr").exists()  # the card's key cannot sign a request

    ca_uri = softhsm.uri(softhsm.new_token("ca"))
    assert card_cli(card, tmp, "ca", "create", "--token", ca_uri, "--name", "CA-ENTITE",
                "--cn", "Entity CA", "--algorithm", "rsa2048").returncode == 0
    ca_pem, pub, cert = tmp / "ca.pem", tmp / "card.pub.pem", tmp / "card.pem"
    assert card_cli(card, tmp, "ca", "export-cert", "CA-ENTITE", "--token", ca_uri,
                "-o", ca_pem).returncode == 0
    exported = card_cli(card, tmp, "key", "export-public", "CARTE-AGENT", "--token", card.uri,
                        "-o", pub)
    assert exported.returncode == 0, exported.stderr
    issued = card_cli(card, tmp, "ca", "issue", "--token", ca_uri, "--ca", "CA-ENTITE", pub,
                  "-o", cert, "--cn", "Agent Dupont", "--days", "30")
    assert issued.returncode == 0, issued.stderr
    imported = card_cli(card, tmp, "--json", "key", "import-cert", "CARTE-AGENT", cert,
                        "--chain", ca_pem, "--token", card.uri)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["key"]["designation"] == "CARTE-AGENT"
    yield {"tmp": tmp, "key": key, "cert": cert, "ca": ca_pem,
           "import": json.loads(imported.stdout)}


def test_certificate_from_the_ca_is_on_the_card_and_verifies(
        card: EmulatedCard, provisioned: dict[str, Any], tmp_path: Path) -> None:
    verify = _openssl("verify", "-x509_strict", "-CAfile", provisioned["ca"],
                      provisioned["cert"])
    assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stdout + verify.stderr
    # The card holds one certificate: the chain is kept beside the key.
    assert provisioned["import"]["chain"].startswith("beside the key")
    listed = card_cli(card, tmp_path, "--json", "key", "list", "--token", card.uri)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)["keys"]
    assert row["cn"] == "Agent Dupont" and row["opens"] == ["pkcs1v15"]
    on_card = tmp_path / "on-card.pem"
    assert card_cli(card, tmp_path, "key", "export-cert", row["uri"], "-o", on_card).returncode == 0
    assert x509.load_pem_x509_certificate(on_card.read_bytes()) == \
        x509.load_pem_x509_certificate(provisioned["cert"].read_bytes())


def _card_certificate(card: EmulatedCard, tmp: Path) -> x509.Certificate:
    out = tmp / f"cert-{time.monotonic_ns()}.der"
    done = card.tool("--read-object", "--type", "cert", "--id", "02", "-o", str(out))
    assert done.returncode == 0, done.stderr
    return x509.load_der_x509_certificate(out.read_bytes())


def _another_certificate(cert: x509.Certificate) -> x509.Certificate:
    """The same key and name, issued again by a throwaway software CA."""
    ca = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=True, data_encipherment=False, key_agreement=False,
                          key_cert_sign=False, crl_sign=False, encipher_only=False,
                          decipher_only=False)
    return (x509.CertificateBuilder().subject_name(cert.subject)
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other CA")]))
            .public_key(cert.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(usage, critical=True).sign(ca, hashes.SHA256()))


def test_certificate_imported_again_is_already_on_the_card_and_another_replaces_it(
        card: EmulatedCard, provisioned: dict[str, Any], tmp_path: Path) -> None:
    """The card keeps one certificate and OpenSC answers a second write with
    CKR_GENERAL_ERROR: the same one again writes nothing; another replaces it."""
    tmp, cert_pem = provisioned["tmp"], provisioned["cert"]
    first = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    again = card_cli(card, tmp, "key", "import-cert", "CARTE-AGENT", cert_pem,
                     "--token", card.uri)
    assert again.returncode == 0, again.stderr
    assert "is already on the card or token, nothing was written" in again.stdout
    assert _card_certificate(card, tmp_path) == first
    other = _another_certificate(first)
    other_pem = tmp_path / "other.pem"
    other_pem.write_bytes(other.public_bytes(Encoding.PEM))
    try:
        replaced = card_cli(card, tmp, "--json", "key", "import-cert", "CARTE-AGENT", other_pem,
                            "--token", card.uri)
        assert replaced.returncode == 0, replaced.stdout + replaced.stderr
        assert json.loads(replaced.stdout)["replaced"] is True
        assert _card_certificate(card, tmp_path) == other
    finally:  # envelopes name their recipient by issuer and serial: put the first one back
        back = card_cli(card, tmp, "key", "import-cert", "CARTE-AGENT", cert_pem,
                        "--token", card.uri)
    assert back.returncode == 0, back.stderr
    assert _card_certificate(card, tmp_path) == first


def test_designation_from_a_copied_registry_and_another_module_path(
        card: EmulatedCard, provisioned: dict[str, Any], tmp_path: Path) -> None:
    """A second workstation sharing the registry (here a copy) reaches the card through
    another module path: the designation still finds the key."""
    registry = provisioned["tmp"] / "registry.sqlite"
    copy = tmp_path / "registry.sqlite"
    copy.write_bytes(registry.read_bytes())
    link = tmp_path / "opensc-elsewhere.so"
    link.symlink_to(card.module)
    other_uri = card.uri.replace(card.module, str(link))
    pub = tmp_path / "pub.pem"
    done = card_cli(card, tmp_path, "key", "export-public", "CARTE-AGENT", "--token",
                    other_uri, "-o", pub)
    assert done.returncode == 0, done.stderr
    assert x509.load_pem_x509_certificate(provisioned["cert"].read_bytes()).public_key() \
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo) == pub.read_bytes()


def test_openssl_and_tokenkeys_envelopes_open_on_the_card(
        card: EmulatedCard, provisioned: dict[str, Any]) -> None:
    tmp, cert = provisioned["tmp"], provisioned["cert"]
    bids, out = tmp / "bids", tmp / "opened"
    bids.mkdir()
    plain = tmp / "offre.pdf"
    plain.write_bytes(os.urandom(5000))
    for name, extra in (("openssl-cbc", ["-aes256"]), ("openssl-gcm", ["-aes-256-gcm"])):
        made = _openssl("cms", "-encrypt", "-binary", *extra, "-in", plain, "-outform", "DER",
                        "-out", bids / f"{name}.p7m", cert)
        assert made.returncode == 0, made.stderr
    sealed = card_cli(card, tmp, "--json", "seal", plain, "-o", bids / "tokenkeys.p7m",
                  "--recipient", cert)
    assert sealed.returncode == 0, sealed.stderr
    assert json.loads(sealed.stdout)["key_transports"] == ["pkcs1v15"]
    assert "opens PKCS#1 v1.5 only" in sealed.stderr
    opened = card_cli(card, tmp, "--json", "open", bids, "-o", out, "--token", card.uri)
    assert opened.returncode == 0, opened.stdout + opened.stderr
    assert json.loads(opened.stdout)["opened"] == 3
    for name in ("openssl-cbc", "openssl-gcm", "tokenkeys"):
        assert (out / name).read_bytes() == plain.read_bytes()

    oaep = tmp / "oaep" / "oaep.p7m"
    oaep.parent.mkdir()
    assert _openssl("cms", "-encrypt", "-binary", "-aes256", "-in", plain, "-outform", "DER",
                    "-out", oaep, "-recip", cert, "-keyopt",
                    "rsa_padding_mode:oaep").returncode == 0
    failed = card_cli(card, tmp, "--json", "open", oaep, "-o", tmp / "oaep-out",
                      "--token", card.uri)
    # One envelope named alone fails with its own error's exit code (docs/errors.md).
    assert failed.returncode == MechanismUnsupported.exit_code
    [row] = json.loads(failed.stdout)["files"]
    assert row["error_type"] == "MechanismUnsupported"
    assert "PKCS#1 v1.5 envelopes only" in row["error"] and "pkcs1v15" in row["error"]


def test_damaged_v15_block_is_a_damaged_bid_not_a_device_error(
        card: EmulatedCard, provisioned: dict[str, Any], tmp_path: Path) -> None:
    """A bid whose RSA block was altered: the card decrypts it and answers bad padding.
    That is one damaged envelope (exit 7, the batch goes on), never a device failure."""
    from asn1crypto import cms

    plain = tmp_path / "offre.pdf"
    plain.write_bytes(os.urandom(2000))
    bids = tmp_path / "bids"
    bids.mkdir()
    for name in ("good", "damaged"):
        made = _openssl("cms", "-encrypt", "-binary", "-aes256", "-in", plain, "-outform",
                        "DER", "-out", bids / f"{name}.p7m", provisioned["cert"])
        assert made.returncode == 0, made.stderr
    info = cms.ContentInfo.load((bids / "damaged.p7m").read_bytes())
    ktri = info["content"]["recipient_infos"][0].chosen
    block = bytearray(ktri["encrypted_key"].native)
    block[len(block) // 2] ^= 0x01
    ktri["encrypted_key"] = bytes(block)
    (bids / "damaged.p7m").write_bytes(info.dump(force=True))
    single = card_cli(card, tmp_path, "open", bids / "damaged.p7m", "-o", tmp_path / "one",
                      "--token", card.uri)
    assert single.returncode == 7, single.stderr  # EnvelopeIntegrity
    both = card_cli(card, tmp_path, "--json", "open", bids, "-o", tmp_path / "out",
                    "--token", card.uri)
    report = json.loads(both.stdout)
    assert report["opened"] == 1 and report["failed"] == 1, both.stdout + both.stderr
    [bad] = [f for f in report["files"] if f["status"] == "failed"]
    assert bad["error_type"] == "EnvelopeIntegrity", bad
    assert (tmp_path / "out" / "good").read_bytes() == plain.read_bytes()


def test_wait_card_sees_insertion_and_says_when_no_card(
        card: EmulatedCard, provisioned: dict[str, Any], tmp_path: Path) -> None:
    card.remove()
    try:
        none = card_cli(card, tmp_path, "--json", "key", "list", "--token", card.uri,
                    "--wait-card", "1")
        assert none.returncode == 3
        assert "no card" in json.loads(none.stdout)["error"]["message"]
        waited = run_until_card_inserted(card, tmp_path, "--json", "token", "list",
                                         "--wait-card", "20")
        assert waited.returncode == 0, waited.stderr
        assert card.label in [t["label"] for t in json.loads(waited.stdout)["tokens"]]
    finally:
        if not _present(card, tmp_path):
            card.insert()


def _present(card: EmulatedCard, tmp: Path) -> bool:
    done = card_cli(card, tmp, "--json", "token", "list")
    return card.label in [t["label"] for t in json.loads(done.stdout)["tokens"]]


def test_card_pulled_out_mid_batch_then_rerun(card: EmulatedCard, provisioned: dict[str, Any],
                                              tmp_path: Path) -> None:
    cert = provisioned["cert"]
    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    plains: dict[str, bytes] = {}
    recipient = [x509.load_pem_x509_certificate(cert.read_bytes())]
    for i in range(50):
        name, data = f"bid{i:02d}", os.urandom(1 << 20)  # the batch must last a while
        (tmp_path / name).write_bytes(data)
        seal(tmp_path / name, bids / f"{name}.p7m", recipient,
             SealOptions(key_transport="pkcs1v15"))
        plains[name] = data
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenkeys", "--json", "open", str(bids), "-o", str(out),
         "--token", card.uri], env=card_cli_env(card, tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and any(out.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.01)
        card.remove()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        card.insert()
    assert proc.returncode == 3, stdout + stderr
    error = json.loads(stdout)["error"]
    message = error["message"]
    # Said as what happened, whatever OpenSC answered (CKR_GENERAL_ERROR, or
    # CKR_OPERATION_ACTIVE for the next envelope): the card was pulled out.
    assert error["type"] == "DeviceRemoved" and "the card was removed" in message, message
    assert "CKR_" not in message, message
    done = sorted(p.name for p in out.iterdir())
    assert 0 < len(done) < 50, "the batch ended before the card was pulled out"
    assert f"{len(done)} of 50 envelope(s) done, {50 - len(done)} left" in message, stderr
    for name in done:  # nothing partial: every output present is complete
        assert (out / name).read_bytes() == plains[name], name
    rerun = card_cli(card, tmp_path, "--json", "open", bids, "-o", out, "--token", card.uri)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["skipped"] == len(done) and report["opened"] == 50 - len(done)
    for name, data in plains.items():
        assert (out / name).read_bytes() == data
