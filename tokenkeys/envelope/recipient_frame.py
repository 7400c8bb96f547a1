"""Frame the RecipientInfos SET from the stream, counting recipients before parsing any.

asn1crypto builds an object per element it reads (about 800 bytes each), so a
hostile header listing millions of tiny recipients must be refused here, while
it is still bytes: at most MAX_RECIPIENTS recipients (every key of a key-agreement
recipient counts), MAX_RECIPIENT_BYTES bytes and ber.MAX_NODES elements in all.
"""

from __future__ import annotations

from tokenkeys.envelope.ber import (
    CONTEXT,
    EOC,
    TAG_SEQUENCE,
    UNIVERSAL,
    BerReader,
    Budget,
    Header,
    encode_header,
)
from tokenkeys.errors import EnvelopeMalformed
from tokenkeys.i18n import _

MAX_RECIPIENTS = 1000
# 1000 RSA-4096 recipients with long issuer names fit in well under this.
MAX_RECIPIENT_BYTES = 4 << 20


def _too_many() -> EnvelopeMalformed:
    # Each recipient may cost a device operation per identity: refuse absurd headers.
    return EnvelopeMalformed(
        _("envelope lists more than {MAX_RECIPIENTS} recipients (limit {MAX_RECIPIENTS})")
        .format(MAX_RECIPIENTS=MAX_RECIPIENTS))


def read_recipient_infos(r: BerReader, h: Header) -> list[bytes]:
    """The encodings of the RecipientInfo elements of the SET whose header `h` was read."""
    budget = Budget(MAX_RECIPIENT_BYTES)
    infos: list[bytes] = []
    count = 0
    while not r.at_end(h):
        child = r.read_header()
        if count >= MAX_RECIPIENTS:
            raise _too_many()
        if child.tag_class == CONTEXT and child.tag == 1 and child.constructed:
            raw, keys = _read_kari(r, child, budget, MAX_RECIPIENTS - count)
        else:
            raw, keys = r.read_tlv_raw(child, budget=budget), 1
        count += keys
        infos.append(raw)
    r.close(h)
    if not infos:
        raise EnvelopeMalformed(_("envelope has no recipients"))
    return infos


def _read_kari(r: BerReader, h: Header, budget: Budget, room: int) -> tuple[bytes, int]:
    """A KeyAgreeRecipientInfo, counting its recipientEncryptedKeys (its second SEQUENCE)."""
    budget.spend(h, h.content_start - h.start + (2 if h.length is None else 0))
    parts = [encode_header(h.tag_class, True, h.tag, h.length)]
    sequences = keys = 0
    while not r.at_end(h):
        child = r.read_header()
        if child.tag_class == UNIVERSAL and child.tag == TAG_SEQUENCE and child.constructed:
            sequences += 1
        if sequences != 2 or child.tag != TAG_SEQUENCE or child.tag_class != UNIVERSAL:
            parts.append(r.read_tlv_raw(child, budget=budget))
            continue
        budget.spend(child, child.content_start - child.start)
        parts.append(encode_header(UNIVERSAL, True, TAG_SEQUENCE, child.length))
        while not r.at_end(child):
            keys += 1
            if keys > room:
                raise _too_many()
            parts.append(r.read_tlv_raw(r.read_header(), budget=budget))
        if child.length is None:
            parts.append(EOC)
        r.close(child)
    if h.length is None:
        parts.append(EOC)
    r.close(h)
    return b"".join(parts), max(keys, 1)
