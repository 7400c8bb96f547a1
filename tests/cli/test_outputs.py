"""Through the real CLI: outputs are never silently replaced,
re-runs resume, special files are reported, and single failures say what happened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

from tests.cli.conftest import TK
from tests.cli.test_open_batch import _make_batch, token_with_keys  # noqa: F401 - fixture
from tokenkeys.envelope import SoftwareIdentity, seal
from tokenkeys.services.opening_batch import open_one


def _open(tk: TK, uri: str, *args: str | Path, env: dict[str, str | None] | None = None) -> Any:
    return tk("--json", "open", *args, "--token", uri, env=env)


def test_special_outputs_fail_never_skip(tk: TK, token_with_keys: dict[str, Any],  # noqa: F811
                                         tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    _make_batch(bids, token_with_keys["certs"], 4)
    out = tmp_path / "out"
    out.mkdir()
    (out / "bid-00.pdf").mkdir()
    (out / "bid-01.pdf").symlink_to(tmp_path / "elsewhere")
    os.mkfifo(out / "bid-02.pdf")
    run = _open(tk, token_with_keys["uri"], bids, "-o", out)
    assert run.code == 11, run.err
    status = {Path(f["input"]).name: f for f in run.json["files"]}
    for name, kind in (("bid-00", "directory"), ("bid-01", "dangling symbolic link"),
                       ("bid-02", "FIFO")):
        f = status[f"{name}.pdf.p7m"]
        assert f["status"] == "failed" and f["error_type"] == "OutputExists", f
        assert kind in f["error"] and "move it away" in f["error"]
    assert status["bid-03.pdf.p7m"]["status"] == "opened"
    assert not (tmp_path / "elsewhere").exists()


def test_outdir_equal_to_input_dir_resumes(tk: TK, token_with_keys: dict[str, Any],  # noqa: F811
                                           tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    plain = _make_batch(bids, token_with_keys["certs"], 3)
    first = _open(tk, token_with_keys["uri"], bids, "-o", bids)
    assert first.code == 0 and first.json["opened"] == 3, first.out + first.err
    again = _open(tk, token_with_keys["uri"], bids, "-o", bids)
    assert again.code == 0, again.out + again.err
    assert again.json["skipped"] == 3 and again.json["opened"] == again.json["failed"] == 0
    for name, data in plain.items():
        assert (bids / name).read_bytes() == data


def test_two_runs_on_one_output_directory(token_with_keys: dict[str, Any],  # noqa: F811
                                          tmp_path: Path, cli_env: dict[str, str]) -> None:
    bids = tmp_path / "bids"
    plain = _make_batch(bids, token_with_keys["certs"], 40)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tokenkeys", "--json", "open", str(bids), "-o", str(out),
           "--token", token_with_keys["uri"]]
    runs = [subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    results = [r.communicate(timeout=120) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], results
    for name, data in plain.items():
        assert (out / name).read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == sorted(plain)


def test_output_that_appears_while_opening_is_skipped(tmp_path: Path) -> None:
    """The race of two runs, made deterministic: the other run links the output while
    this one is decrypting; this one reports "skipped (opened by another run)"."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.envelope.conftest import _make

    pair = _make("rsa", rsa.generate_private_key(65537, 2048), tmp_path)
    env = tmp_path / "bid.pdf.p7m"
    (tmp_path / "plain").write_bytes(b"bid")
    seal(tmp_path / "plain", env, [pair.cert])
    dst = tmp_path / "out" / "bid.pdf"
    dst.parent.mkdir()

    class OtherRunFirst(SoftwareIdentity):
        def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
            dst.write_bytes(b"bid")  # what the other run's link looks like
            return super().decrypt(ciphertext, padding)

    result = open_one(env, dst, [OtherRunFirst(pair.key, pair.cert, "k")])
    assert result.status == "skipped" and result.reason == "opened by another run"
    assert sorted(p.name for p in dst.parent.iterdir()) == ["bid.pdf"]


def test_uncreatable_outdir_fails_before_the_pin(tk: TK, token_with_keys: dict[str, Any],  # noqa: F811
                                                 tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    _make_batch(bids, token_with_keys["certs"], 1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # A wrong PIN: had it been sent, the exit code would be 4 and a try spent.
    run = tk("open", bids, "-o", blocker / "out", "--token", token_with_keys["uri"],
             env={"TOKENKEYS_PIN": "000000"})
    assert run.code == 2, run.err
    assert run.err.count("\n") == 1 and "cannot create output directory" in run.err
    run = tk("open", bids, "-o", blocker, "--token", token_with_keys["uri"],
             env={"TOKENKEYS_PIN": "000000"})
    assert run.code == 2 and "is a file" in run.err  # click checks this one


def test_special_input_files_are_reported_skipped(tk: TK, token_with_keys: dict[str, Any],  # noqa: F811
                                                  tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    _make_batch(bids, token_with_keys["certs"], 1)
    os.mkfifo(bids / "pipe.p7m")
    (bids / "sub").mkdir()
    run = _open(tk, token_with_keys["uri"], bids, "-o", tmp_path / "out")
    assert run.code == 0, run.err
    skipped = {Path(f["input"]).name: f["reason"] for f in run.json["files"]
               if f["status"] == "skipped"}
    assert skipped == {"pipe.p7m": "not a regular file (FIFO)",
                       "sub": "not a regular file (directory)"}
    assert run.json["opened"] == 1


def test_one_overwrite_policy(tk: TK, token_with_keys: dict[str, Any],  # noqa: F811
                              tmp_path: Path) -> None:
    src = tmp_path / "offre.txt"
    src.write_bytes(b"prix: 100\n")
    sealed = tmp_path / "offre.txt.p7m"
    sealed.write_bytes(b"old")
    rsa_pem = token_with_keys["pems"]["rsa"]
    refused = tk("seal", src, "-o", sealed, "--recipient", rsa_pem)
    assert refused.code == 10 and "--force" in refused.err and sealed.read_bytes() == b"old"
    forced = tk("seal", src, "-o", sealed, "--recipient", rsa_pem, "--force")
    assert forced.code == 0, forced.err
    assert sealed.read_bytes() != b"old"
    cert = tmp_path / "rsa-again.pem"
    cert.write_bytes(b"keep me")
    uri = token_with_keys["uri"]
    refused = tk("key", "export-cert", "rsa", "--token", uri, "-o", cert)
    assert refused.code == 10 and cert.read_bytes() == b"keep me"
    forced = tk("key", "export-cert", "rsa", "--token", uri, "-o", cert, "--force")
    assert forced.code == 0 and cert.read_bytes() == rsa_pem.read_bytes()
    os.mkfifo(tmp_path / "fifo")
    run = tk("key", "export-cert", "rsa", "--token", uri, "-o", tmp_path / "fifo", "--force")
    assert run.code == 2 and "not a regular file" in run.err


def test_single_envelope_failure_is_one_line_with_its_code(
        tk: TK, token_with_keys: dict[str, Any], tmp_path: Path, softhsm: Any) -> None:  # noqa: F811
    bad = tmp_path / "bad.p7m"
    bad.write_bytes(b"\x30\x80" + b"\x00" * 40)
    run = tk("open", bad, "-o", tmp_path / "out", "--token", token_with_keys["uri"])
    assert run.code == 7, run.out + run.err
    assert run.err.startswith("tokenkeys: error: ") and run.err.count("\n") == 1
    assert run.out == ""
    # Not addressed to the token's keys: exit 8, and --json names the envelope's recipients.
    other = softhsm.uri(softhsm.new_token("other7"))
    assert tk("key", "generate", "--token", other, "--name", "o", "--algorithm",
              "ec-p256").code == 0
    bids = tmp_path / "bids"
    _make_batch(bids, token_with_keys["certs"], 1)
    env = bids / "bid-00.pdf.p7m"
    run = tk("open", env, "-o", tmp_path / "out", "--token", other)
    assert run.code == 8 and "addressed to: issuer" in run.err
    run = _open(tk, other, env, "-o", tmp_path / "out")
    assert run.code == 8
    (entry,) = run.json["files"]
    assert entry["error_type"] == "NoMatchingRecipient"
    assert len(entry["recipients"]) == 1 and "rsaes-oaep-sha256" in entry["recipients"][0]


def test_pin_file_first_line_through_the_cli(tk: TK, token_with_keys: dict[str, Any],  # noqa: F811
                                             tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text("123456\nsecond line: a note for the operator\n")
    run = tk("key", "list", "--token", token_with_keys["uri"], "--pin-file", pin,
             env={"TOKENKEYS_PIN": "000000"})  # the file beats the environment
    assert run.code == 0, run.err
    run = tk("key", "list", "--token", token_with_keys["uri"], env={"TOKENKEYS_PIN": ""})
    assert run.code == 4 and "no user PIN" in run.err


def test_seal_cli_usage_checks_and_keyid_note(tk: TK, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.envelope.test_recipient_checks import _cert

    key = rsa.generate_private_key(65537, 2048)
    signing_only = tmp_path / "sign.pem"
    signing_only.write_bytes(_cert(key, usage={"digital_signature": True}).public_bytes(
        serialization.Encoding.PEM))
    bare = tmp_path / "bare.pem"
    bare.write_bytes(_cert(key, usage=None, ski=False).public_bytes(serialization.Encoding.PEM))
    src = tmp_path / "bid"
    src.write_bytes(b"bid")
    run = tk("seal", src, "-o", tmp_path / "a.p7m", "--recipient", signing_only)
    assert run.code == 9 and "keyEncipherment" in run.err and not (tmp_path / "a.p7m").exists()
    run = tk("seal", src, "-o", tmp_path / "a.p7m", "--recipient", signing_only,
             "--allow-any-usage")
    assert run.code == 0, run.err
    run = tk("--json", "seal", src, "-o", tmp_path / "b.p7m", "--recipient", bare, "--keyid")
    assert run.code == 0, run.err
    assert "no subject key identifier: named by issuer and serial" in run.err
    assert run.json["notes"] == [
        "recipient CN=recipient has no subject key identifier: named by issuer and serial"]
