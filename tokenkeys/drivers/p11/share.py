"""KeyExport, KeyImport and KeyTransport for P11Token, written once over the port.

Both bindings (python-pkcs11, PyKCS11) get them through their adapters. Every
transient object (ephemeral AES keys, the transport key pair, the transport
public key copied to the source) is a session object (CKA_TOKEN false) and is
destroyed before returning, on success and on failure.
- Export: an ephemeral AES-256 key is created from a random value this process
  holds; the device wraps the private key under it (CKM_AES_KEY_WRAP_PAD) and
  the PKCS#8 is unwrapped in memory only (SoftHSM2's zero padding trimmed).
- Import: the reverse; the device unwraps (C_UnwrapKey) into a token object.
- Transport: the ephemeral AES key is GENERATED on the source (sensitive, so
  this process never sees it), wrapped there under the target's transport RSA
  public key (OAEP-SHA1, the only OAEP SoftHSM2 wraps with), and unwrapped on
  the target.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tokenkeys import keyalg
from tokenkeys.drivers.base import KeyHandle, PublicKey
from tokenkeys.drivers.capabilities import TransportKey, WrappedKey
from tokenkeys.drivers.keywrap import (
    TRANSPORT_BITS,
    TRANSPORT_OAEP,
    unwrap_pkcs8,
    wipe,
    wrap_pkcs8,
)
from tokenkeys.drivers.p11 import ck, templates
from tokenkeys.drivers.p11.ckr import guard
from tokenkeys.drivers.p11.keys import read_public_key
from tokenkeys.drivers.p11.port import Mech, OaepParam, Template
from tokenkeys.drivers.p11.provision import destroy_quietly
from tokenkeys.errors import (
    DeviceError,
    KeyExists,
    MechanismUnsupported,
    NotExtractable,
    PolicyRefused,
    UsageError,
)
from tokenkeys.i18n import _
from tokenkeys.types import KeyType

if TYPE_CHECKING:
    from tokenkeys.drivers.p11.token import P11Token

KWP = Mech(ck.CKM_AES_KEY_WRAP_PAD)


def _need(token: P11Token, *names: str) -> None:
    offered = token.mechanisms()
    missing = [n for n in names if n not in offered]
    if missing:
        raise MechanismUnsupported(" and ".join(f"CKM_{n}" for n in missing) + _(" (key wrapping)"),
                                   sorted(offered))


def _call(token: P11Token, fn: Callable[[], Any], what: str) -> Any:
    return guard(fn, what, sorted(token.mechanisms()))


def _oaep(hash_name: str) -> Mech:
    hash_mech, mgf = templates.OAEP_HASH[hash_name]
    return Mech(ck.CKM_RSA_PKCS_OAEP, oaep=OaepParam(hash_mech, mgf, None))


def _aes_value_key(token: P11Token, value: bytes) -> Any:
    """A session AES key with a value this process chose (export/import only)."""
    _attrs, tpl = templates.aes_key(8 * len(value), value=value)
    return _call(token, lambda: token.session().create(tpl), _("creating an ephemeral AES key"))


def _private_object(token: P11Token, key: KeyHandle) -> Any:
    if not key.extractable:
        raise NotExtractable(key.label)
    private = token.private_by_id(key.id)
    # Say why, rather than let the device answer CKR_KEY_NOT_WRAPPABLE at step 2.
    trusted_only = guard(lambda: token.session().get(private, [ck.CKA_WRAP_WITH_TRUSTED]),
                         _("reading key {label!r}").format(label=key.label))
    if trusted_only.get(ck.CKA_WRAP_WITH_TRUSTED):
        raise PolicyRefused(
            _("key {label!r} may be wrapped only under keys the security officer marked "
              "trusted (CKA_WRAP_WITH_TRUSTED): tokenkeys cannot export or copy it")
            .format(label=key.label))
    return private


def export_private_key(token: P11Token, key: KeyHandle) -> bytearray:
    _need(token, "AES_KEY_WRAP_PAD")
    private = _private_object(token, key)
    value = bytearray(secrets.token_bytes(32))
    aes = None
    try:
        aes = _aes_value_key(token, bytes(value))
        wrapped: bytes = _call(token, lambda: token.session().wrap(aes, private, KWP),
                               _("wrapping key {label!r} (C_WrapKey)").format(label=key.label))
        return unwrap_pkcs8(bytes(value), bytes(wrapped))
    finally:
        destroy_quietly(token, aes)
        wipe(value)


def _refuse_present(token: P11Token, label: str, key_id: bytes) -> None:
    for query, why in (({ck.CKA_LABEL: label}, _("a key named {label!r} already exists")
                                               .format(label=label)),
                       ({ck.CKA_ID: key_id}, _("this key is already"))):
        for cls in (ck.CKO_PRIVATE_KEY, ck.CKO_PUBLIC_KEY):
            if token.find({ck.CKA_CLASS: cls, **query}):
                raise KeyExists(_("{why} on token {label!r}")
                                .format(why=why, label=token.slot.label))


def _key_templates(public: PublicKey, label: str, key_id: bytes,
                   shareable: bool) -> tuple[Template, Template]:
    """(private, public) token templates for an arriving key pair."""
    kt = KeyType.RSA if isinstance(public, rsa.RSAPublicKey) else KeyType.EC
    _, private = templates.key_pair(kt, label, key_id, extractable=shareable)
    return private, templates.public_key(public, label, key_id)


def _arrive(token: P11Token, public: PublicKey, label: str, shareable: bool,
            unwrap: Callable[[Template], Any]) -> KeyHandle:
    """Unwrap the private key onto the token and create its public key; on failure
    destroy what was created. Returns the new handle."""
    key_id = keyalg.key_id(public)
    _refuse_present(token, label, key_id)
    private_t, public_t = _key_templates(public, label, key_id, shareable)
    created: list[Any] = []
    try:
        created.append(token.writing(lambda: unwrap(private_t)))
        created.append(_call(token, lambda: token.writing(
            lambda: token.session().create(public_t)), _("storing the public key of {label!r}")
                                                       .format(label=label)))
        token.known_public[key_id] = public
        return token.find_key(key_id=key_id)
    except BaseException:
        destroy_quietly(token, *created)
        raise


def import_private_key(token: P11Token, pkcs8: bytes | bytearray, *, label: str,
                       shareable: bool) -> KeyHandle:
    _need(token, "AES_KEY_WRAP_PAD")
    private = serialization.load_der_private_key(bytes(pkcs8), password=None)
    if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise UsageError(_("only RSA and EC keys can be imported"))
    value = bytearray(secrets.token_bytes(32))
    wrapped = wrap_pkcs8(bytes(value), pkcs8)
    aes = None
    try:
        aes = _aes_value_key(token, bytes(value))
        return _arrive(token, private.public_key(), label, shareable, lambda tpl: _call(
            token, lambda: token.session().unwrap(aes, KWP, wrapped, tpl),
            _("unwrapping key {label!r} onto the token (C_UnwrapKey)").format(label=label)))
    finally:
        destroy_quietly(token, aes)
        wipe(value)


def create_transport_key(token: P11Token) -> TransportKey:
    _need(token, "RSA_PKCS_KEY_PAIR_GEN", "RSA_PKCS_OAEP", "AES_KEY_WRAP_PAD")
    common: Template = {ck.CKA_TOKEN: False, ck.CKA_KEY_TYPE: ck.CKK_RSA,
                        ck.CKA_LABEL: "tokenkeys-transport"}
    public_t: Template = {**common, ck.CKA_CLASS: ck.CKO_PUBLIC_KEY, ck.CKA_PRIVATE: False,
                          ck.CKA_MODULUS_BITS: TRANSPORT_BITS,
                          ck.CKA_PUBLIC_EXPONENT: b"\x01\x00\x01", ck.CKA_WRAP: True,
                          ck.CKA_ENCRYPT: False, ck.CKA_VERIFY: False}
    private_t: Template = {**common, ck.CKA_CLASS: ck.CKO_PRIVATE_KEY, ck.CKA_PRIVATE: True,
                           ck.CKA_SENSITIVE: True, ck.CKA_EXTRACTABLE: False,
                           ck.CKA_UNWRAP: True, ck.CKA_DECRYPT: False, ck.CKA_SIGN: False,
                           ck.CKA_DERIVE: False}
    pub, priv = _call(token, lambda: token.session().generate_key_pair(
        Mech(ck.CKM_RSA_PKCS_KEY_PAIR_GEN), public_t, private_t),
        _("generating the transport key pair"))
    try:
        public = guard(lambda: read_public_key(token.session(), pub),
                       _("reading the transport key"))
        if not isinstance(public, rsa.RSAPublicKey):
            raise DeviceError(_("the transport public key cannot be read"))
    except BaseException:
        destroy_quietly(token, priv, pub)
        raise
    return TransportKey(public_key=public, handle=(token, pub, priv))


def wrap_for_transport(token: P11Token, key: KeyHandle,
                       transport: rsa.RSAPublicKey) -> WrappedKey:
    _need(token, "AES_KEY_GEN", "AES_KEY_WRAP_PAD", "RSA_PKCS_OAEP")
    private = _private_object(token, key)
    numbers = transport.public_numbers()
    tpub_t: Template = {
        ck.CKA_CLASS: ck.CKO_PUBLIC_KEY, ck.CKA_KEY_TYPE: ck.CKK_RSA, ck.CKA_TOKEN: False,
        ck.CKA_PRIVATE: False, ck.CKA_WRAP: True, ck.CKA_ENCRYPT: False, ck.CKA_VERIFY: False,
        ck.CKA_MODULUS: numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"),
        ck.CKA_PUBLIC_EXPONENT: numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"),
    }
    # Generated here, sensitive: this process never holds the AES key's value.
    mech, aes_t = templates.aes_key(256, extractable=True)
    aes = tpub = None
    try:
        aes = _call(token, lambda: token.session().generate_key(mech, aes_t),
                    _("generating the ephemeral AES key"))
        wrapped_key = _call(token, lambda: token.session().wrap(aes, private, KWP),
                            _("wrapping key {label!r} under the AES key").format(label=key.label))
        tpub = _call(token, lambda: token.session().create(tpub_t),
                     _("loading the transport public key"))
        wrapped_aes = _call(token, lambda: token.session().wrap(tpub, aes, _oaep(TRANSPORT_OAEP)),
                            _("wrapping the AES key under the transport key (RSA-OAEP)"))
    finally:
        destroy_quietly(token, tpub, aes)
    return WrappedKey(key_type=key.key_type, wrapped_aes=bytes(wrapped_aes),
                      oaep_hash=TRANSPORT_OAEP, wrapped_key=bytes(wrapped_key),
                      public_key=key.public_key)


def _transport_objects(token: P11Token, transport: TransportKey) -> tuple[Any, Any]:
    handle = transport.handle
    if not (isinstance(handle, tuple) and len(handle) == 3 and handle[0] is token):
        raise UsageError(_("this transport key was not made by this token"))
    return handle[1], handle[2]


def unwrap_transported(token: P11Token, transport: TransportKey, wrapped: WrappedKey, *,
                       label: str, shareable: bool) -> KeyHandle:
    _public, transport_private = _transport_objects(token, transport)
    if wrapped.public_key is None:
        raise UsageError(_("the wrapped key does not say its public key"))
    public = wrapped.public_key
    _attrs, aes_t = templates.aes_key(256, for_unwrap=True)
    if wrapped.oaep_hash not in templates.OAEP_HASH:
        raise UsageError(_("unknown OAEP hash {oaep_hash!r}").format(oaep_hash=wrapped.oaep_hash))
    aes = _call(token, lambda: token.session().unwrap(
        transport_private, _oaep(wrapped.oaep_hash), wrapped.wrapped_aes, aes_t),
        _("unwrapping the AES key with the transport key"))
    try:
        return _arrive(token, public, label, shareable, lambda tpl: _call(
            token, lambda: token.session().unwrap(aes, KWP, wrapped.wrapped_key, tpl),
            _("unwrapping key {label!r} onto the token (C_UnwrapKey)").format(label=label)))
    finally:
        destroy_quietly(token, aes)


def destroy_transport_key(token: P11Token, transport: TransportKey) -> None:
    public, private = _transport_objects(token, transport)
    destroy_quietly(token, private, public)


def session_objects(token: P11Token) -> list[Any]:
    """Session (CKA_TOKEN false) objects this process sees: none after a share step."""
    return list(token.find({ck.CKA_TOKEN: False}))

