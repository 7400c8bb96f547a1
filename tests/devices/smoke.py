"""The CLI smoke run every PKCS#11 device gets (tests/devices/test_*_cli.py): the real
`tokenkeys` command against the real device, envelopes made by the openssl CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from cryptography import x509

from tests.cli.conftest import TK, Run
from tests.envelope.conftest import openssl

OAEP_HASHES = ("sha1", "sha256", "sha384", "sha512")


def ok(run: Run) -> Run:
    assert run.code == 0, (run.code, run.out, run.err)
    return run


def verify_self_signed(pem: Path) -> None:
    """`openssl verify` checks a self-signed certificate's own signature only with
    -check_ss_sig: without it a wrong signature passes."""
    done = subprocess.run(["openssl", "verify", "-check_ss_sig", "-CAfile", pem, pem],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and ": OK" in done.stdout, done.stdout + done.stderr


def seal_with_openssl(cert: Path, out: Path, transport: str, data: bytes) -> None:
    """An OpenSSL envelope: "v1.5" (its default) or "oaep-<hash>" (same MGF1 hash)."""
    args: list[str | Path] = ["cms", "-encrypt", "-binary", "-aes-256-cbc", "-outform", "DER",
                              "-recip", cert]
    if transport.startswith("oaep-"):
        h = transport.removeprefix("oaep-")
        args += ["-keyopt", "rsa_padding_mode:oaep", "-keyopt", f"rsa_oaep_md:{h}",
                 "-keyopt", f"rsa_mgf1_md:{h}"]
    out.write_bytes(openssl(*args, input=data))


def open_every_claimed(tk: TK, uri: str, name: str, pem: Path, tmp: Path) -> list[str]:
    """What `key list` says key `name` opens; each RSA kind of it checked by opening
    an OpenSSL envelope made with it (OAEP with that hash, and v1.5), beside one
    tokenkeys sealed, with `open --jobs 2`."""
    [row] = [k for k in ok(tk("--json", "key", "list", "--token", uri)).json["keys"]
             if k["designation"] == name]
    opens = list(row["opens"])
    inbox, outdir = tmp / "in", tmp / "out"
    inbox.mkdir()
    assert "pkcs1v15" in opens
    claimed = [k for k in opens if k.startswith("oaep-")] + ["v1.5"]
    for kind in claimed:
        seal_with_openssl(pem, inbox / f"{kind}.p7m", kind, f"bid sealed with {kind}".encode())
    (tmp / "plain.txt").write_bytes(b"sealed by tokenkeys")
    ok(tk("seal", tmp / "plain.txt", "-o", inbox / "tokenkeys.p7m", "--recipient", pem))
    ok(tk("open", inbox, "-o", outdir, "--token", uri, "--jobs", "2"))
    for kind in claimed:
        assert (outdir / kind).read_bytes() == f"bid sealed with {kind}".encode()
    assert (outdir / "tokenkeys").read_bytes() == b"sealed by tokenkeys"
    return opens


def device_report(tk: TK, label: str, env: dict[str, str | None]) -> dict[str, Any]:
    """doctor --json's device section for the token labelled `label`."""
    run = tk("--json", "doctor", env={**env, "TOKENKEYS_PIN": None})
    assert run.code in (0, 15), (run.code, run.err)
    [mine] = [t for t in run.json["tokens"] if f"token={label};" in t["uri"]]
    return dict(mine["device"])


def run_smoke(tk: TK, uri: str, tmp: Path, *, ec: bool, wraps: bool) -> dict[str, object]:
    """generate, export-cert, seal, open (OpenSSL OAEP with every hash `key list` shows,
    and v1.5; --jobs 2), share where the device wraps, renew, guarded delete. Returns
    what was seen, for the device's own assertions."""
    seen: dict[str, object] = {}
    gen = ok(tk("--json", "key", "generate", "--token", uri, "--name", "BID",
                "--algorithm", "rsa2048", "--days", "30")).json["key"]
    assert gen["status"] in ("valid", "expiring"), gen
    pem = tmp / "bid.pem"
    ok(tk("key", "export-cert", "BID", "--token", uri, "-o", pem))
    verify_self_signed(pem)
    assert x509.load_pem_x509_certificate(pem.read_bytes()).subject.rfc4514_string() == "CN=BID"
    ec_run = tk("--json", "key", "generate", "--token", uri, "--name", "BID-EC",
                "--algorithm", "ec-p256", "--days", "30")
    seen["ec"] = ec_run
    assert (ec_run.code == 0) is ec, (ec_run.code, ec_run.err)
    if not ec:
        assert ec_run.code == 6 and "not supported by this device" in ec_run.json["error"][
            "message"]
    opens = open_every_claimed(tk, uri, "BID", pem, tmp)
    seen["opens"] = opens
    # Sharing: where the device cannot wrap a key out, a clear refusal and nothing made.
    share = tk("share", "export", "BID", "--token", uri, "-o", tmp / "bid.p12")
    seen["share"] = share
    if not wraps:
        assert share.code != 0 and not (tmp / "bid.p12").exists()
        copy = tk("share", "copy", "BID", "--token", uri, "--to-token", uri)
        assert copy.code != 0
    # Renewal keeps the old key; the bound one is never deleted.
    ok(tk("consultation", "create", "AO-1", "--key", "BID", "--no-backup"))
    renewed = ok(tk("--json", "key", "renew", "BID")).json["key"]
    assert renewed["designation"].startswith("BID-")
    refused = tk("key", "delete", "BID", "--token", uri, "--yes")
    assert refused.code == 9, (refused.code, refused.err)
    names = [k["designation"] for k in ok(tk("--json", "key", "list", "--token", uri)).json[
        "keys"]]
    assert "BID" in names and renewed["designation"] in names
    ok(tk("key", "delete", renewed["designation"], "--token", uri, "--yes"))
    return seen
