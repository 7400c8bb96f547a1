"""Hostile envelope shapes: refused (or opened) in bounded memory.

Millions of tiny recipients or empty BER chunks once cost gigabytes and minutes
before being refused. The target is any envelope of N bytes in at most 64 MB (here),
at no worse than ten times the time of a normal envelope of the same size
(tests/benchmarks/bench_hostile.py measures that side by side: a ratio is no
assertion for a loaded CI machine). The shapes here are about 4 MB each (the
full-size ones, 16 MB, run with TOKENKEYS_STRESS=full).
"""

from __future__ import annotations

import io
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from tokenkeys.envelope import SealOptions, describe_recipients, open_envelope, seal
from tokenkeys.envelope.ber import (
    CONTEXT,
    TAG_SEQUENCE,
    UNIVERSAL,
    BerReader,
    encode_length,
    encode_oid,
    tlv,
)
from tokenkeys.envelope.formats import FileSource
from tokenkeys.errors import TokenKeysError

from .conftest import KeyPair

SIZE = (16 if os.environ.get("TOKENKEYS_STRESS") == "full" else 4) << 20
MAX_PEAK = 64 << 20


def _set(content: bytes, tag: int = 0x31) -> bytes:
    return bytes([tag]) + encode_length(len(content)) + content


def _tiny_ktri(i: int) -> bytes:
    """A well-formed KeyTransRecipientInfo, about 25 bytes (ski rid, rsaEncryption)."""
    return tlv(0x30, tlv(0x02, b"\x02") + tlv(0x80, i.to_bytes(3, "big"))
               + tlv(0x30, encode_oid("1.2.840.113549.1.1.1")) + tlv(0x04, b"\x01"))


class Parts:
    """Offsets of a sealed envelope's pieces, found with the real reader."""

    def __init__(self, data: bytes) -> None:
        r = BerReader(FileSource(data, io.BytesIO()))
        r.read_header()  # ContentInfo
        r.read_oid_raw()
        r.read_header()  # [0]
        r.read_header()  # body
        r.read_content(r.read_header())  # version
        self.ris_start = r.offset
        h = r.read_header()
        r.read_tlv_raw(h, limit=1 << 20)
        self.ris_end = r.offset
        eci = r.read_header()
        assert eci.tag == TAG_SEQUENCE and eci.tag_class == UNIVERSAL
        r.read_oid_raw()
        r.read_tlv_raw(r.read_header())
        content = r.read_header()
        assert content.tag_class == CONTEXT
        self.content_start = r.offset


def many_recipients(data: bytes, size: int) -> bytes:
    p = Parts(data)
    one = _tiny_ktri(0)
    return data[: p.ris_start] + _set(one * (size // len(one))) + data[p.ris_end :]


def many_recipients_indefinite(data: bytes, size: int) -> bytes:
    p = Parts(data)
    one = _tiny_ktri(0)
    body = b"\x31\x80" + one * (size // len(one)) + b"\x00\x00"
    return data[: p.ris_start] + body + data[p.ris_end :]


def many_agreement_keys(data: bytes, size: int) -> bytes:
    """One KeyAgreeRecipientInfo whose recipientEncryptedKeys lists ~size/10 keys."""
    p = Parts(data)
    rek = tlv(0x30, tlv(0xA0, tlv(0x04, b"\x01")) + tlv(0x04, b"\x01"))
    originator = tlv(0xA0, tlv(0xA1, tlv(0x30, tlv(0x06, b"\x2a\x86\x48\xce\x3d\x02\x01"))
                               + tlv(0x03, b"\x00\x04")))
    kari = (tlv(0x02, b"\x03") + originator
            + tlv(0x30, encode_oid("1.3.132.1.11.1") + tlv(0x30, encode_oid(
                "2.16.840.1.101.3.4.1.45")))
            + b"\x30\x80" + rek * (size // len(rek)) + b"\x00\x00")
    return data[: p.ris_start] + _set(b"\xa1\x80" + kari + b"\x00\x00") + data[p.ris_end :]


def empty_chunks(data: bytes, size: int) -> bytes:
    p = Parts(data)
    return data[: p.content_start] + b"\x04\x00" * (size // 2) + data[p.content_start :]


def empty_originator_elements(data: bytes, size: int) -> bytes:
    p = Parts(data)
    junk = b"\xa0\x80" + b"\x30\x80\x00\x00" * (size // 4) + b"\x00\x00"
    return data[: p.ris_start] + junk + data[p.ris_start :]


def deep_issuer(data: bytes, size: int) -> bytes:
    """One recipient whose issuer name has hundreds of thousands of empty RDNs."""
    p = Parts(data)
    name = b"\x30\x80" + b"\x31\x00" * (size // 2) + b"\x00\x00"
    ias = b"\x30\x80" + name + tlv(0x02, b"\x01") + b"\x00\x00"
    ktri = (b"\x30\x80" + tlv(0x02, b"\x00") + ias
            + tlv(0x30, encode_oid("1.2.840.113549.1.1.1")) + tlv(0x04, b"\x01") + b"\x00\x00")
    return data[: p.ris_start] + b"\x31\x80" + ktri + b"\x00\x00" + data[p.ris_end :]


SHAPES: dict[str, Callable[[bytes, int], bytes]] = {
    "tiny recipients": many_recipients,
    "tiny recipients, indefinite SET": many_recipients_indefinite,
    "tiny key-agreement keys": many_agreement_keys,
    "empty content chunks": empty_chunks,
    "empty originatorInfo elements": empty_originator_elements,
    "issuer with empty RDNs": deep_issuer,
}


@pytest.fixture(scope="module")
def small_envelope(keys: dict[str, KeyPair], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small normal envelope, the base the hostile shapes are built from."""
    small = tmp_path_factory.mktemp("small") / "e"
    seal(io.BytesIO(b"bid"), small, [keys["rsa"].cert])
    return small.read_bytes()


def _measure(fn: Callable[[], object]) -> tuple[int, BaseException | None]:
    """Peak traced memory of fn, and its error. Time is measured against a normal
    envelope's by tests/benchmarks/bench_hostile.py, where a loaded machine cannot
    make a ratio flaky; here the suite's timeout catches a shape that would hang."""
    error: BaseException | None = None
    tracemalloc.start()
    try:
        fn()
    except TokenKeysError as exc:
        error = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, error


@pytest.mark.parametrize("shape", SHAPES)
def test_hostile_shape_is_bounded(keys: dict[str, KeyPair], tmp_path: Path,
                                  small_envelope: bytes, shape: str) -> None:
    data = SHAPES[shape](small_envelope, SIZE)
    assert len(data) >= SIZE // 2
    env = tmp_path / "hostile.p7m"
    env.write_bytes(data)
    del data
    counter = iter(range(10))

    def run() -> object:
        return open_envelope(env, tmp_path / f"out{next(counter)}", [keys["rsa"].identity()])

    peak, error = _measure(run)
    assert error is not None, "a hostile shape was opened"
    assert "\n" not in str(error)
    assert peak < MAX_PEAK, f"{shape}: {peak >> 20} MB traced"
    peak, _ = _measure(lambda: describe_recipients(env))
    assert peak < MAX_PEAK
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.p7m"]


def test_legitimate_small_chunks_still_open(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    """Bouncy Castle writes 1000-byte chunks and openssl 4 KiB ones: those must keep opening."""
    from tokenkeys.envelope.ber import FREE_CHUNKS

    small = tmp_path / "e"
    seal(io.BytesIO(b"x"), small, [keys["rsa"].cert], SealOptions(authenticated=False))
    data = small.read_bytes()
    p = Parts(data)
    # Re-chunk a CBC envelope's content would need the key; instead add empty chunks
    # up to the free allowance, which must still open.
    ok = data[: p.content_start] + b"\x04\x00" * (FREE_CHUNKS - 1) + data[p.content_start :]
    small.write_bytes(ok)
    open_envelope(small, tmp_path / "out", [keys["rsa"].identity()])
    assert (tmp_path / "out").read_bytes() == b"x"


def test_hundred_recipients_still_open(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    """The bounds leave room for real headers: 100 mixed RSA and EC recipients."""
    certs = [keys[n].cert for n in ("rsa", "p256", "rsa2", "p384")] * 25
    seal(io.BytesIO(b"bid"), tmp_path / "e", certs)
    assert len(describe_recipients(tmp_path / "e")) == 100
    open_envelope(tmp_path / "e", tmp_path / "out", [keys["p384"].identity()])
    assert (tmp_path / "out").read_bytes() == b"bid"
