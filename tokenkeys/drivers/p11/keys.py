"""The one PKCS#11 key handle, over the port, for both bindings.

Decrypt failures are sorted once: an answer about the ciphertext (the token profile's
is_padding_outcome, from a device still in its reader) is the uniform DecryptFailed the
v1.5 countermeasure hides; a
refused mechanism makes the negotiator fall back; anything else (removal, lost
session, key gone, CKR_DEVICE_ERROR) is raised as what it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from asn1crypto.core import OctetString
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

from tokenkeys import keyalg
from tokenkeys.drivers.base import KeyHandle, PublicKey, Runner
from tokenkeys.drivers.negotiate import DecryptFailed, MechanismRefused, negotiator_for
from tokenkeys.drivers.negotiate_sign import sign_plan
from tokenkeys.drivers.p11 import ck, templates
from tokenkeys.drivers.p11.ckr import REFUSALS, CkrError
from tokenkeys.drivers.p11.port import Mech, OaepParam, Session
from tokenkeys.drivers.p11.profiles import Profile
from tokenkeys.drivers.pkcs11_tables import ec_point_of, ecdsa_der
from tokenkeys.errors import MechanismUnsupported, TokenKeysError, UsageError
from tokenkeys.i18n import _
from tokenkeys.types import KeyType
from tokenkeys.uri import Pkcs11Uri

T = TypeVar("T")


class KeyOwner(Protocol):
    """What a key needs from its token (P11Token), without importing it."""

    profile: Profile

    def session(self) -> Session: ...

    def private_by_id(self, key_id: bytes) -> Any: ...

    def explain(self, code: int, what: str, offered: Sequence[str] = ()) -> TokenKeysError: ...

    def removed(self, code: int) -> bool: ...


class Unusable(Exception):
    """Internal: an object tokenkeys cannot use (reason in the message)."""


def ec_point(raw: bytes, curve: ec.EllipticCurve) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING by the spec; some modules give the bare point."""
    if len(raw) == 2 * ((curve.key_size + 7) // 8) + 1:
        return raw
    try:
        return bytes(OctetString.load(raw).native)
    except ValueError:
        return raw


def read_public_key(session: Session, obj: Any) -> PublicKey | None:
    """RSA or EC public key of a key object. None when the values are implausible
    (OpenSC 0.23 in the generating process: the caller reads again). Unusable for
    key types and curves tokenkeys does not handle, or missing values."""
    a = session.get(obj, [ck.CKA_KEY_TYPE])
    key_type = a[ck.CKA_KEY_TYPE]
    if key_type == ck.CKK_RSA:
        v = session.get(obj, [ck.CKA_MODULUS, ck.CKA_PUBLIC_EXPONENT])
        mod, exp = v[ck.CKA_MODULUS], v[ck.CKA_PUBLIC_EXPONENT]
        if not mod or not exp:
            raise Unusable(_("RSA key without modulus or exponent"))
        n, e = int.from_bytes(mod, "big"), int.from_bytes(exp, "big")
        declared = session.get(obj, [ck.CKA_MODULUS_BITS])[ck.CKA_MODULUS_BITS]
        if (declared and n.bit_length() != declared) or e.bit_length() > 33 or n < 3:
            return None
        return rsa.RSAPublicNumbers(e, n).public_key()
    if key_type == ck.CKK_EC:
        v = session.get(obj, [ck.CKA_EC_PARAMS, ck.CKA_EC_POINT])
        curve = keyalg.CURVE_BY_PARAMS.get(v[ck.CKA_EC_PARAMS] or b"")
        if curve is None:
            raise Unusable(_("EC curve not supported (tokenkeys uses {CURVES})")
                           .format(CURVES=', '.join(keyalg.CURVES)))
        if not v[ck.CKA_EC_POINT]:
            raise Unusable(_("EC key without a public point"))
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(
                curve.curve(), ec_point(v[ck.CKA_EC_POINT], curve.curve()))
        except ValueError:
            return None  # the same OpenSC 0.23 bug, for EC points
    raise Unusable(_("key type {key_type!r} not supported (RSA and EC are)")
                   .format(key_type=key_type))


def _here(fn: Callable[[], Any]) -> Any:
    return fn()


class P11Key(KeyHandle):
    """A private key on a PKCS#11 device. The private object is found by CKA_ID on
    first use, so handles listed before login work once the token is logged in."""

    def __init__(self, owner: KeyOwner, private: Any | None, public_key: PublicKey,
                 certificate: x509.Certificate | None, *, key_id: bytes, label: str,
                 extractable: bool, token_uri: Pkcs11Uri, mechanisms: frozenset[str]) -> None:
        self._owner = owner
        self._private = private
        self._can_sign: bool | None = None
        self.id = key_id
        self.label = label
        self.public_key = public_key
        self.certificate = certificate
        self.extractable = extractable
        self._token_uri = token_uri
        self.mechanisms = mechanisms
        self.last_decrypt = ""  # the device mechanism of the last decryption (tests, doctor)
        self.last_sign = ""  # how the last signature was made (negotiate_sign.SignPlan.path)
        self._run: Runner = _here
        self._negotiator = negotiator_for(self, public_key, mechanisms, owner.profile.oaep)

    def __repr__(self) -> str:
        return f"P11Key({self.uri})"

    @property
    def uri(self) -> str:
        uri = self._token_uri.with_object(self.label, self.id)
        return str(Pkcs11Uri(attrs={**uri.attrs, "type": "private"}, id=uri.id, query=uri.query))

    def _key(self) -> Any:
        if self._private is None:
            self._private = self._owner.private_by_id(self.id)
        return self._private

    @property
    def private_object(self) -> Any:
        return self._key()

    def run_device_calls_with(self, runner: Runner | None) -> None:
        self._run = runner or _here

    def _device(self, fn: Callable[[], T], what: str, offered: Sequence[str] = ()) -> T:
        """A device call on the key's device thread; a failure is explained there too
        (the removal check asks the reader, a device call of its own)."""
        try:
            out: T = self._run(fn)
        except CkrError as exc:
            code = exc.code
            raise self._run(lambda: self._owner.explain(code, what, offered)) from None
        return out

    # --- RsaOps (negotiate.py) ---
    def _decrypt(self, ciphertext: bytes, mech: Mech, refusable: bool) -> bytes:
        key = self._key()
        session = self._owner.session()
        self.last_decrypt = ""
        try:
            out = bytes(self._run(lambda: session.decrypt(key, mech, ciphertext)))
        except CkrError as exc:
            if refusable and exc.code in REFUSALS:
                raise MechanismRefused() from None
            code, what = exc.code, _("decrypting with {label!r}").format(label=self.label)
            # A padding answer that may also mean a pulled card (OpenPGP card: 6F00 is
            # CKR_GENERAL_ERROR) speaks of the ciphertext only once the reader still
            # shows the card: never hide a removal as a damaged bid.
            if self._owner.profile.is_padding_outcome(code) and not self._run(
                    lambda: self._owner.removed(code)):
                raise DecryptFailed() from None
            raise self._run(lambda: self._owner.explain(code, what)) from None
        return out

    def oaep(self, ciphertext: bytes, hash_name: str, mgf_hash_name: str,
             label: bytes | None) -> bytes:
        param = OaepParam(templates.OAEP_HASH[hash_name][0],
                          templates.OAEP_HASH[mgf_hash_name][1], label)
        out = self._decrypt(ciphertext, Mech(ck.CKM_RSA_PKCS_OAEP, oaep=param), True)
        self.last_decrypt = "RSA_PKCS_OAEP"
        return out

    def raw(self, ciphertext: bytes) -> bytes:
        out = self._decrypt(ciphertext, Mech(ck.CKM_RSA_X_509), False)
        self.last_decrypt = "RSA_X_509"
        return out

    def pkcs1(self, ciphertext: bytes) -> bytes:
        out = self._decrypt(ciphertext, Mech(ck.CKM_RSA_PKCS), False)
        self.last_decrypt = "RSA_PKCS"
        return out

    # --- KeyHandle ---
    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        if self._negotiator is None:
            raise UsageError(_("key {label!r} is not an RSA key: it cannot decrypt")
                             .format(label=self.label))
        return self._negotiator.decrypt(ciphertext, padding)

    def can_sign(self) -> bool:
        """CKA_SIGN of the private key (an OpenPGP decryption key says false). Requires login."""
        if self._owner.profile.decryption_key_signs:
            return True
        if self._can_sign is None:
            got = self._device(lambda: self._owner.session().get(self._key(), [ck.CKA_SIGN]),
                               "reading CKA_SIGN")
            self._can_sign = bool(got[ck.CKA_SIGN])
        return self._can_sign

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        if not self.can_sign():
            raise MechanismUnsupported(
                _("signing with key {label!r} (id {hex}, CKA_SIGN false)")
                .format(label=self.label, hex=self.id.hex()),
                ["decrypt" if self.key_type is KeyType.RSA else "derive"])
        plan = sign_plan(self.key_type, algorithm.name, self.mechanisms,
                         self._owner.profile.sign_avoid)
        mech = Mech(getattr(ck, f"CKM_{plan.mechanism}"))
        payload = plan.payload(data, algorithm)
        session = self._owner.session()
        sig = bytes(self._device(lambda: session.sign(self._key(), mech, payload),
                                 _("signing with {label!r}").format(label=self.label),
                                 sorted(self.mechanisms)))
        self.last_sign = plan.path
        # PKCS#11 gives ECDSA as r||s, with or without hashing on the device.
        return sig if self.key_type is KeyType.RSA else ecdsa_der(sig)

    def derive_ecdh(self, peer_public: ec.EllipticCurvePublicKey) -> bytes:
        if not isinstance(self.public_key, ec.EllipticCurvePublicKey):
            raise UsageError(_("key {label!r} is not an EC key: no ECDH").format(label=self.label))
        if peer_public.curve.name != self.public_key.curve.name:
            raise UsageError(_("peer key is on {name}, key {label!r} on {name2}")
                             .format(name=peer_public.curve.name, label=self.label,
                                     name2=self.public_key.curve.name))
        if "ECDH1_DERIVE" not in self.mechanisms:
            raise MechanismUnsupported(_("ECDH (CKM_ECDH1_DERIVE)"), sorted(self.mechanisms))
        mech = Mech(ck.CKM_ECDH1_DERIVE, ecdh_point=ec_point_of(peer_public))
        template = templates.ecdh_secret((self.public_key.curve.key_size + 7) // 8)
        session = self._owner.session()

        def derive() -> bytes:
            secret = session.derive(self._key(), mech, template)
            try:
                return bytes(session.get(secret, [ck.CKA_VALUE])[ck.CKA_VALUE])
            finally:
                session.destroy(secret)

        return self._device(derive, f"ECDH with {self.label!r}", sorted(self.mechanisms))
