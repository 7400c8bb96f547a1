"""What doctor and `key list` say a device can do comes from the negotiations' own
rules: every envelope kind claimed opens through the decryption negotiation, by the
route claimed; nothing is claimed that the negotiation refuses. No device here (the
devices: tests/devices, tests/cli/test_ca.py)."""

from __future__ import annotations

import functools

import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tokenkeys import keyalg
from tokenkeys.drivers.base import HSM, SMARTCARD, TPM, DeviceFacts
from tokenkeys.drivers.negotiate import (
    DEVICE_OAEP,
    RAW_OAEP,
    SHA1_ONLY,
    MechanismRefused,
    RsaNegotiator,
)
from tokenkeys.drivers.p11.profiles import OPENPGP, TPM2
from tokenkeys.drivers.software import FACTS as KEYSTORE
from tokenkeys.errors import MechanismUnsupported
from tokenkeys.services.device_caps import IN_SOFTWARE, capabilities, opens
from tokenkeys.services.envelope_kinds import envelope_kinds
from tokenkeys.types import KeyType

K = 256
RSA_ALL = frozenset({"RSA_PKCS_OAEP", "RSA_X_509", "RSA_PKCS", "RSA_PKCS_KEY_PAIR_GEN"})
OCK = frozenset({"RSA_PKCS_OAEP", "RSA_X_509", "RSA_PKCS", "SHA1_RSA_PKCS",
                 "RSA_PKCS_KEY_PAIR_GEN", "AES_KEY_WRAP_PAD"})


@functools.cache
def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


class Device:
    """A device whose on-device OAEP takes exactly `works` (hash names, same MGF1)."""

    def __init__(self, works: set[str]) -> None:
        self.works = works
        self.calls: list[str] = []

    def oaep(self, ct: bytes, h: str, mgf: str, label: bytes | None) -> bytes:
        self.calls.append("oaep")
        if h != mgf or h not in self.works:
            raise MechanismRefused()
        algo = keyalg.OAEP_HASHES[h]()
        return _key().decrypt(ct, padding.OAEP(padding.MGF1(algo), algo, None))

    def raw(self, ct: bytes) -> bytes:
        self.calls.append("raw")
        n = _key().private_numbers()
        return pow(int.from_bytes(ct, "big"), n.d, n.public_numbers.n).to_bytes(K, "big")

    def pkcs1(self, ct: bytes) -> bytes:
        self.calls.append("pkcs1")
        return _key().decrypt(ct, padding.PKCS1v15())


def _pad(kind: str) -> padding.AsymmetricPadding:
    if kind == keyalg.PKCS1V15:
        return padding.PKCS1v15()
    algo = keyalg.OAEP_HASHES[keyalg.OAEP_TRANSPORTS[kind]]()
    return padding.OAEP(padding.MGF1(algo), algo, None)


# (mechanisms, what the profile knows of device OAEP, what device OAEP really takes)
SETUPS = {
    "SoftHSM2": (RSA_ALL, SHA1_ONLY, {"sha1"}),
    "TPM 2.0": (RSA_ALL, TPM2.oaep, {"sha1", "sha256", "sha384", "sha512"}),
    "unknown, raw RSA": (RSA_ALL, None, {"sha1"}),
    "unknown, OAEP only": (frozenset({"RSA_PKCS_OAEP", "RSA_PKCS"}), None, {"sha1"}),
    "profiled OAEP only": (frozenset({"RSA_PKCS_OAEP"}),
                           frozenset({("sha1", "sha1", False), ("sha256", "sha256", False)}),
                           {"sha1", "sha256"}),
    "raw RSA only": (frozenset({"RSA_X_509"}), None, set()),
    "v1.5 only (OpenPGP card)": (frozenset({"RSA_PKCS"}), None, set()),
}


@pytest.mark.parametrize("setup", list(SETUPS))
def test_every_claimed_kind_opens_by_the_route_claimed(setup: str) -> None:
    mechanisms, known, works = SETUPS[setup]
    facts = DeviceFacts(HSM, mechanisms, known_oaep=known)
    routes = opens(KeyType.RSA, facts)
    assert envelope_kinds("rsa", facts) == tuple(routes)
    for kind in keyalg.KEY_TRANSPORTS:
        device = Device(works)
        neg = RsaNegotiator(device, mechanisms, K, known)
        ct = _key().public_key().encrypt(b"content key", _pad(kind))
        if kind not in routes:
            # Not claimed: refused, or only tried on a device OAEP nobody vouches for.
            with pytest.raises(MechanismUnsupported):
                neg.decrypt(ct, _pad(kind))
            continue
        assert neg.decrypt(ct, _pad(kind)) == b"content key", (setup, kind)
        first = {"oaep": DEVICE_OAEP, "raw": RAW_OAEP, "pkcs1": "device RSA_PKCS"}
        assert routes[kind].startswith(first[device.calls[0]]), (setup, kind, device.calls)


def test_claims_follow_the_negotiation_not_the_mechanism_names() -> None:
    # Raw RSA alone decodes OAEP in software, but v1.5 needs CKM_RSA_PKCS itself.
    assert envelope_kinds("rsa", {"RSA_X_509"}) == tuple(keyalg.OAEP_TRANSPORTS)
    # A profile vouching for device OAEP SHA-256 makes it claimed without raw RSA.
    mechanisms, known, _ = SETUPS["profiled OAEP only"]
    assert envelope_kinds("rsa", DeviceFacts(HSM, mechanisms, known_oaep=known)) == (
        "oaep-sha1", "oaep-sha256")
    assert envelope_kinds("rsa", {"RSA_PKCS_OAEP"}) == ("oaep-sha1",)


def test_capabilities_of_an_openpgp_card() -> None:
    facts = DeviceFacts(SMARTCARD, frozenset({"RSA_PKCS", "RSA_PKCS_KEY_PAIR_GEN",
                                              "SHA256_RSA_PKCS"}),
                        {KeyType.RSA: (1024, 4096)}, OPENPGP.oaep,
                        decryption_key_signs=OPENPGP.decryption_key_signs)
    caps = capabilities(facts)
    rsa_caps, ec_caps = caps.key_types
    assert (caps.device_class, caps.shares) == ("smartcard", False)
    assert rsa_caps.algorithms == ("rsa2048", "rsa3072", "rsa4096")
    assert rsa_caps.opens == {"pkcs1v15": "device RSA_PKCS"}
    assert rsa_caps.signs is None  # the decryption key: its certificate comes from a CA
    assert (ec_caps.sizes, ec_caps.algorithms, ec_caps.opens) == (None, (), {})


def test_capabilities_without_hash_and_sign() -> None:
    """opencryptoki 3.8: no CKM_SHA256_RSA_PKCS, so DigestInfo through CKM_RSA_PKCS."""
    caps = capabilities(DeviceFacts("software", OCK, {KeyType.RSA: (512, 4096)}, wraps=True))
    rsa_caps = caps.key_types[0]
    assert rsa_caps.signs == "software sha256 + DigestInfo, device RSA_PKCS"
    assert rsa_caps.opens["oaep-sha256"] == "device RSA_PKCS_OAEP, else RSA_X_509 + software OAEP"
    assert caps.to_json()["shares"] is True


def test_capabilities_of_a_tpm_and_the_keystore() -> None:
    tpm = capabilities(DeviceFacts(
        TPM, RSA_ALL | {"SHA256_RSA_PKCS", "ECDSA", "ECDSA_SHA256"},
        {KeyType.RSA: (1024, 3072), KeyType.EC: (192, 638)}, TPM2.oaep))
    rsa_caps, ec_caps = tpm.key_types
    assert rsa_caps.algorithms == ("rsa2048", "rsa3072")
    assert set(rsa_caps.opens.values()) == {DEVICE_OAEP, "device RSA_PKCS"}
    assert (ec_caps.opens, ec_caps.signs) == ({}, "device ECDSA_SHA256")  # no ECDH
    keystore = capabilities(KEYSTORE)
    assert keystore.shares and keystore.device_class == "software"
    for caps in keystore.key_types:
        assert caps.algorithms and caps.signs == IN_SOFTWARE
        assert set(caps.opens.values()) == {IN_SOFTWARE}
