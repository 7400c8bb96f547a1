"""Verifying a CMS SignedData (RFC 5652) with one signer, its certificate inside.

cryptography builds SignedData but verifies none, and asn1crypto only parses, so
this is hand-written: asn1crypto for the structure, cryptography for the
signature over the signed attributes (re-encoded as the SET OF they are signed as)
and the message digest over the content. Only what `audit checkpoint` writes is
accepted: attached `data` content, signed attributes, SHA-2, RSA PKCS#1 v1.5 or
ECDSA.
"""

from __future__ import annotations

import hashlib
from typing import Any

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tokenkeys.errors import CheckpointInvalid, FileMalformed
from tokenkeys.i18n import _

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def verify_signed_data(data: bytes, source: str) -> tuple[bytes, x509.Certificate]:
    """The content of a one-signer SignedData and its signer's certificate, after the
    signature over the signed attributes and their message digest are checked."""
    bad = FileMalformed(_("{source} is not a tokenkeys audit checkpoint (a CMS SignedData)")
                        .format(source=source))
    try:
        der = _pem_or_der(data)
        info = cms.ContentInfo.load(der)
        if info["content_type"].native != "signed_data":
            raise bad
        signed = info["content"]
        encap = signed["encap_content_info"]
        content = encap["content"].native if encap["content_type"].native == "data" else None
        signers = signed["signer_infos"]
        if not isinstance(content, bytes) or len(signers) != 1:
            raise bad
        si = signers[0]
        attrs = {a["type"].native: a["values"] for a in si["signed_attrs"]}
        digest_name = si["digest_algorithm"]["algorithm"].native
        algorithm = _HASHES[digest_name]() if digest_name in _HASHES else None
        cert = _signer_certificate(signed, si["sid"])
        signed_bytes = si["signed_attrs"].untag().dump()  # signed as a SET OF (RFC 5652 5.4)
        signature = si["signature"].native
        kind = si["signature_algorithm"].signature_algo
        content_type = attrs.get("content_type")
        message_digest = attrs.get("message_digest")
    except (ValueError, TypeError, KeyError):
        raise bad from None
    if (algorithm is None or cert is None or content_type is None or message_digest is None
            or content_type[0].native != "data"):
        raise bad
    invalid = CheckpointInvalid(_("checkpoint {source}: its signature does not verify (the "
                                  "file was altered, or not signed by the certificate it "
                                  "carries)").format(source=source))
    actual = hashlib.new(algorithm.name, content).digest()
    if message_digest[0].native != actual:
        raise invalid
    public = cert.public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey) and kind == "rsassa_pkcs1v15":
            public.verify(signature, signed_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(public, ec.EllipticCurvePublicKey) and kind == "ecdsa":
            public.verify(signature, signed_bytes, ec.ECDSA(algorithm))
        else:
            raise invalid
    except InvalidSignature:
        raise invalid from None
    return content, cert


def _pem_or_der(data: bytes) -> bytes:
    text = data.strip()
    if not text.startswith(b"-----BEGIN"):
        return data
    from asn1crypto import pem

    _kind, _headers, der = pem.unarmor(text)
    return bytes(der)


def _signer_certificate(signed: Any, sid: Any) -> x509.Certificate | None:
    for choice in signed["certificates"] or ():
        if choice.name != "certificate":
            continue
        cert = choice.chosen
        if sid.name == "issuer_and_serial_number":
            ias = sid.chosen
            match = (cert.issuer == ias["issuer"]
                     and cert.serial_number == ias["serial_number"].native)
        else:
            match = cert.key_identifier == sid.chosen.native
        if match:
            return x509.load_der_x509_certificate(cert.dump())
    return None
