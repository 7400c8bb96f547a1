"""Constant memory: a 64 MB envelope opens and seals in well under 64 MB of RSS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import KeyPair, needs_openssl, openssl

SIZE = 64 << 20
LIMIT_KB = 64 * 1024

_CHILD = r"""
import resource, sys
from cryptography.hazmat.primitives import serialization
from cryptography import x509
from tokenkeys.envelope import open_envelope, seal
mode, a, b, key, cert = sys.argv[1:]
if mode == "open":
    k = serialization.load_pem_private_key(open(key, "rb").read(), None)
    n = open_envelope(a, b, [k]).bytes_out
else:
    c = x509.load_pem_x509_certificate(open(cert, "rb").read())
    n = seal(a, b, [c])
# VmHWM belongs to this process image; ru_maxrss would also count the parent's
# RSS inherited across fork+exec (Linux keeps the maximum over exec).
try:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
except OSError:
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, hwm)
"""


def _run(*args: str | Path) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)], check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1])


@pytest.fixture(scope="module")
def big_plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("big") / "plain.bin"
    with p.open("wb") as f:
        block = bytes(range(256)) * 4096  # 1 MiB, cheap to make
        for i in range(SIZE >> 20):
            f.write(block[i:] + block[:i])
    return p


@needs_openssl
def test_open_64mb_stream_constant_memory(keys: dict[str, KeyPair], big_plain: Path,
                                          tmp_path: Path) -> None:
    env = tmp_path / "big.cms"
    openssl("cms", "-encrypt", "-binary", "-stream", "-aes-256-gcm", "-outform", "DER",
            "-in", big_plain, "-out", env, "-recip", keys["rsa"].cert_pem)
    n, rss_kb = _run("open", env, tmp_path / "out", keys["rsa"].key_pem, "-")
    assert n == SIZE
    assert rss_kb < LIMIT_KB, f"peak RSS {rss_kb} KiB"
    assert (tmp_path / "out").stat().st_size == SIZE


def test_seal_64mb_constant_memory(keys: dict[str, KeyPair], big_plain: Path,
                                   tmp_path: Path) -> None:
    n, rss_kb = _run("seal", big_plain, tmp_path / "big.cms", "-", keys["rsa"].cert_pem)
    assert n == SIZE
    assert rss_kb < LIMIT_KB, f"peak RSS {rss_kb} KiB"
    n, rss_kb = _run("open", tmp_path / "big.cms", tmp_path / "out", keys["rsa"].key_pem, "-")
    assert n == SIZE and rss_kb < LIMIT_KB
    assert (tmp_path / "out").read_bytes() == big_plain.read_bytes()
