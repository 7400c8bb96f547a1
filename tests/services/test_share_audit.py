"""The share workflows' audit call site: called with facts only, before anything is
committed, so a refused audit append leaves no file and no key behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.share_support import PASSPHRASE, PIN, soft_store
from tokenkeys.drivers.software import SoftwareToken
from tokenkeys.errors import PolicyRefused
from tokenkeys.services import share, share_copy
from tokenkeys.types import Secret, given_pin


def _open(uri: str) -> SoftwareToken:
    token = SoftwareToken(Path(uri.removeprefix("soft:")).resolve())
    token.login(given_pin(Secret(PIN)))
    return token


def _refuse(event: share.ShareEvent) -> None:
    raise PolicyRefused("the registry refuses")


def test_events_and_refusals(tmp_path: Path) -> None:
    events: list[share.ShareEvent] = []
    src = _open(soft_store(tmp_path / "src", ("K", "ec-p256", True)))
    dst_dir = tmp_path / "dst"
    dst = _open(soft_store(dst_dir))
    secret = lambda: Secret(PASSPHRASE)  # noqa: E731
    out = tmp_path / "k.p12"

    with pytest.raises(PolicyRefused):
        share.export_pkcs12(src, "K", out, secret, audit=_refuse)
    assert not out.exists() and list(tmp_path.glob("*.part")) == []

    share.export_pkcs12(src, "K", out, secret, audit=events.append)
    before = sorted(p.name for p in dst_dir.iterdir())
    with pytest.raises(PolicyRefused):
        share.import_pkcs12(dst, out, secret, name="K", audit=_refuse)
    with pytest.raises(PolicyRefused):
        share_copy.copy_key(src, "K", dst, audit=_refuse)
    assert sorted(p.name for p in dst_dir.iterdir()) == before

    share.import_pkcs12(dst, out, secret, name="K", audit=events.append)
    assert [(e.event, e.key.label) for e in events] == [("share-export", "K"),
                                                         ("share-import", "K")]
    assert events[1].token is dst and events[1].key.certificate is not None
    assert all(PASSPHRASE not in repr(e.details) and PIN not in repr(e.details)
               for e in events)
    src.close()
    dst.close()
