"""Key generation on a card: key sizes the card offers, SO PIN, the OpenSC 0.23 re-read."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

import PyKCS11

from tokenkeys.drivers.base import KeyHandle
from tokenkeys.drivers.pkcs11_keys import CURVE_PARAMS, key_id_for
from tokenkeys.drivers.smartcard_keys import (
    guard,
    map_error,
    read_public_key,
    read_public_key_fresh,
)
from tokenkeys.errors import KeyExists, MechanismUnsupported
from tokenkeys.types import KeySpec

if TYPE_CHECKING:
    from tokenkeys.drivers.smartcard import SmartcardToken

# Algorithm family -> (key-pair mechanism, CKK)
KEYGEN: dict[bool, tuple[int, int]] = {
    True: (PyKCS11.CKM_RSA_PKCS_KEY_PAIR_GEN, PyKCS11.CKK_RSA),
    False: (PyKCS11.CKM_EC_KEY_PAIR_GEN, PyKCS11.CKK_EC),
}
USAGE: dict[bool, tuple[list[tuple[int, bool]], list[tuple[int, bool]]]] = {
    # (public, private): a decryption key. RSA decrypts, EC derives (ECDH).
    True: ([(PyKCS11.CKA_ENCRYPT, True)], [(PyKCS11.CKA_DECRYPT, True)]),
    False: ([], [(PyKCS11.CKA_DERIVE, True)]),
}


def offered_sizes(token: SmartcardToken, mechanism: int) -> tuple[int, int] | None:
    try:
        info = token._lib.getMechanismInfo(token.card.slot, PyKCS11.CKM[mechanism])
    except PyKCS11.PyKCS11Error:
        return None
    return int(info.ulMinKeySize), int(info.ulMaxKeySize)


def _check_offered(token: SmartcardToken, spec: KeySpec) -> None:
    mech, _ = KEYGEN[spec.algorithm.is_rsa]
    sizes = offered_sizes(token, mech)
    offered = _offer_list(token)
    if sizes is None:
        raise MechanismUnsupported(f"{spec.algorithm.value} key generation", offered)
    bits = spec.algorithm.rsa_bits if spec.algorithm.is_rsa else int(spec.algorithm.value[-3:])
    if not sizes[0] <= bits <= sizes[1]:
        raise MechanismUnsupported(f"{spec.algorithm.value} key generation", offered)


def _offer_list(token: SmartcardToken) -> list[str]:
    out = []
    for name, (mech, _) in (("rsa", KEYGEN[True]), ("ec", KEYGEN[False])):
        sizes = offered_sizes(token, mech)
        if sizes:
            out.append(f"{name} {sizes[0]}-{sizes[1]} bits")
    return out


def _templates(spec: KeySpec, key_id: bytes) -> tuple[list[Any], list[Any]]:
    is_rsa = spec.algorithm.is_rsa
    _, ckk = KEYGEN[is_rsa]
    common = [(PyKCS11.CKA_TOKEN, True), (PyKCS11.CKA_ID, key_id), (PyKCS11.CKA_LABEL, spec.label),
              (PyKCS11.CKA_KEY_TYPE, ckk)]
    public = [*common, (PyKCS11.CKA_CLASS, PyKCS11.CKO_PUBLIC_KEY), *USAGE[is_rsa][0]]
    if is_rsa:
        public += [(PyKCS11.CKA_MODULUS_BITS, spec.algorithm.rsa_bits),
                   (PyKCS11.CKA_PUBLIC_EXPONENT, (0x01, 0x00, 0x01))]
    else:
        public.append((PyKCS11.CKA_EC_PARAMS, CURVE_PARAMS[spec.algorithm.curve]))
    private = [*common, (PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_PRIVATE, True),
               (PyKCS11.CKA_SENSITIVE, True), (PyKCS11.CKA_EXTRACTABLE, False), *USAGE[is_rsa][1]]
    return public, private


def generate(token: SmartcardToken, spec: KeySpec) -> KeyHandle:
    _check_offered(token, spec)
    target = token.profile.keygen_id
    if target is not None:
        existing = token._find(class_=PyKCS11.CKO_PUBLIC_KEY, id=target)
        if existing:
            # A bound consultation key must never be overwritten by mistake.
            raise KeyExists(
                f"card {token.card.label!r} already holds a key in slot {target.hex()}: "
                "erase it on purpose first (openpgp-tool --erase), tokenkeys never overwrites"
            )
    key_id = target or os.urandom(20)
    public_t, private_t = _templates(spec, key_id)
    mech = PyKCS11.Mechanism(KEYGEN[spec.algorithm.is_rsa][0])
    what = f"generating {spec.algorithm.value} on card {token.card.label!r}"

    def run() -> tuple[Any, Any]:
        pair: tuple[Any, Any] = guard(
            lambda: token.session().generateKeyPair(public_t, private_t, mecha=mech),
            what, _offer_list(token))
        return pair

    if token.profile.keygen_needs_so:
        pub, _ = token.as_so(run)
    else:
        try:
            pub, _ = token.session().generateKeyPair(public_t, private_t, mecha=mech)
        except PyKCS11.PyKCS11Error as exc:
            if exc.value != PyKCS11.CKR_USER_NOT_LOGGED_IN:
                raise map_error(exc, what, _offer_list(token)) from None
            pub, _ = token.as_so(run)  # the card wants the SO (admin) PIN
    public = None
    with contextlib.suppress(PyKCS11.PyKCS11Error):
        public = read_public_key(token.session(), pub)
    if public is None:
        # OpenSC 0.23 returns heap bytes after the modulus in this process, and
        # cannot use the new key until it reads the card again.
        token.reinitialise()
        found = token._find(class_=PyKCS11.CKO_PUBLIC_KEY, id=key_id)
        with contextlib.suppress(PyKCS11.PyKCS11Error):
            public = read_public_key(token.session(), found[0]) if found else None
    if public is None:
        public = read_public_key_fresh(token.module, token.card.serial, key_id)
    token.known_public[key_id] = public
    if target is None:
        # Cards that let us choose follow the other drivers: CKA_ID = SHA-1 of the key.
        new_id = key_id_for(public)
        for cls in (PyKCS11.CKO_PUBLIC_KEY, PyKCS11.CKO_PRIVATE_KEY):
            for obj in token._find(class_=cls, id=key_id):
                with contextlib.suppress(PyKCS11.PyKCS11Error):
                    token.session().setAttributeValue(obj, [(PyKCS11.CKA_ID, new_id)])
                    key_id = new_id
        token.known_public[key_id] = public
    return token.find_key(key_id=key_id)
