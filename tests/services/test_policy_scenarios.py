"""The key policy, in-process against the services, on both registry backends (SQLite and
a real PostgreSQL server), with a software keystore: bind once, backups recorded and
always recipients, seal and open through the consultation, the deletion guard, renewal.
tests/cli/test_policy.py drives the same rules once through the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.cli.share_support import PIN, soft_store
from tests.registry.conftest import soft_facts
from tokenkeys.config import Config
from tokenkeys.drivers import Token, open_token
from tokenkeys.errors import PolicyRefused
from tokenkeys.registry import Registry
from tokenkeys.services import consultations, key_inventory, keys, opening, opening_batch, sealing
from tokenkeys.types import Algorithm, PinSource, Secret


def _in_days(n: int) -> str:
    return (datetime.now(UTC) + timedelta(days=n)).strftime("%Y-%m-%d")


@pytest.fixture
def store(tmp_path: Path) -> str:
    return soft_store(tmp_path / "ks")


@contextmanager
def _opened(uri: str) -> Iterator[Token]:
    with open_token(uri, Config()) as token:
        token.login(PinSource(value=Secret(PIN), interactive=False))
        yield token


def _generate(reg: Registry, uri: str, name: str, *, days: int,
              backup: bool = False) -> None:
    key_inventory.generate(reg, "default", lambda: _opened(uri), name,
                           algorithm=Algorithm.EC_P256, days=days, backup=backup)


def test_bind_seal_open_and_guarded_delete(registry_location: str, store: str,
                                          tmp_path: Path) -> None:
    config = Config(registry=registry_location)
    with Registry.open(registry_location) as reg:
        _generate(reg, store, "BICLE-A", days=90)
        _generate(reg, store, "SECOURS", days=365, backup=True)
        made = consultations.create(reg, "default", "AO-1", "BICLE-A", closes=_in_days(30),
                                    title=None, no_backup=False)
        assert [b.designation for b in made.consultation.backups] == ["SECOURS"]
        with pytest.raises(PolicyRefused, match="a binding is never changed"):
            consultations.create(reg, "default", "AO-1", "SECOURS", closes=None, title=None,
                                 no_backup=True)
        with pytest.raises(PolicyRefused, match="is a backup key"):
            consultations.create(reg, "default", "AO-2", "SECOURS", closes=None, title=None,
                                 no_backup=False)
    bid = tmp_path / "offre.pdf"
    bid.write_bytes(b"%PDF offre" * 50)
    sealed = sealing.seal_file(config, bid, tmp_path / "plis" / "offre.pdf.p7m",
                               consultation="AO-1")
    assert sealed.key_transports == ("ecdh", "ecdh")
    pairs = opening_batch.plan([sealed.output], tmp_path / "ouverts")
    batch = opening.open_envelopes(config, pairs, outdir=tmp_path / "ouverts", token_uri=store,
                                   service="default", consultation="AO-1",
                                   pins=PinSource(value=Secret(PIN), interactive=False))
    assert batch.counts["opened"] == 1
    assert (tmp_path / "ouverts" / "offre.pdf").read_bytes() == bid.read_bytes()
    with Registry.open(registry_location) as reg, _opened(store) as token:
        for name in ("BICLE-A", "SECOURS"):  # the bound key and the recorded backup
            with pytest.raises(PolicyRefused, match="AO-1"):
                keys.delete(reg, token, token.find_key(label=name))
        reg.close_consultation("default", "AO-1")
        keys.delete(reg, token, token.find_key(label="BICLE-A"))
        assert [k.designation for k in reg.keys("default")] == ["SECOURS"]
        assert reg.verify_audit().ok


def test_expired_keys_and_renewed_backups(registry_location: str, store: str) -> None:
    with Registry.open(registry_location) as reg:
        long_ago = datetime.now(UTC) - timedelta(days=400)
        reg.add_key("default", soft_facts("OLD", days=30, start=long_ago), "adopt")
        with pytest.raises(PolicyRefused, match="expired"):
            consultations.create(reg, "default", "AO-OLD", "OLD", closes=None, title=None,
                                 no_backup=True)
        _generate(reg, store, "BICLE", days=90)
        with pytest.raises(PolicyRefused, match="before the closing date"):
            consultations.create(reg, "default", "AO-LATE", "BICLE", closes=_in_days(200),
                                 title=None, no_backup=True)
        with pytest.raises(PolicyRefused, match="no valid backup key"):
            consultations.create(reg, "default", "AO-1", "BICLE", closes=None, title=None,
                                 no_backup=False)
        _generate(reg, store, "SECOURS", days=90, backup=True)
        first = consultations.create(reg, "default", "AO-1", "BICLE", closes=None,
                                     title=None, no_backup=False).consultation
        with _opened(store) as token:
            renewed = keys.renew(reg, "default", token, reg.key("default", "SECOURS"),
                                 days=None, algorithm=None, name=None)
        assert renewed.backup and renewed.replaces_id is not None
        second = consultations.create(reg, "default", "AO-2", "BICLE", closes=None,
                                      title=None, no_backup=False).consultation
        # The first consultation keeps the backup it recorded; the second takes the new one.
        assert [b.designation for b in reg.consultation("default", "AO-1").backups] == \
            [b.designation for b in first.backups] == ["SECOURS"]
        assert [b.designation for b in second.backups] == [renewed.designation]
