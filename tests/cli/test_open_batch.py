"""Issue: an agent opens a batch with one PIN entry, through the real CLI, on SoftHSM2."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.cli.conftest import TK
from tokenkeys.envelope import SealOptions, seal
from tokenkeys.services.opening_device import MIN_ENVELOPES


@pytest.fixture
def token_with_keys(tk: TK, softhsm: Any, token_label: str, tmp_path: Path) -> dict[str, Any]:
    uri = softhsm.uri(token_label)
    certs = {}
    for name, alg in (("rsa", "rsa2048"), ("ec", "ec-p256")):
        made = tk("key", "generate", "--token", uri, "--name", name, "--algorithm", alg)
        assert made.code == 0, made.err
        pem = tmp_path / f"{name}.pem"
        assert tk("key", "export-cert", name, "--token", uri, "-o", pem).code == 0
        certs[name] = x509.load_pem_x509_certificate(pem.read_bytes())
    return {"uri": uri, "certs": certs, "pems": {n: tmp_path / f"{n}.pem" for n in certs}}


def _make_batch(directory: Path, certs: dict[str, x509.Certificate], n: int) -> dict[str, bytes]:
    directory.mkdir()
    plain = {}
    for i in range(n):
        name = f"bid-{i:02d}.pdf"
        data = f"bid {i} ".encode() * (50 + i)
        src = directory.parent / f"{name}.plain"
        src.write_bytes(data)
        recipient = certs["ec"] if i % 3 == 2 else certs["rsa"]
        options = SealOptions(authenticated=i % 2 == 0)
        seal(src, directory / f"{name}.p7m", [recipient], options)
        plain[name] = data
    return plain


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_batch_with_bad_envelope_opens_the_others(tk: TK, token_with_keys: dict[str, Any],
                                                  tmp_path: Path, jobs: str) -> None:
    bids = tmp_path / "bids"
    plain = _make_batch(bids, token_with_keys["certs"], 7)
    _damage(bids / "bid-04.pdf.p7m")
    out = tmp_path / "out"
    run = tk("--json", "open", bids, "-o", out, "--token", token_with_keys["uri"],
             "--jobs", jobs)
    assert run.code == 11, run.err
    report = run.json
    assert report["ok"] is False and report["opened"] == 6 and report["failed"] == 1, run.out
    bad = [f for f in report["files"] if f["status"] == "failed"]
    assert [Path(f["input"]).name for f in bad] == ["bid-04.pdf.p7m"]
    assert bad[0]["error_type"] == "EnvelopeIntegrity"
    for name, data in plain.items():
        if name != "bid-04.pdf":
            assert (out / name).read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == sorted(n for n in plain if n != "bid-04.pdf")
    opened = [f for f in report["files"] if f["status"] == "opened"]
    assert all(f["recipient"] and f["bytes"] > 0 for f in opened)

    again = tk("--json", "open", bids, "-o", out, "--token", token_with_keys["uri"])
    assert again.code == 11
    assert again.json["skipped"] == 6 and again.json["failed"] == 1


def test_wrong_pin_writes_nothing(tk: TK, token_with_keys: dict[str, Any],
                                  tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    _make_batch(bids, token_with_keys["certs"], 2)
    out = tmp_path / "out"
    run = tk("open", bids, "-o", out, "--token", token_with_keys["uri"], "--jobs", "2",
             env={"TOKENKEYS_PIN": "654321"})
    assert run.code == 4 and "PIN incorrect" in run.err
    assert not out.exists()


def test_seal_cli_and_open_single_file(tk: TK, token_with_keys: dict[str, Any],
                                       tmp_path: Path) -> None:
    src = tmp_path / "offre.txt"
    src.write_bytes(b"prix: 100\n")
    sealed = tmp_path / "offre.txt.cms"
    run = tk("--json", "seal", src, "-o", sealed,
             "--recipient", token_with_keys["pems"]["rsa"],
             "--recipient", token_with_keys["pems"]["ec"])
    assert run.code == 0, run.err
    assert run.json["bytes"] == src.stat().st_size
    again = tk("seal", src, "-o", sealed, "--recipient", token_with_keys["pems"]["rsa"])
    assert again.code == 10 and "already exists" in again.err
    opened = tk("open", sealed, "-o", tmp_path / "o", "--token", token_with_keys["uri"])
    assert opened.code == 0, opened.err
    assert (tmp_path / "o" / "offre.txt").read_bytes() == src.read_bytes()


def test_seal_refuses_bad_recipients(tk: TK, tmp_path: Path) -> None:
    src = tmp_path / "x"
    src.write_bytes(b"x")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    run = tk("seal", src, "-o", tmp_path / "x.p7m", "--recipient", junk)
    assert run.code == 2 and "not a PEM or DER X.509 certificate" in run.err
    assert not (tmp_path / "x.p7m").exists()


def test_not_addressed_to_us(tk: TK, token_with_keys: dict[str, Any], tmp_path: Path,
                             softhsm: Any) -> None:
    other_label = softhsm.new_token("other")
    other = softhsm.uri(other_label)
    assert tk("key", "generate", "--token", other, "--name", "o", "--algorithm",
              "ec-p256").code == 0
    bids = tmp_path / "bids"
    _make_batch(bids, token_with_keys["certs"], 1)
    run = tk("--json", "open", bids, "-o", tmp_path / "out", "--token", other)
    assert run.code == 11
    assert run.json["files"][0]["error_type"] == "NoMatchingRecipient"


def test_damaged_and_junk_inputs_through_the_cli(tk: TK, token_with_keys: dict[str, Any],
                                                 tmp_path: Path) -> None:
    """Flipped header, ciphertext and tag bytes, truncations, empty and random files:
    each is refused with a one-line reason in the report, and no output appears."""
    src = tmp_path / "bid.txt"
    src.write_bytes(b"montant: 42 EUR\n" * 300)
    good = tmp_path / "good.p7m"
    seal(src, good, [token_with_keys["certs"]["rsa"]], SealOptions())
    data = good.read_bytes()
    bids = tmp_path / "bids"
    bids.mkdir()
    variants = {
        "header": 6, "recipient": 200, "ciphertext": len(data) // 2, "tag": len(data) - 10,
    }
    for name, pos in variants.items():
        damaged = bytearray(data)
        damaged[pos] ^= 0x40
        (bids / f"flip-{name}.p7m").write_bytes(bytes(damaged))
    for cut in (1, 50, len(data) // 3, len(data) - 1):
        (bids / f"cut-{cut}.p7m").write_bytes(data[:cut])
    (bids / "empty.p7m").write_bytes(b"")
    (bids / "random.p7m").write_bytes(bytes(range(256)) * 7)
    out = tmp_path / "out"
    run = tk("--json", "open", bids, "-o", out, "--token", token_with_keys["uri"])
    assert run.code == 11, run.err
    files = run.json["files"]
    assert len(files) == 10 and all(f["status"] == "failed" for f in files)
    for f in files:
        assert f["error_type"] in {"EnvelopeIntegrity", "EnvelopeMalformed",
                                   "NoMatchingRecipient"}, f
        assert "\n" not in f["error"]
    assert list(out.iterdir()) == []
    human = tk("open", bids / "empty.p7m", "-o", out, "--token", token_with_keys["uri"])
    # One envelope named alone: its own error line and exit code (EnvelopeMalformed, 7).
    assert human.code == 7 and "Traceback" not in human.err + human.out
    assert human.err.count("\n") == 1 and "empty file" in human.err


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_pin_never_in_any_worker_argv(token_with_keys: dict[str, Any], tmp_path: Path,
                                      cli_env: dict[str, str], jobs: str) -> None:
    """The PIN reaches the --jobs workers, or the device's process of one job, through
    the multiprocessing pipe only."""
    bids = tmp_path / "bids"
    _make_batch(bids, token_with_keys["certs"], MIN_ENVELOPES)  # one job: its device process
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenkeys", "open", str(bids), "-o", str(tmp_path / "out"),
         "--token", token_with_keys["uri"], "--jobs", jobs],
        env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[int, bytes] = {}
    while proc.poll() is None:
        for pid in _descendants(proc.pid):
            with contextlib.suppress(OSError):
                seen[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
        time.sleep(0.01)
    assert proc.returncode == 0
    # The CLI, its audit process and its two workers or its device process were seen.
    assert len(seen) >= 2 + int(jobs), seen
    assert all(cli_env["TOKENKEYS_PIN"].encode() not in argv for argv in seen.values())


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def test_open_onto_itself_is_refused(tk: TK, token_with_keys: dict[str, Any],
                                     tmp_path: Path) -> None:
    envelope = tmp_path / "bid"  # no suffix: its output name is its own name
    envelope.write_bytes(b"x")
    run = tk("open", envelope, "-o", tmp_path, "--token", token_with_keys["uri"])
    assert run.code == 2 and "opened onto itself" in run.err
    assert envelope.read_bytes() == b"x"


def test_jobs_workers_are_forked_before_any_thread(tk: TK, token_with_keys: dict[str, Any],
                                                  tmp_path: Path) -> None:
    """The CLI starts its --jobs workers by fork (they share its imports), before the
    audit's thread and before any PKCS#11 module is loaded, and they open the batch."""
    bids = tmp_path / "bids"
    plain = _make_batch(bids, token_with_keys["certs"], 4)
    out = tmp_path / "out"
    run = tk("--debug", "open", bids, "-o", out, "--token", token_with_keys["uri"],
             "--jobs", "2")
    assert run.code == 0, run.err
    assert "--jobs 2: the workers are started by fork" in run.err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == plain


def test_start_method_falls_back_to_spawn() -> None:
    """A thread, or a loaded PKCS#11 module, in the parent: the workers are spawned."""
    code = """if True:
        import threading
        from tokenkeys.services import crossing as w
        print(w.start_method())
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        print(w.start_method())
        stop.set()
        t.join()
        from tokenkeys.drivers.p11 import port
        port.LOADED.add("/some/module.so")
        print(w.start_method())
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["fork", "spawn", "spawn"]
