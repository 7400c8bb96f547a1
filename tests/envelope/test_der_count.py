"""The BER reader's fast path (ber.BerReader._copy_buffered, der_count.count_der_nodes)
reads what the element-by-element walk reads, spends the same budget, and leaves
everything else (indefinite or non-minimal lengths, high tags, limits) to the walk."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from asn1crypto import cms

from tokenkeys.envelope import seal
from tokenkeys.envelope.ber import MAX_DEPTH, BerReader, Budget, tlv
from tokenkeys.envelope.der_count import count_der_nodes
from tokenkeys.envelope.formats import FileSource
from tokenkeys.errors import EnvelopeMalformed

from .conftest import KeyPair


def _nodes(encoded: bytes) -> int:
    """Elements in a DER encoding, counted by asn1crypto's parser."""
    from asn1crypto import parser

    count, todo = 0, [encoded]
    while todo:
        data = todo.pop()
        while data:
            _cls, constructed, _tag, header, contents, trailer = parser.parse(data)
            count += 1
            if constructed:
                todo.append(contents)
            data = data[len(header) + len(contents) + len(trailer):]
    return count


@pytest.fixture(scope="module")
def recipient_infos(keys: dict[str, KeyPair], tmp_path_factory: pytest.TempPathFactory
                    ) -> list[bytes]:
    """The RecipientInfos of a real envelope to an RSA and an EC key."""
    path = tmp_path_factory.mktemp("der") / "e.p7m"
    seal(io.BytesIO(b"bid"), path, [keys["rsa"].cert, keys["p256"].cert])
    content = cms.ContentInfo.load(path.read_bytes())["content"]
    return [ri.dump() for ri in content["recipient_infos"]]


def _read(data: bytes, monkeypatch: pytest.MonkeyPatch | None = None,
          budget: Budget | None = None) -> tuple[bytes, Budget]:
    if monkeypatch is not None:  # the walk only, as before the fast path
        monkeypatch.setattr(BerReader, "_copy_buffered", lambda *_args: False)
    reader = BerReader(FileSource(data, io.BytesIO()), 64 * 1024)
    budget = budget or Budget(1 << 20)
    return reader.read_tlv_raw(reader.read_header(), budget=budget), budget


def test_counts_what_asn1crypto_parses(recipient_infos: list[bytes]) -> None:
    for raw in recipient_infos:
        assert count_der_nodes(raw, 0, len(raw), MAX_DEPTH, 10_000) == _nodes(raw)


def test_fast_path_reads_and_spends_as_the_walk(recipient_infos: list[bytes],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fast = [_read(raw) for raw in recipient_infos]
    for raw, (out, budget) in zip(recipient_infos, fast, strict=True):
        assert out == raw
        slow_out, slow_budget = _read(raw, monkeypatch)
        assert (slow_out, slow_budget.nodes_left, slow_budget.bytes_left) == (
            out, budget.nodes_left, budget.bytes_left)


def _irregular() -> Iterator[tuple[str, bytes]]:
    yield "indefinite", b"\x30\x07\x30\x80\x02\x01\x01\x00\x00"
    yield "non-minimal length", b"\x30\x05\x04\x81\x02\xaa\xbb"
    yield "high tag number", b"\x30\x04\x1f\x81\x01\x00"
    yield "overrun", b"\x30\x03\x02\x05\x01"
    yield "truncated header", b"\x30\x01\x02"


@pytest.mark.parametrize("name", [n for n, _ in _irregular()])
def test_irregular_encodings_go_to_the_walk(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = dict(_irregular())[name]
    assert count_der_nodes(data, 2, len(data), MAX_DEPTH, 100) is None
    try:
        fast = _read(data)[0]
    except EnvelopeMalformed as exc:
        with pytest.raises(EnvelopeMalformed, match=re.escape(str(exc))):
            _read(data, monkeypatch)
    else:
        assert fast == _read(data, monkeypatch)[0]


def test_limits_give_the_walks_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Too many elements, or too deep: counting stops at the limit and the walk says
    which element broke it, as before."""
    many = tlv(0x30, b"\x05\x00" * 100)
    assert count_der_nodes(many, 2, len(many), MAX_DEPTH, 50) is None
    deep = b"\x30\x00"
    for _ in range(MAX_DEPTH + 2):
        deep = tlv(0x30, deep)
    assert count_der_nodes(deep, 2, len(deep), MAX_DEPTH, 10_000) is None
    for data, nodes in ((many, 50), (deep, 8192)):
        with pytest.raises(EnvelopeMalformed) as fast:
            _read(data, budget=Budget(1 << 20, nodes))
        with pytest.raises(EnvelopeMalformed) as slow:
            _read(data, monkeypatch, budget=Budget(1 << 20, nodes))
        assert str(fast.value) == str(slow.value)


def test_empty_elements_spend_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """An element with no children still costs a node: the budget runs out as before."""
    data = b"\x30\x80" + b"\x31\x00" * 100 + b"\x00\x00"
    with pytest.raises(EnvelopeMalformed, match="too many elements") as fast:
        _read(data, budget=Budget(1 << 20, 50))
    with pytest.raises(EnvelopeMalformed) as slow:
        _read(data, monkeypatch, budget=Budget(1 << 20, 50))
    assert str(fast.value) == str(slow.value)


def test_counting_stops_at_the_node_limit() -> None:
    """A hostile megabyte of empty elements costs the limit's worth of steps, not more."""
    data = tlv(0x30, b"\x05\x00" * 400_000)
    assert count_der_nodes(data, 5, len(data), MAX_DEPTH, 8192) is None


def test_open_uses_cached_algorithm_parses(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    """Two envelopes to the same key: the second reuses the first's parsed recipient
    identifier and OAEP parameters, and still opens to its own content."""
    from tokenkeys.envelope import open_envelope, recipients

    for i in range(2):
        seal(io.BytesIO(b"bid %d" % i), tmp_path / f"e{i}", [keys["rsa"].cert])
    before = recipients._rsa_padding_of.cache_info().hits
    for i in range(2):
        open_envelope(tmp_path / f"e{i}", tmp_path / f"o{i}", [keys["rsa"].identity()])
        assert (tmp_path / f"o{i}").read_bytes() == b"bid %d" % i
    assert recipients._rsa_padding_of.cache_info().hits > before
