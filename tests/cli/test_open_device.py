"""A batch in one session with the device's calls in a process of their own
(services/opening_device.py): what it opens, how it fails, and that it never outlives
the command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import TK
from tests.cli.test_open_batch import _damage, _descendants, _make_batch
from tests.cli.test_open_batch import token_with_keys as token_with_keys
from tokenkeys import errors
from tokenkeys.drivers.oaep import DecryptFailed
from tokenkeys.services.crossing import described, rebuilt
from tokenkeys.services.opening_device import MIN_ENVELOPES

LOG_LINE = "one job: the device's calls go to a process of their own"


def test_batch_opens_through_the_device_process(tk: TK, token_with_keys: dict[str, Any],
                                                tmp_path: Path) -> None:
    """RSA (OAEP) and EC (ECDH) envelopes, GCM and CBC, two of them damaged: the
    others open, the damaged ones fail alone as damaged, as in one process."""
    bids = tmp_path / "bids"
    plain = _make_batch(bids, token_with_keys["certs"], MIN_ENVELOPES + 4)
    damaged = {"bid-02.pdf", "bid-04.pdf"}  # GCM, to an EC key and to an RSA key
    for name in damaged:
        _damage(bids / f"{name}.p7m")
    out = tmp_path / "out"
    run = tk("--debug", "--json", "open", bids, "-o", out, "--token", token_with_keys["uri"])
    assert run.code == 11, run.err
    assert LOG_LINE in run.err
    failed = {Path(f["output"]).name: f["error_type"] for f in run.json["files"]
              if f["status"] == "failed"}
    assert failed == {name: "EnvelopeIntegrity" for name in damaged}
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        name: data for name, data in plain.items() if name not in damaged}


def test_small_batch_stays_in_one_process(tk: TK, token_with_keys: dict[str, Any],
                                          tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    _make_batch(bids, token_with_keys["certs"], MIN_ENVELOPES - 1)
    run = tk("--debug", "open", bids, "-o", tmp_path / "out", "--token",
             token_with_keys["uri"])
    assert run.code == 0, run.err
    assert LOG_LINE not in run.err


def _start(bids: Path, out: Path, uri: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tokenkeys", "open", str(bids), "-o", str(out), "--token", uri],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)


def _gone(group: int, timeout: float = 5.0) -> bool:
    """Has every process of the group (the CLI's session) left?"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_device_process_killed_stops_the_batch(token_with_keys: dict[str, Any],
                                               tmp_path: Path, cli_env: dict[str, str]) -> None:
    """The device's process dies mid-batch: a device error (exit 3), never a damaged
    bid; every output written is whole, and a rerun opens the rest."""
    bids = tmp_path / "bids"
    plain = _make_batch(bids, token_with_keys["certs"], 300)
    out = tmp_path / "out"
    proc = _start(bids, out, token_with_keys["uri"], cli_env)
    while proc.poll() is None and len(list(out.glob("*"))) < 5:
        time.sleep(0.005)
    # The device's process has the module loaded; the audit's, beside it, has not.
    children = [pid for pid in _descendants(proc.pid) if pid != proc.pid
                and "softhsm" in Path(f"/proc/{pid}/maps").read_text()]
    assert len(children) == 1, children
    os.kill(children[0], signal.SIGKILL)
    _stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == errors.DeviceError.exit_code, err
    assert "the device process stopped during the batch" in err
    assert "damaged" not in err
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert 5 <= len(written) < len(plain)
    assert all(plain[name] == data for name, data in written.items())
    rerun = _start(bids, out, token_with_keys["uri"], cli_env)
    assert rerun.wait(timeout=120) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == plain


def test_wrong_pin_leaves_no_device_process(token_with_keys: dict[str, Any], tmp_path: Path,
                                            cli_env: dict[str, str]) -> None:
    bids = tmp_path / "bids"
    _make_batch(bids, token_with_keys["certs"], MIN_ENVELOPES)
    proc = _start(bids, tmp_path / "out", token_with_keys["uri"],
                  {**cli_env, "TOKENKEYS_PIN": "654321"})
    _stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == errors.PinError.exit_code and "PIN incorrect" in err
    assert _gone(proc.pid)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("exc, kind", [
    (DecryptFailed(), errors.EnvelopeIntegrity),  # the padding outcome, by its parent class
    (errors.DeviceRemoved("pulled out"), errors.DeviceRemoved),
    (ValueError("bad padding"), ValueError),  # a software key's padding outcome
    (RuntimeError("odd"), errors.DeviceError),
])
def test_errors_cross_the_process_boundary(exc: Exception, kind: type[Exception]) -> None:
    again = rebuilt(*described(exc))
    assert type(again) is kind and str(again) == str(exc)
    assert vars(again) == {k: v for k, v in vars(exc).items()}


def test_command_leaves_the_registry_to_its_audit_process(
        token_with_keys: dict[str, Any], tmp_path: Path, cli_env: dict[str, str]) -> None:
    """`open` forks its registry side first thing: the command itself never imports
    SQLAlchemy, and both audit rows are written, the start row before any output."""
    bids = tmp_path / "bids"
    plain = _make_batch(bids, token_with_keys["certs"], 3)
    out = tmp_path / "out"
    code = ("import sys\n"
            "from tokenkeys.cli.main import main\n"
            "try:\n"
            "    main(sys.argv[1:])\n"
            "except SystemExit as done:\n"
            "    assert not done.code, done.code\n"
            "print('sqlalchemy' in sys.modules, 'tokenkeys.registry' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code, "open", str(bids), "-o", str(out),
                           "--token", token_with_keys["uri"]], env=cli_env,
                          capture_output=True, text=True, check=True)
    assert done.stdout.split()[-2:] == ["False", "False"], done.stdout + done.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == plain
    from tokenkeys.registry import Registry

    with Registry.open(cli_env["TOKENKEYS_REGISTRY"]) as registry:
        rows = [r for r in registry.audit_rows() if r.event in ("open-start", "open")]
    assert [r.event for r in rows] == ["open-start", "open"]
    assert json.loads(rows[0].details)["batch"] == json.loads(rows[1].details)["batch"]
