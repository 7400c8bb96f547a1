"""Issue 16, items 5 to 7 on SoftHSM2, whose C_SetAttributeValue rewrites an object's file
in place (a kill inside that write empties the object): a key's only in-place rename is
its private key's, before the registry commit; after it the public key and certificate
take the name by new copies, and a lost one is rebuilt."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cli.conftest import SOFTHSM_MODULE
from tests.cli.crash_support import complete, token_objects
from tokenkeys.config import Config
from tokenkeys.drivers import open_token
from tokenkeys.drivers.p11 import ck
from tokenkeys.drivers.p11.pykcs11 import PyKcs11Session
from tokenkeys.drivers.p11.python_pkcs11 import PyPkcs11Session
from tokenkeys.services import interrupted, keygen, token_keys
from tokenkeys.types import Algorithm, PinSource, Secret


def _logged_in(softhsm: Any, label: str) -> Any:
    tok = open_token(softhsm.uri(label), Config())
    tok.__enter__()
    tok.login(PinSource(value=Secret(softhsm.pin), interactive=False))
    return tok


def test_after_the_commit_nothing_is_rewritten_in_place(
        softhsm: Any, token_label: str, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[tuple[str, bool]] = []  # (new label, after the commit?)
    committed = False
    for cls in (PyPkcs11Session, PyKcs11Session):
        real = cls.set

        def spy(self: Any, obj: Any, template: dict[int, Any], real: Any = real) -> None:
            writes.append((template.get(ck.CKA_LABEL, "(no label)"), committed))
            real(self, obj, template)

        monkeypatch.setattr(cls, "set", spy)

    def commit(key: Any) -> None:
        nonlocal committed
        assert [o.label for o in token_objects(SOFTHSM_MODULE, token_label, env)
                if o.label == "K"] == ["K"]  # the private key alone has its name
        committed = True

    env = {"SOFTHSM2_CONF": str(softhsm.conf), "TOKENKEYS_PIN": softhsm.pin,
           "PATH": "/usr/bin:/bin"}
    tok = _logged_in(softhsm, token_label)
    try:
        token_keys.generate_key(tok, "K", algorithm=Algorithm.EC_P256, commit=commit,
                                recorded=lambda key_id: committed)
    finally:
        tok.__exit__(None, None, None)
    assert committed and writes and not [w for w in writes if w[1]], writes
    assert ("K", False) in writes  # the private key, renamed before the commit
    objects = token_objects(SOFTHSM_MODULE, token_label, env)
    assert len(objects) == 3 and complete(objects, "K") is not None


@pytest.mark.parametrize("lost", ["public", "certificate"])
def test_finishing_a_recorded_key_rebuilds_a_lost_object(
        softhsm: Any, token_label: str, lost: str) -> None:
    """A recorded key whose public key or certificate is gone (as after an object
    emptied by a kill) is made whole: the public key from the key's certificate, the
    certificate from the one the registry keeps."""
    env = {"SOFTHSM2_CONF": str(softhsm.conf), "TOKENKEYS_PIN": softhsm.pin,
           "PATH": "/usr/bin:/bin"}
    tok = _logged_in(softhsm, token_label)
    try:
        seen: list[Any] = []

        def stop(key: Any) -> None:  # recorded, then the run dies before the naming
            seen.append(key.certificate)
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            token_keys.generate_key(tok, "K", algorithm=Algorithm.EC_P256, commit=stop,
                                    recorded=lambda key_id: True)
        cls = ck.CKO_PUBLIC_KEY if lost == "public" else ck.CKO_CERTIFICATE
        key = tok.find_key(label="K")
        for obj in tok.find({ck.CKA_CLASS: cls, ck.CKA_ID: key.id}):
            tok.session().destroy(obj)
        assert keygen.unfinished(tok, key.id)  # the other one is still provisional
        interrupted.finish(tok, key, seen[0])
        assert not keygen.unfinished(tok, key.id)
    finally:
        tok.__exit__(None, None, None)
    objects = token_objects(SOFTHSM_MODULE, token_label, env)
    assert len(objects) == 3 and complete(objects, "K") is not None
