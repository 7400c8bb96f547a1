"""RC2 (RFC 2268), decryption only, for pkcs12_read.

Hand-written because no maintained library offers it with a 40-bit key:
cryptography's RC2 (hazmat.decrepit) takes 128-bit keys only, and RC2-40 is the
cipher of the certificates in OpenSSL's -legacy files and in older Windows and
Java ones. Checked against RFC 2268's test vectors (tests/services).
"""

from __future__ import annotations

# RC2 (RFC 2268), decryption only: the cipher of the certificates of OpenSSL's -legacy
# files and of older Windows and Java ones, with a 40-bit key cryptography lacks.
PITABLE = bytes.fromhex(
    "d978f9c419ddb5ed28e9fd794aa0d89d"
    "c67e37832b76538e624c6488448bfba2"
    "179a59f587b34f1361456d8d09817d32"
    "bd8f40eb86b77b0bf09521225c6b4e82"
    "54d66593ce60b21c7356c014a78cf1dc"
    "1275ca1f3bbee4d1423dd430a33cb626"
    "6fbf0eda4669075727f21d9bbc944303"
    "f811c7f690ef3ee706c3d52fc8661ed7"
    "08e8eade8052eef784aa72ac354d6a2a"
    "961ad2715a1549744b9fd05e0418a4ec"
    "c2e0416e0f51cbcc2491af50a1f47039"
    "997c3a8523b8b47afc02365b25559731"
    "2d5dfa98e38a92ae05df2910676cbac9"
    "d300e6cfe19ea82c6316013f58e289a9"
    "0d38341bab33ffb0bb480c5fb9b1cd2e"
    "c5f3db47e5a59c770aa62068fe7fc1ad"
)
MAX_RC2 = 256 << 10  # a chain is a few KiB; this Python loop decrypts about 1 MB/s


def rc2_cbc_decrypt(key: bytes, bits: int, iv: bytes, data: bytes) -> bytes:
    """RC2-CBC with `bits` effective key bits (RFC 2268 section 6), no unpadding."""
    k = _rc2_schedule(key, bits)
    out = bytearray()
    prev = iv
    for off in range(0, len(data), 8):
        block = data[off:off + 8]
        out += bytes(a ^ b for a, b in zip(_rc2_block(k, block), prev, strict=True))
        prev = block
    return bytes(out)


def _rc2_schedule(key: bytes, bits: int) -> list[int]:
    t, t8 = len(key), (bits + 7) // 8
    tm = 0xFF >> (8 * t8 - bits)
    buf = list(key) + [0] * (128 - t)
    for i in range(t, 128):
        buf[i] = PITABLE[(buf[i - 1] + buf[i - t]) & 0xFF]
    buf[128 - t8] = PITABLE[buf[128 - t8] & tm]
    for i in range(127 - t8, -1, -1):
        buf[i] = PITABLE[buf[i + 1] ^ buf[i + t8]]
    return [buf[2 * i] | buf[2 * i + 1] << 8 for i in range(64)]


def _rc2_block(k: list[int], block: bytes) -> bytes:
    """One block decrypted: 5 r-mixing rounds, r-mashing, 6, r-mashing, 5 (section 4)."""
    r = [block[2 * i] | block[2 * i + 1] << 8 for i in range(4)]
    j = 63
    for group, rounds in enumerate((5, 6, 5)):
        if group:
            for i in (3, 2, 1, 0):
                r[i] = (r[i] - k[r[i - 1] & 63]) & 0xFFFF
        for _ in range(rounds):
            for i, s in ((3, 5), (2, 3), (1, 2), (0, 1)):
                x = ((r[i] >> s) | (r[i] << (16 - s))) & 0xFFFF
                r[i] = (x - k[j] - (r[i - 1] & r[i - 2]) - (~r[i - 1] & r[i - 3])) & 0xFFFF
                j -= 1
    return b"".join(x.to_bytes(2, "little") for x in r)
