"""Every file a user names is checked for its kind and size before it is read: a FIFO
never blocks, /dev/zero and a directory are refused in one line, a file over its kind's
limit is refused without being loaded (files.read_limited)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import TK, Run
from tests.cli.share_support import PASSPHRASE, PIN, soft_store
from tokenkeys.errors import UsageError
from tokenkeys.files import read_limited


@pytest.fixture
def hostile_inputs(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    big = tmp_path / "big.pem"
    with big.open("wb") as f:  # sparse: 50 MB that cost no disk
        f.truncate(50 << 20)
    return {"FIFO": fifo, "character device": Path("/dev/zero"), "big": big}


def test_read_limited_checks_kind_and_size_first(hostile_inputs: dict[str, Path],
                                                 tmp_path: Path) -> None:
    for kind, path in hostile_inputs.items():
        start = time.monotonic()
        with pytest.raises(UsageError) as err:
            read_limited(path, 1 << 20, "certificate")
        assert time.monotonic() - start < 1
        expected = (f"is a {kind}, not a regular file" if kind != "big"
                    else "is larger than 1048576 bytes, the most a certificate may be")
        assert expected in str(err.value)
    with pytest.raises(UsageError, match="is a directory, not a regular file"):
        read_limited(tmp_path, 10, "certificate")
    ok = tmp_path / "ok"
    ok.write_bytes(b"x" * 10)
    assert read_limited(ok, 10, "certificate") == b"x" * 10
    with pytest.raises(UsageError, match="larger than 9 bytes"):
        read_limited(ok, 9, "certificate")


def test_every_command_refuses_hostile_input_files(
        tk: TK, cli_env: dict[str, str], hostile_inputs: dict[str, Path],
        tmp_path: Path) -> None:
    cli_env.update({"TOKENKEYS_PIN": PIN, "TOKENKEYS_PASSPHRASE": PASSPHRASE})
    uri = soft_store(tmp_path / "store", ("K", "ec-p256", True))
    good = tmp_path / "good.p12"
    assert tk("share", "export", "K", "--token", uri, "-o", good).code == 0
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"bid")
    cert = tmp_path / "k.pem"
    assert tk("key", "export-cert", "K", "--token", uri, "-o", cert).code == 0
    commands: dict[str, Callable[[Path], list[str | Path]]] = {
        "share import": lambda p: ["share", "import", p, "--token", uri, "--name", "X"],
        "ca issue": lambda p: ["ca", "issue", p, "--token", uri, "--ca", "CA",
                               "-o", tmp_path / "out.pem", "--cn", "X"],
        "key import-cert": lambda p: ["key", "import-cert", "K", p, "--token", uri],
        "key import-cert --chain": lambda p: ["key", "import-cert", "K", cert, "--chain", p,
                                              "--token", uri],
        "key adopt --cert": lambda p: ["key", "adopt", "--token", uri, "--name", "K",
                                       "--cert", p],
        "seal --recipient": lambda p: ["seal", plain, "-o", tmp_path / "o.p7m",
                                       "--recipient", p],
        "--pin-file": lambda p: ["share", "import", good, "--token", uri, "--name", "Y",
                                 "--pin-file", p],
        "--config": lambda p: ["--config", p, "service", "list"],
    }
    for command, args in commands.items():
        for kind, path in hostile_inputs.items():
            start = time.monotonic()
            done: Run = tk(*args(path))
            assert time.monotonic() - start < 10, (command, kind)
            assert done.code == 2, (command, kind, done.err)
            assert len(done.err.strip().splitlines()) == 1, (command, kind, done.err)
            assert ("not a regular file" if kind != "big" else "is larger than") in done.err, (
                command, kind, done.err)
    fifo = hostile_inputs["FIFO"]
    done = tk("seal", fifo, "-o", tmp_path / "f.p7m", "--recipient", cert)
    assert done.code == 2 and "is a FIFO, not a regular file" in done.err, done.err
    assert not (tmp_path / "o.p7m").exists() and not (tmp_path / "f.p7m").exists()
