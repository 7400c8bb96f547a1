"""Hostile and odd PKCS#12 files, built with cryptography, asn1crypto and the openssl CLI:
shared by tests/cli/test_hostile_p12.py and tests/benchmarks/bench_hostile_p12.py."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from asn1crypto import cms as a1cms
from asn1crypto import pkcs12 as a1p12
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from tests.cli.share_support import PASSPHRASE

HUGE = 2_000_000_000  # the count of the probe: minutes of derivation


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def certificate(subject: str, key: Any, issuer: str | None = None, signer: Any = None, *,
                ca: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    builder = (x509.CertificateBuilder().subject_name(_name(subject))
               .issuer_name(_name(issuer or subject)).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + datetime.timedelta(days=30)))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    return builder.sign(signer or key, hashes.SHA256())


def p12(key: Any, cert: x509.Certificate, extra: list[x509.Certificate] | None = None, *,
        iterations: int = 2048) -> bytes:
    """A modern file (PBES2 AES-256, HMAC-SHA256) at a cheap count."""
    enc = (serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(iterations)
           .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
           .hmac_hash(hashes.SHA256()).build(PASSPHRASE.encode()))
    return pkcs12.serialize_key_and_certificates(b"k", key, cert, extra or None, enc)


def _alg_count(alg: Any, count: int) -> None:
    if alg["algorithm"].native == "pbes2":
        alg["parameters"]["key_derivation_func"]["parameters"]["iteration_count"] = count
    else:
        alg["parameters"]["iterations"] = count


def rewrite(der: bytes, *, mac: int | None = None, key: int | None = None,
            certs: int | None = None, drop_mac: bool = False, keys: int = 1) -> bytes:
    """`der` with counts replaced (nothing re-encrypted: the file is refused before any
    derivation, or must be), the MAC dropped, or its key bag repeated `keys` times."""
    pfx = a1p12.Pfx.load(der)
    infos = []
    for info in a1p12.AuthenticatedSafe.load(pfx["auth_safe"]["content"].native):
        if info["content_type"].native == "encrypted_data" and certs is not None:
            _alg_count(info["content"]["encrypted_content_info"]
                       ["content_encryption_algorithm"], certs)
        elif info["content_type"].native == "data":
            bags = list(a1p12.SafeContents.load(info["content"].native))
            for bag in bags:
                if bag["bag_id"].native == "pkcs8_shrouded_key_bag" and key is not None:
                    _alg_count(bag["bag_value"]["encryption_algorithm"], key)
            bags = [b for b in bags for _ in range(keys if "key" in b["bag_id"].native else 1)]
            info = a1cms.ContentInfo({"content_type": "data", "content": a1p12.SafeContents(
                [a1p12.SafeBag.load(b.dump(force=True)) for b in bags]).dump()})
        infos.append(a1cms.ContentInfo.load(info.dump(force=True)))
    mac_data = None if drop_mac else pfx["mac_data"]
    if mac is not None and mac_data is not None:
        mac_data["iterations"] = mac
    auth = a1cms.ContentInfo({"content_type": "data",
                              "content": a1p12.AuthenticatedSafe(infos).dump()})
    fields: dict[str, Any] = {"version": "v3", "auth_safe": auth}
    if mac_data is not None:
        fields["mac_data"] = a1p12.MacData.load(mac_data.dump(force=True))
    out: bytes = a1p12.Pfx(fields).dump(force=True)
    return out


def ber(der: bytes) -> bytes:
    """The same file as NSS and Bouncy Castle write it: every constructed value with an
    indefinite length, and the outer content octets in chunks (a valid BER encoding)."""

    def header(data: bytes, i: int) -> tuple[int, int, int]:
        tag, first = data[i], data[i + 1]
        if first < 0x80:
            return tag, first, i + 2
        n = first & 0x7F
        return tag, int.from_bytes(data[i + 2:i + 2 + n], "big"), i + 2 + n

    def convert(data: bytes, chunk_octets: bool) -> bytes:
        out, i = b"", 0
        while i < len(data):
            tag, length, start = header(data, i)
            body = data[start:start + length]
            if tag & 0x20:  # constructed
                out += bytes([tag, 0x80]) + convert(body, chunk_octets) + b"\0\0"
            elif tag == 0x04 and chunk_octets and len(body) > 64:
                parts = [body[j:j + 64] for j in range(0, len(body), 64)]
                out += b"\x24\x80" + b"".join(
                    b"\x04" + _length(len(p)) + p for p in parts) + b"\0\0"
            else:
                out += data[i:start + length]
            i = start + length
        return out

    return convert(der, True)


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def chain_with_strangers(count: int) -> tuple[bytes, x509.Certificate]:
    """A key issued by a CA, the CA, and `count` unrelated certificates; the leaf."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("LOCAL TRUST", ca_key, ca=True)
    key = rsa.generate_private_key(65537, 2048)
    leaf = certificate("Agent", key, "LOCAL TRUST", ca_key)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    strangers = [certificate(f"Stranger {i}", stranger_key, ca=True) for i in range(count)]
    return p12(key, leaf, [*strangers[: count // 2], ca, *strangers[count // 2:]]), leaf


def shapes(key: Any, cert: x509.Certificate) -> dict[str, tuple[bytes, int, str]]:
    """Hostile files: (bytes, expected exit code, expected text of the refusal)."""
    good = p12(key, cert)
    over = "refuses more than 10000000"
    build: dict[str, Callable[[], bytes]] = {
        "MAC count 2e9": lambda: rewrite(good, mac=HUGE),
        "key-bag count 2e9": lambda: rewrite(good, key=HUGE),
        "certificate-bag count 2e9": lambda: rewrite(good, certs=HUGE),
        "key-bag count 2e9, no MAC": lambda: rewrite(good, key=HUGE, drop_mac=True),
        "MAC count 0": lambda: rewrite(good, mac=0),
        "key-bag count -1": lambda: rewrite(good, key=-1),
        "two private keys": lambda: rewrite(good, keys=2),
    }
    expected = {
        "MAC count 0": (2, "iteration count is 0"), "key-bag count -1": (2, "count is -1"),
        "two private keys": (2, "holds 2 private keys"),
    }
    return {name: (make(), *expected.get(name, (2, over))) for name, make in build.items()}
