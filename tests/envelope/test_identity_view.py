"""IdentityView.of keeps an identity's facts while the identity lives, and only while
its key and certificate are the same objects."""

from __future__ import annotations

import pytest

from tokenkeys.envelope import identity_view
from tokenkeys.envelope.identity import SoftwareIdentity
from tokenkeys.envelope.identity_view import IdentityView

from .conftest import KeyPair


def test_facts_are_computed_once_per_identity(keys: dict[str, KeyPair],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = identity_view.ski_of

    def counted(public_key: object) -> bytes:
        calls.append(public_key)
        return real(public_key)  # type: ignore[arg-type]

    monkeypatch.setattr(identity_view, "ski_of", counted)
    identity = SoftwareIdentity(keys["rsa"].key, keys["rsa"].cert)
    first, second = IdentityView.of(identity), IdentityView.of(identity)
    assert len(calls) == 1
    assert (first.issuer, first.serial, first.skis) == (second.issuer, second.serial,
                                                        second.skis)
    assert second.identity is identity and second.serial == keys["rsa"].cert.serial_number

    identity.certificate = keys["rsa2"].cert  # another certificate: computed again
    third = IdentityView.of(identity)
    assert len(calls) == 2 and third.serial == keys["rsa2"].cert.serial_number
    other = SoftwareIdentity(keys["rsa"].key, keys["rsa"].cert)
    IdentityView.of(other)
    assert len(calls) == 3
