"""The key policy rules, through the real CLI against SoftHSM2: each command once, on a
SQLite registry (tests/services/test_policy_scenarios.py runs the same rules in-process
on both backends).

Results on the token are checked with pkcs11-tool; envelopes with openssl.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.cli.conftest import SOFTHSM_MODULE, TK, Run, p11_objects


@pytest.fixture
def registry_location(tmp_path: Path) -> str:
    """SQLite only here: the CLI layer is checked once."""
    return str(tmp_path / "reg" / "registry.sqlite")


def ok(run: Run) -> Run:
    assert run.code == 0, run.err + run.out
    return run


def labels(label: str, env: dict[str, str]) -> list[str]:
    return [line.split("label:", 1)[1].strip() for line in p11_objects(SOFTHSM_MODULE, label, env)
            if "label:" in line]


def gen(rtk: TK, uri: str, name: str, *extra: str) -> dict[str, Any]:
    run = ok(rtk("--json", "key", "generate", "--token", uri, "--name", name,
                 "--algorithm", "rsa2048", *extra))
    return dict(run.json["key"])


def in_days(n: int) -> str:
    return (datetime.now(UTC) + timedelta(days=n)).strftime("%Y-%m-%d")


def cms_recipient_serials(path: Path) -> list[int]:
    printed = subprocess.run(["openssl", "cms", "-cmsout", "-print", "-inform", "DER",
                              "-in", str(path)], capture_output=True, text=True, check=True)
    return [int(line.split(":", 1)[1].strip(), 0) for line in printed.stdout.splitlines()
            if line.strip().startswith("serialNumber:")]


def test_binding_bundle_seal_open_and_guarded_delete(
        rtk: TK, softhsm: Any, cli_env: dict[str, str], tmp_path: Path) -> None:
    main_label, backup_label = softhsm.new_token("pol"), softhsm.new_token("bak")
    uri, backup_uri = softhsm.uri(main_label), softhsm.uri(backup_label)
    gen(rtk, uri, "BICLE-A", "--days", "90")
    gen(rtk, uri, "BICLE-B", "--days", "90")
    gen(rtk, backup_uri, "SECOURS", "--backup", "--days", "365")

    made = ok(rtk("--json", "consultation", "create", "2026-AO-01", "--key", "BICLE-A",
                  "--closes", in_days(30), "--title", "Travaux [bold]x[/]"))
    assert [b["designation"] for b in made.json["consultation"]["backups"]] == ["SECOURS"]

    # Rebinding is refused, and the binding is unchanged.
    again = rtk("consultation", "create", "2026-AO-01", "--key", "BICLE-B")
    assert again.code == 9 and "a binding is never changed" in again.err
    assert again.err.count("\n") == 1
    shown = ok(rtk("--json", "consultation", "show", "2026-AO-01")).json["consultation"]
    assert shown["key"]["designation"] == "BICLE-A"

    # The bundle is the bound key plus the recorded backups.
    bundle = tmp_path / "bundle.pem"
    ok(rtk("consultation", "recipients", "2026-AO-01", "-o", bundle))
    certs = x509.load_pem_x509_certificates(bundle.read_bytes())
    exported = []
    for name, token in (("BICLE-A", uri), ("SECOURS", backup_uri)):
        out = tmp_path / f"{name}.pem"
        ok(rtk("key", "export-cert", name, "--token", token, "-o", out))
        exported.append(x509.load_pem_x509_certificate(out.read_bytes()))
    assert certs == exported
    assert rtk("consultation", "recipients", "2026-AO-01", "-o", bundle).code == 10
    dangling = tmp_path / "dangling.pem"
    dangling.symlink_to(tmp_path / "nowhere.pem")  # refused like any existing output
    refused = rtk("consultation", "recipients", "2026-AO-01", "-o", dangling)
    assert refused.code == 10 and "already exists" in refused.err, refused.err
    assert dangling.is_symlink() and not (tmp_path / "nowhere.pem").exists()

    # A sealed envelope holds exactly those recipients and opens with each of them.
    bid = tmp_path / "offre.pdf"
    bid.write_bytes(b"%PDF offre " * 1000)
    env = tmp_path / "in" / "offre.pdf.p7m"
    ok(rtk("seal", bid, "-o", env, "--consultation", "2026-AO-01"))
    assert sorted(cms_recipient_serials(env)) == sorted(c.serial_number for c in certs)
    for n, token in enumerate((uri, backup_uri)):
        opened = ok(rtk("--json", "open", env, "-o", tmp_path / f"out{n}", "--token", token,
                        "--consultation", "2026-AO-01"))
        assert opened.json["opened"] == 1
        assert (tmp_path / f"out{n}" / "offre.pdf").read_bytes() == bid.read_bytes()

    # Envelopes for other keys, or missing the backup, are refused by `open --consultation`.
    other = tmp_path / "BICLE-B.pem"
    ok(rtk("key", "export-cert", "BICLE-B", "--token", uri, "-o", other))
    for n, recipients in enumerate(([other], [tmp_path / "BICLE-A.pem"],
                                    [other, tmp_path / "BICLE-A.pem", tmp_path / "SECOURS.pem"])):
        stranger = tmp_path / f"in{n + 2}" / "autre.p7m"
        ok(rtk("seal", bid, "-o", stranger, *[a for r in recipients for a in ("--recipient", r)]))
        refused = rtk("open", env, stranger, "-o", tmp_path / "out9", "--token", uri,
                      "--consultation", "2026-AO-01")
        assert refused.code == 9 and "not sealed to consultation" in refused.err
        assert not (tmp_path / "out9").exists()
    audit = ok(rtk("--json", "audit", "show", "--event", "open")).json["rows"]
    assert len(audit) == 2 and audit[0]["details"]["envelopes"][0]["status"] == "opened"
    assert len(audit[0]["details"]["envelopes"][0]["sha256"]) == 64

    # Deletion is refused while bound (as key or as recorded backup); key stays on the token.
    for name, token, label in (("BICLE-A", uri, main_label),
                               ("SECOURS", backup_uri, backup_label)):
        refused = rtk("key", "delete", name, "--token", token, "--yes")
        assert refused.code == 9 and "2026-AO-01" in refused.err, refused.err
        assert name in labels(label, cli_env)
    listed = ok(rtk("--json", "key", "list", "--token", uri)).json["keys"]
    by_name = {k["designation"]: k for k in listed}
    assert by_name["BICLE-A"]["open_consultations"] == ["2026-AO-01"]
    assert by_name["BICLE-B"]["open_consultations"] == []
    assert ok(rtk("--json", "key", "list", "--token", backup_uri)).json["keys"][0]["backup"]

    # After closing, deletion is allowed; the registry row stays, marked deleted.
    ok(rtk("consultation", "close", "2026-AO-01"))
    ok(rtk("key", "delete", "BICLE-A", "--token", uri, "--yes"))
    assert "BICLE-A" not in labels(main_label, cli_env)
    rows = ok(rtk("--json", "key", "list", "--registry", "--all")).json["keys"]
    assert [r["deleted_at"] is not None for r in rows if r["designation"] == "BICLE-A"] == [True]
    listing = ok(rtk("--json", "consultation", "list")).json["consultations"]
    assert [(c["reference"], c["status"]) for c in listing] == [("2026-AO-01", "closed")]
    ok(rtk("audit", "verify"))


def test_consultation_refusals(rtk: TK, softhsm: Any) -> None:
    uri = softhsm.uri(softhsm.new_token("ref"))
    gen(rtk, uri, "COURT", "--days", "10")
    gen(rtk, uri, "SECOURS", "--backup", "--days", "365")
    cases = [
        (["--key", "COURT", "--closes", in_days(20)], "before the closing date"),
        (["--key", "SECOURS"], "is a backup key"),
        (["--key", "NOPE"], "no key named 'NOPE'"),
    ]
    for args, message in cases:
        run = rtk("consultation", "create", "AO-X", *args)
        assert run.code in (5, 9) and message in run.err, run.err
    assert ok(rtk("--json", "consultation", "list")).json["consultations"] == []
    # A service with no backup key: refused unless --no-backup, which warns.
    ok(rtk("service", "create", "travaux"))
    gen(rtk, uri, "T1", "--service", "travaux", "--days", "90")
    run = rtk("consultation", "create", "AO-T", "--key", "T1", "--service", "travaux")
    assert run.code == 9 and "no valid backup key" in run.err
    run = ok(rtk("consultation", "create", "AO-T", "--key", "T1", "--service", "travaux",
                 "--no-backup"))
    assert "depend on one key only" in run.err


def _cert_for(public_der: bytes, cn: str, start: datetime, days: int) -> bytes:
    ca = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "LOCAL TRUST test CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
            .public_key(serialization.load_der_public_key(public_der))  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + timedelta(days=days)).sign(ca, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_adopt_pkcs11_tool_key_expired_key_and_mismatch(
        rtk: TK, softhsm: Any, cli_env: dict[str, str], tmp_path: Path) -> None:
    label = softhsm.new_token("adopt")
    uri = softhsm.uri(label)
    base = ["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", label, "--login",
            "--pin", "env:TOKENKEYS_PIN"]
    for key_label, key_id in (("ANCIENNE", "0a"), ("AUTRE", "0b")):
        subprocess.run([*base, "--keypairgen", "--key-type", "rsa:2048", "--label", key_label,
                        "--id", key_id, "--usage-decrypt"], env=cli_env, check=True,
                       capture_output=True)
    pub = tmp_path / "pub.der"
    subprocess.run([*base, "--read-object", "--type", "pubkey", "--label", "AUTRE",
                    "-o", pub], env=cli_env, check=True, capture_output=True)
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(_cert_for(pub.read_bytes(), "ANCIENNE", datetime.now(UTC), 30))
    refused = rtk("key", "adopt", "--token", uri, "--name", "ANCIENNE", "--cert", wrong)
    assert refused.code == 5 and "another public key" in refused.err
    assert ok(rtk("--json", "key", "list", "--registry")).json["keys"] == []

    # The certificate of the right key, issued by an outside CA, expired a year ago.
    subprocess.run([*base, "--read-object", "--type", "pubkey", "--label", "ANCIENNE",
                    "-o", pub], env=cli_env, check=True, capture_output=True)
    expired = tmp_path / "expired.pem"
    expired.write_bytes(_cert_for(pub.read_bytes(), "ANCIENNE",
                                  datetime.now(UTC) - timedelta(days=400), 30))
    adopted = ok(rtk("--json", "key", "adopt", "--token", uri, "--name", "ANCIENNE",
                     "--cert", expired))
    assert adopted.json["key"]["envelope_kinds"][:2] == ["oaep-sha1", "oaep-sha256"]
    assert "Certificate Object" in "\n".join(p11_objects(SOFTHSM_MODULE, label, cli_env))
    gen(rtk, uri, "SECOURS", "--backup")
    run = rtk("consultation", "create", "AO-OLD", "--key", "ANCIENNE")
    assert run.code == 9 and "an expired key cannot be bound" in run.err
    # The other pkcs11-tool key, with no certificate: --self-sign makes one on the device.
    assert rtk("key", "adopt", "--token", uri, "--name", "AUTRE").code == 5
    ok(rtk("key", "adopt", "--token", uri, "--name", "AUTRE", "--self-sign", "60"))
    ok(rtk("consultation", "create", "AO-NEW", "--key", "AUTRE"))
    assert [r["event"] for r in ok(rtk("--json", "audit", "show")).json["rows"]] == [
        "adopt", "generate", "adopt", "consultation-create"]


def test_renew_keeps_old_key_and_backup_replaced_for_new_only(
        rtk: TK, softhsm: Any, cli_env: dict[str, str]) -> None:
    label = softhsm.new_token("renew")
    uri = softhsm.uri(label)
    gen(rtk, uri, "BICLE", "--days", "20")
    gen(rtk, uri, "SECOURS", "--backup", "--days", "40")
    ok(rtk("consultation", "create", "AO-1", "--key", "BICLE"))
    renewed = ok(rtk("--json", "key", "renew", "BICLE")).json["key"]
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert renewed["designation"] == f"BICLE-{today}" and renewed["algorithm"] == "rsa2048"
    assert renewed["replaces_id"] is not None
    start = datetime.fromisoformat(renewed["not_before"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(renewed["not_after"].replace("Z", "+00:00"))
    assert round((end - start).total_seconds() / 86400) == 20
    assert {"BICLE", f"BICLE-{today}"} <= set(labels(label, cli_env))
    new_backup = ok(rtk("--json", "key", "renew", "SECOURS", "--days", "365")).json["key"]
    assert new_backup["backup"] is True
    ok(rtk("consultation", "create", "AO-2", "--key", f"BICLE-{today}"))
    first = ok(rtk("--json", "consultation", "show", "AO-1")).json["consultation"]
    second = ok(rtk("--json", "consultation", "show", "AO-2")).json["consultation"]
    assert [b["designation"] for b in first["backups"]] == ["SECOURS"]
    assert [b["designation"] for b in second["backups"]] == [new_backup["designation"]]
    assert first["key"]["designation"] == "BICLE"
    assert rtk("key", "delete", "BICLE", "--token", uri, "--yes").code == 9
