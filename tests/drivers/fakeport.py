"""A fake PKCS#11 port: an in-memory device for what no real device here can do.

It stands in for the binding (tokenkeys.drivers.p11.port.Port), so the real
P11Token, keys, provisioning and CKR table run above it. Used for a card without
fixed key slots, and for failures injected mid-operation (removal, lost session,
CKR_DEVICE_ERROR). Keys are real `cryptography` keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from tokenkeys import keyalg
from tokenkeys.drivers.p11 import ck
from tokenkeys.drivers.p11.ckr import CKR, CkrError
from tokenkeys.drivers.p11.port import Mech, MechInfo, SlotToken, Template

HASH_OF = {ck.CKM_SHA_1: hashes.SHA1, ck.CKM_SHA256: hashes.SHA256, ck.CKM_SHA384: hashes.SHA384,
           ck.CKM_SHA512: hashes.SHA512, ck.CKM_SHA224: hashes.SHA224}
SIGN_HASH = {ck.CKM_SHA256_RSA_PKCS: hashes.SHA256, ck.CKM_SHA384_RSA_PKCS: hashes.SHA384,
             ck.CKM_SHA1_RSA_PKCS: hashes.SHA1, ck.CKM_SHA512_RSA_PKCS: hashes.SHA512}
ECDSA_HASH = {ck.CKM_ECDSA_SHA256: hashes.SHA256, ck.CKM_ECDSA_SHA384: hashes.SHA384}
MECHANISMS = frozenset({"RSA_PKCS_KEY_PAIR_GEN", "EC_KEY_PAIR_GEN", "RSA_PKCS", "RSA_X_509",
                        "RSA_PKCS_OAEP", "SHA256_RSA_PKCS", "ECDSA", "ECDH1_DERIVE"})


def fail(name: str) -> CkrError:
    return CkrError(CKR[name])


@dataclass
class FakeDevice:
    """The device's state, shared by its port and sessions."""

    label: str = "fake"
    manufacturer: str = "Fake cards"  # no profile row: GENERIC, tokenkeys picks CKA_ID
    model: str = "no fixed slots"
    serial: str = "F00D"
    pin: str = "123456"
    so_pin: str = "12345678"
    flags: int = 0x400 | 0x4 | 0x8  # initialised, login required, user PIN set
    present: bool = True
    objects: dict[int, dict[int, Any]] = field(default_factory=dict)
    keys: dict[int, Any] = field(default_factory=dict)  # handle -> cryptography private key
    logged_in: str | None = None
    # Injected failures: operation name -> CKR name; with `after`, only once that many
    # calls of the operation succeeded (e.g. removal after 8 decryptions).
    failures: dict[str, tuple[str, int]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    keygen_needs_so: bool = False  # key generation answers USER_NOT_LOGGED_IN to the user
    login_answer: str | None = None  # e.g. "CKR_USER_NOT_LOGGED_IN" for a wrong PIN
    logins: list[tuple[str | None, bool]] = field(default_factory=list)
    mechanisms: frozenset[str] = MECHANISMS  # what the device lists
    signed_with: list[int] = field(default_factory=list)  # the CKM of each C_Sign
    _next: int = 1

    def check(self, op: str) -> None:
        if not self.present:
            raise fail("CKR_DEVICE_REMOVED")
        count = self.calls.get(op, 0)
        if op in self.failures:
            name, after = self.failures[op]
            if count >= after:
                raise fail(name)
        self.calls[op] = count + 1

    def add(self, template: Template, key: Any = None) -> int:
        handle = self._next
        self._next += 1
        self.objects[handle] = dict(template)
        if key is not None:
            self.keys[handle] = key
        return handle

    def visible(self, handle: int) -> bool:
        obj = self.objects.get(handle)
        return obj is not None and (not obj.get(ck.CKA_PRIVATE) or self.logged_in is not None)


class FakeSession:
    def __init__(self, device: FakeDevice) -> None:
        self.d = device

    def _obj(self, handle: int) -> dict[int, Any]:
        if not self.d.visible(handle):
            raise fail("CKR_OBJECT_HANDLE_INVALID")
        return self.d.objects[handle]

    def _key(self, handle: int) -> Any:
        if handle not in self.d.keys or not self.d.visible(handle):
            raise fail("CKR_KEY_HANDLE_INVALID")
        return self.d.keys[handle]

    def login(self, pin: str | None, so: bool = False) -> None:
        self.d.check("login")
        self.d.logins.append((pin, so))
        if self.d.login_answer:
            raise fail(self.d.login_answer)
        if self.d.logged_in:
            raise fail("CKR_USER_ALREADY_LOGGED_IN")
        if pin != (self.d.so_pin if so else self.d.pin):
            self.d.flags |= 0x10000  # count low
            raise fail("CKR_PIN_INCORRECT")
        self.d.logged_in = "so" if so else "user"

    def logout(self) -> None:
        self.d.logged_in = None

    def close(self) -> None:
        pass

    def find(self, template: Template) -> list[int]:
        self.d.check("find")
        return [h for h, o in self.d.objects.items() if self.d.visible(h)
                and all(o.get(k) == v for k, v in template.items())]

    def get(self, obj: int, attrs: Sequence[int]) -> dict[int, Any]:
        self.d.check("get")
        o = self._obj(obj)
        return {a: o.get(a) for a in attrs}

    def set(self, obj: int, template: Template) -> None:
        self.d.check("set")
        self._obj(obj).update(template)

    def generate_key_pair(self, mech: Mech, public: Template, private: Template
                          ) -> tuple[int, int]:
        self.d.check("generate")
        if self.d.logged_in is None or (self.d.keygen_needs_so and self.d.logged_in != "so"):
            raise fail("CKR_USER_NOT_LOGGED_IN")
        key: Any
        if mech.mechanism == ck.CKM_RSA_PKCS_KEY_PAIR_GEN:
            key = rsa.generate_private_key(65537, int(public[ck.CKA_MODULUS_BITS]))
            n = key.public_key().public_numbers()
            pub_attrs = {ck.CKA_MODULUS: n.n.to_bytes((n.n.bit_length() + 7) // 8, "big"),
                         ck.CKA_PUBLIC_EXPONENT: b"\x01\x00\x01",
                         ck.CKA_MODULUS_BITS: n.n.bit_length()}
        else:
            curve = keyalg.CURVE_BY_PARAMS[public[ck.CKA_EC_PARAMS]]
            key = ec.generate_private_key(curve.curve())
            raw = key.public_key().public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint)
            pub_attrs = {ck.CKA_EC_PARAMS: curve.params,
                         ck.CKA_EC_POINT: b"\x04" + bytes([len(raw)]) + raw}
        pub = self.d.add({**public, **pub_attrs})
        priv = self.d.add({**private, **pub_attrs, ck.CKA_PRIVATE: True}, key)
        return pub, priv

    def generate_key(self, mech: Mech, template: Template) -> int:
        raise fail("CKR_FUNCTION_NOT_SUPPORTED")

    def create(self, template: Template) -> int:
        self.d.check("create")
        return self.d.add(template)

    def destroy(self, obj: int) -> None:
        self.d.check("destroy")
        self._obj(obj)
        del self.d.objects[obj]
        self.d.keys.pop(obj, None)

    def decrypt(self, key: int, mech: Mech, data: bytes) -> bytes:
        self.d.check("decrypt")
        k = self._key(key)
        try:
            if mech.mechanism == ck.CKM_RSA_PKCS:
                return bytes(k.decrypt(data, padding.PKCS1v15()))
            if mech.mechanism == ck.CKM_RSA_PKCS_OAEP and mech.oaep is not None:
                h = HASH_OF[mech.oaep.hash]()
                return bytes(k.decrypt(data, padding.OAEP(padding.MGF1(h), h, mech.oaep.label)))
            if mech.mechanism == ck.CKM_RSA_X_509:
                n = k.private_numbers()
                m = pow(int.from_bytes(data, "big"), n.d, n.public_numbers.n)
                return m.to_bytes((k.key_size + 7) // 8, "big")
        except ValueError:
            raise fail("CKR_ENCRYPTED_DATA_INVALID") from None
        raise fail("CKR_MECHANISM_INVALID")

    def sign(self, key: int, mech: Mech, data: bytes) -> bytes:
        self.d.check("sign")
        self.d.signed_with.append(mech.mechanism)
        k = self._key(key)
        if mech.mechanism in SIGN_HASH:
            return bytes(k.sign(data, padding.PKCS1v15(), SIGN_HASH[mech.mechanism]()))
        if mech.mechanism == ck.CKM_RSA_PKCS:  # EMSA-PKCS1-v1_5 over the caller's DigestInfo
            size = (k.key_size + 7) // 8
            block = b"\x00\x01" + b"\xff" * (size - 3 - len(data)) + b"\x00" + data
            n = k.private_numbers()
            return pow(int.from_bytes(block, "big"), n.d, n.public_numbers.n).to_bytes(size, "big")
        if mech.mechanism in ECDSA_HASH:
            h0 = hashes.Hash(ECDSA_HASH[mech.mechanism]())
            h0.update(data)
            data = h0.finalize()
        h = {32: hashes.SHA256(), 48: hashes.SHA384(), 64: hashes.SHA512()}[len(data)]
        r, s = decode_dss_signature(k.sign(data, ec.ECDSA(Prehashed(h))))
        size = (k.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    def derive(self, key: int, mech: Mech, template: Template) -> int:
        self.d.check("derive")
        k = self._key(key)
        assert mech.ecdh_point is not None
        peer = ec.EllipticCurvePublicKey.from_encoded_point(k.curve, mech.ecdh_point)
        return self.d.add({**template, ck.CKA_VALUE: k.exchange(ec.ECDH(), peer)})

    def wrap(self, wrapping_key: int, key: int, mech: Mech) -> bytes:
        raise fail("CKR_FUNCTION_NOT_SUPPORTED")

    def unwrap(self, unwrapping_key: int, mech: Mech, data: bytes, template: Template) -> int:
        raise fail("CKR_FUNCTION_NOT_SUPPORTED")

    def init_pin(self, pin: str) -> None:
        self.d.pin = pin


class FakePort:
    binding = "fake"

    def __init__(self, device: FakeDevice, module: str = "/fake/libfake-pkcs11.so") -> None:
        self.device = device
        self.module = module

    def slots(self) -> list[int]:
        return [0] if self.device.present else []

    def token(self, slot: int) -> SlotToken:
        d = self.device
        if not d.present:
            raise fail("CKR_TOKEN_NOT_PRESENT")
        return SlotToken(slot, d.label, d.manufacturer, d.model, d.serial, d.flags, 6, 8)

    def mechanisms(self, slot: int) -> frozenset[str]:
        return self.device.mechanisms

    def mechanism_info(self, slot: int, mechanism: int) -> MechInfo | None:
        return MechInfo(1024, 4096, 0) if mechanism in (
            ck.CKM_RSA_PKCS_KEY_PAIR_GEN, ck.CKM_EC_KEY_PAIR_GEN) else None

    def open_session(self, slot: int, rw: bool = True) -> FakeSession:
        self.device.check("open")
        return FakeSession(self.device)

    def init_token(self, slot: int, so_pin: str, label: str) -> None:
        self.device.label, self.device.so_pin = label, so_pin

    def slot_event(self) -> bool:
        return False

    def reinitialise(self) -> None:
        self.device.logged_in = None
