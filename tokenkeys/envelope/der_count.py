"""Counting the elements of a DER encoding already in memory (ber.BerReader's fast path)."""

from __future__ import annotations


def count_der_nodes(buf: bytes | bytearray, pos: int, end: int, max_depth: int,
                    max_nodes: int) -> int | None:
    """How many elements buf[pos:end] holds, if it is a sequence of well-nested DER
    elements (definite, minimal lengths; low tag numbers; at most max_depth levels)
    and at most max_nodes of them; None otherwise, having stopped there.
    Hand-written: no library counts elements without building them."""
    count = 0
    ends = [end]
    while True:
        while ends and pos == ends[-1]:
            ends.pop()
        if not ends:
            return count
        limit = ends[-1]
        if len(ends) > max_depth or pos + 2 > limit or buf[pos] & 0x1F == 0x1F:
            return None
        first, lb = buf[pos], buf[pos + 1]
        pos += 2
        if lb & 0x80:
            n = lb & 0x7F
            if not 1 <= n <= 4 or pos + n > limit or buf[pos] == 0:
                return None
            length = int.from_bytes(buf[pos:pos + n], "big")
            if length < 0x80:
                return None
            pos += n
        else:
            length = lb
        if pos + length > limit:
            return None
        count += 1
        if count > max_nodes:
            return None
        if first & 0x20:
            ends.append(pos + length)
        else:
            pos += length
