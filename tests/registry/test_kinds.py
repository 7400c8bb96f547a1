"""Envelope kinds a key can open, and the key transport `seal --consultation` picks."""

from __future__ import annotations

import pytest

from tokenkeys import keyalg
from tokenkeys.cli.envelope_cmds import KEY_TRANSPORTS
from tokenkeys.errors import PolicyRefused
from tokenkeys.services.envelope_kinds import (
    TRANSPORT_PREFERENCE,
    choose_key_transport,
    envelope_kinds,
)

OPENPGP_CARD = {"RSA_PKCS", "RSA_PKCS_KEY_PAIR_GEN", "ECDH1_DERIVE", "ECDSA"}
SOFTHSM = {"RSA_PKCS", "RSA_X_509", "RSA_PKCS_OAEP", "ECDH1_DERIVE", "RSA_PKCS_KEY_PAIR_GEN"}


def test_kinds_per_device() -> None:
    assert envelope_kinds("rsa", OPENPGP_CARD) == ("pkcs1v15",)
    assert envelope_kinds("rsa", SOFTHSM) == (
        "oaep-sha1", "oaep-sha256", "oaep-sha384", "oaep-sha512", "pkcs1v15")
    assert envelope_kinds("rsa", {"RSA_PKCS_OAEP"}) == ("oaep-sha1",)
    assert envelope_kinds("ec", SOFTHSM) == ("ecdh",)
    assert envelope_kinds("ec", {"RSA_PKCS"}) == ()


def test_transport_every_recipient_can_open() -> None:
    hsm = ("BICLE", envelope_kinds("rsa", SOFTHSM))
    card = ("CARTE", envelope_kinds("rsa", OPENPGP_CARD))
    ec_key = ("EC", ("ecdh",))
    assert choose_key_transport([hsm, ec_key], None) == "oaep-sha256"
    assert choose_key_transport([hsm, card], None) == "pkcs1v15"
    assert choose_key_transport([hsm], "oaep-sha512") == "oaep-sha512"
    with pytest.raises(PolicyRefused, match="cannot be opened by CARTE"):
        choose_key_transport([hsm, card], "oaep-sha256")
    with pytest.raises(PolicyRefused, match="no key transport"):
        choose_key_transport([hsm, ("NONE", ())], None)


def test_one_vocabulary_of_key_transports() -> None:
    """keyalg names the transports; the kinds, seal's preference and the CLI use them."""
    assert sorted(TRANSPORT_PREFERENCE) == sorted(keyalg.KEY_TRANSPORTS)
    assert envelope_kinds("rsa", SOFTHSM) == keyalg.KEY_TRANSPORTS
    assert TRANSPORT_PREFERENCE[0] == keyalg.DEFAULT_KEY_TRANSPORT
    assert sorted(KEY_TRANSPORTS) == sorted(keyalg.KEY_TRANSPORTS)
    assert KEY_TRANSPORTS[0] == keyalg.DEFAULT_KEY_TRANSPORT
