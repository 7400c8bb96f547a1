"""Audit checkpoints: a chain rebuilt by whoever owns the database no longer passes.

Each tampering below leaves a chain that `audit verify` alone accepts (a consistent
chain and head, as a database owner can write); the checkpoint, signed on a SoftHSM2
token before the tampering, catches it. Both registry backends; the tampering is
plain SQL, as the database's owner would write it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import TK
from tests.cli.test_registry_cli import _unlock, one_line_error, populate
from tests.registry.conftest import RawSql
from tokenkeys.registry import Registry
from tokenkeys.registry.audit import chain_hash, now_text


def _q(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _rows(location: str) -> list[Any]:
    with Registry.open(location) as reg:
        return reg.audit_rows()


def _forge(raw_sql: RawSql, prev: str, seq: int, at: str) -> str:
    """Append a row with a correct hash and move the head to it: no trigger stands in
    the way. Returns its hash."""
    fields = (seq, at, "officer", "ws1", "consultation-close", "default", "AO-1", "{}")
    digest = chain_hash(prev, *fields)
    raw_sql("INSERT INTO audit (seq, at, actor, host, event, service, subject, details, "
            f"prev_hash, hash) VALUES ({', '.join(map(_q, fields))}, {_q(prev)}, {_q(digest)})",
            f"UPDATE audit_head SET seq = {seq}, hash = {_q(digest)} WHERE id = 1")
    return digest


def _rehash(raw_sql: RawSql, location: str) -> None:
    """Recompute every hash from the rows' content and fix the head (needs the triggers
    off): the chain is consistent again."""
    prev = "0" * 64
    for r in _rows(location):
        digest = chain_hash(prev, r.seq, r.at, r.actor, r.host, r.event, r.service,
                            r.subject, r.details)
        raw_sql(f"UPDATE audit SET prev_hash = {_q(prev)}, hash = {_q(digest)} "
                f"WHERE seq = {r.seq}")
        prev = digest
        last = r.seq
    raw_sql(f"UPDATE audit_head SET seq = {last}, hash = {_q(prev)} WHERE id = 1")


def forged_append(raw_sql: RawSql, location: str, pg: bool) -> None:
    """A row claiming an event of yesterday, appended after today's checkpoint."""
    rows = _rows(location)
    _forge(raw_sql, rows[-1].hash, rows[-1].seq + 1,
           now_text(datetime.now(UTC) - timedelta(days=1)))


def truncated_tail(raw_sql: RawSql, location: str, pg: bool) -> None:
    _unlock(raw_sql, pg)
    rows = _rows(location)
    raw_sql("DELETE FROM audit WHERE seq >= 4",  # the consultation's closing, and after
            f"UPDATE audit_head SET seq = 3, hash = {_q(rows[2].hash)} WHERE id = 1")


def edited_before(raw_sql: RawSql, location: str, pg: bool) -> None:
    _unlock(raw_sql, pg)
    raw_sql("UPDATE audit SET actor = 'mallory' WHERE seq = 1")
    _rehash(raw_sql, location)


def tail_replaced(raw_sql: RawSql, location: str, pg: bool) -> None:
    """The last covered row removed and a forged one, dated now, put in its place."""
    _unlock(raw_sql, pg)
    rows = _rows(location)
    raw_sql("DELETE FROM audit WHERE seq >= 4")
    _forge(raw_sql, rows[2].hash, 4, now_text())


TAMPERING = {
    "forged row appended": (forged_append, "before the checkpoint was taken"),
    "truncated tail": (truncated_tail, "rows were removed (a truncated tail)"),
    "edited row before the checkpoint": (edited_before, "the log up to row 4 differs"),
    "last covered row replaced": (tail_replaced, "the log up to row 4 differs"),
}


def _audit_ca(rtk: TK, softhsm: Any, tmp_path: Path, name: str = "AUDIT-CA"
              ) -> tuple[str, Path]:
    """A CA on a fresh SoftHSM2 token, and its certificate exported as the trust file."""
    uri = softhsm.uri(softhsm.new_token("cp"))
    made = rtk("ca", "create", "--token", uri, "--name", name, "--algorithm", "ec-p256")
    assert made.code == 0, made.err
    trust = tmp_path / f"{name}.pem"
    assert rtk("ca", "export-cert", name, "-o", trust, "--token", uri).code == 0
    return uri, trust


def _checkpoint(rtk: TK, uri: str, out: Path, key: str = "AUDIT-CA") -> dict[str, Any]:
    run = rtk("--json", "audit", "checkpoint", "--token", uri, "--key", key, "-o", out)
    assert run.code == 0, run.err
    assert run.json["recorded"] is True
    document: dict[str, Any] = run.json["checkpoint"]
    return document


@pytest.mark.parametrize("how", list(TAMPERING))
def test_checkpoint_detects_a_rebuilt_chain(rtk: TK, softhsm: Any, registry_location: str,
                                             raw_sql: RawSql, tmp_path: Path, how: str) -> None:
    populate(registry_location)  # 4 rows
    uri, trust = _audit_ca(rtk, softhsm, tmp_path)
    cp = tmp_path / "checkpoint-1.pem"
    taken = _checkpoint(rtk, uri, cp)
    assert taken["rows"] == 4
    good = rtk("--json", "audit", "verify", "--checkpoint", cp, "--trust", trust)
    assert good.code == 0, good.err
    assert good.json["rows"] == 5 and good.json["checkpoints"][0]["rows"] == 4  # + its row

    tamper, message = TAMPERING[how]
    tamper(raw_sql, registry_location, registry_location.startswith("postgresql"))
    fooled = rtk("audit", "verify")  # the chain alone: what main had
    assert fooled.code == 0, fooled.err
    caught = rtk("audit", "verify", "--checkpoint", cp, "--trust", trust)
    one_line_error(caught, 14, message)
    assert f"checkpoint {cp} (row 4" in caught.err


def test_checkpoint_file_verifies_with_openssl_and_tampering_is_refused(
        tk: TK, softhsm: Any, tmp_path: Path) -> None:
    location = str(tmp_path / "registry.sqlite")
    populate(location)
    uri, trust = _audit_ca(tk, softhsm, tmp_path)
    cp = tmp_path / "cp.pem"
    taken = _checkpoint(tk, uri, cp)
    # The command docs/registry.md gives.
    done = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "PEM", "-in",
                           str(cp), "-CAfile", str(trust), "-purpose", "any"],
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["rows"] == taken["rows"] == 4
    assert payload["head_hash"] == taken["head_hash"] == _rows(location)[3].hash
    shown = tk("--json", "audit", "show", "--event", "checkpoint").json["rows"]
    assert [r["details"]["rows"] for r in shown] == [4]

    # The same bytes with one digit of the payload changed: the signature fails.
    text = cp.read_bytes()
    body = b"".join(line for line in text.splitlines()[1:-1])
    der = bytearray(base64.b64decode(body))
    where = bytes(der).index(b'"rows": 4')
    der[where + 8] = ord("9")
    altered = tmp_path / "altered.der"
    altered.write_bytes(bytes(der))
    one_line_error(tk("audit", "verify", "--checkpoint", altered, "--trust", trust), 14,
                   "its signature does not verify")
    # Someone else's CA, with a checkpoint of its own: signed, but not by the anchor.
    other_uri, other_trust = _audit_ca(tk, softhsm, tmp_path, "OTHER-CA")
    forged = tmp_path / "forged.pem"
    _checkpoint(tk, other_uri, forged, "OTHER-CA")
    one_line_error(tk("audit", "verify", "--checkpoint", forged, "--trust", trust), 14,
                   "is not in the trust file, nor issued by a CA there")
    assert tk("audit", "verify", "--checkpoint", forged, "--trust", other_trust).code == 0
    # No anchor at all: refused rather than trusting the certificate the file carries.
    one_line_error(tk("audit", "verify", "--checkpoint", cp), 2, "--trust CERT.pem")
    one_line_error(tk("audit", "verify", "--checkpoint", trust, "--trust", trust), 2,
                   "is not a tokenkeys audit checkpoint")
    # An existing output is refused before any PIN; --force replaces it.
    one_line_error(tk("audit", "checkpoint", "--token", uri, "--key", "AUDIT-CA", "-o", cp),
                   10, "already exists")
    assert tk("audit", "checkpoint", "--token", uri, "--key", "AUDIT-CA", "-o", cp,
               "--force").code == 0


def test_checkpoint_refuses_a_broken_chain(rtk: TK, softhsm: Any, registry_location: str,
                                           raw_sql: RawSql, tmp_path: Path) -> None:
    populate(registry_location)
    uri, _trust = _audit_ca(rtk, softhsm, tmp_path)
    _unlock(raw_sql, registry_location.startswith("postgresql"))
    raw_sql("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    out = tmp_path / "cp.pem"
    one_line_error(rtk("audit", "checkpoint", "--token", uri, "--key", "AUDIT-CA", "-o", out),
                   14, "no checkpoint was taken")
    assert not out.exists()


def _old_checkpoint(softhsm: Any, uri: str, location: str, out: Path, days: int) -> None:
    """A real checkpoint, signed on the token, that says it was taken `days` ago."""
    from tokenkeys.config import Config
    from tokenkeys.drivers import open_token
    from tokenkeys.services import audit_checkpoint
    from tokenkeys.types import PinSource, Secret

    config = Config(registry=location)
    head = audit_checkpoint.read_head(config)
    head = dataclasses.replace(head, at=now_text(datetime.now(UTC) - timedelta(days=days)))
    with open_token(uri, Config()) as token:
        token.login(PinSource(value=Secret(softhsm.pin), interactive=False))
        audit_checkpoint.write_checkpoint(config, token, "AUDIT-CA", head, out)


def test_doctor_warns_when_the_newest_checkpoint_is_old(tk: TK, softhsm: Any, tmp_path: Path,
                                                        cli_env: dict[str, str]) -> None:
    location = cli_env["TOKENKEYS_REGISTRY"]
    populate(location)
    uri, trust = _audit_ca(tk, softhsm, tmp_path)
    no_pin = {"TOKENKEYS_PIN": None}
    none = tk("--json", "doctor", env=no_pin)
    assert none.code == 0, none.json
    assert any("no audit checkpoint recorded in the registry" in n
               for n in none.json["notes"]), none.json

    # Eight days old, against the default limit of 7: a problem.
    kept = tmp_path / "offsite"
    kept.mkdir()
    _old_checkpoint(softhsm, uri, location, kept / "cp-old.pem", 8)
    late = tk("--json", "doctor", env=no_pin)
    assert late.code == 15
    assert [p for p in late.json["problems"] if "checkpoint" in p] == [
        next(p for p in late.json["problems"] if "recorded in the registry was taken on" in p
             and "more than 7 days ago" in p)], late.json
    _checkpoint(tk, uri, kept / "cp-new.pem")
    fresh = tk("--json", "doctor", env=no_pin)
    assert fresh.code == 0 and not fresh.json["problems"], fresh.json

    # With a checkpoint directory configured, only its files count (not the registry's
    # rows, which the database's owner controls), and only this registry's.
    config = tmp_path / "config.toml"
    env = {**no_pin, "TOKENKEYS_CONFIG": str(config)}
    config.write_text(f'audit_checkpoints = "{kept}"\naudit_trust = "{trust}"\n',
                      encoding="utf-8")
    (kept / "notes.txt").write_text("not a checkpoint")
    assert tk("doctor", env=env).code == 0
    (kept / "cp-new.pem").unlink()  # the registry still records it: not what counts here
    old = tk("--json", "doctor", env=env)
    assert any(f"in {kept} was taken on" in p for p in old.json["problems"]), old.json
    config.write_text(f'audit_checkpoints = "{kept}"\naudit_checkpoint_days = 30\n'
                      f'audit_trust = "{trust}"\n', encoding="utf-8")
    assert tk("doctor", env=env).code == 0
    # audit_trust from the configuration stands for --trust; a checkpoint dated before
    # its signer's certificate began is refused.
    one_line_error(tk("audit", "verify", "--checkpoint", kept / "cp-old.pem", env=env), 14,
                   "its signer's certificate was not valid at")
    _checkpoint(tk, uri, kept / "cp-new.pem")
    assert tk("audit", "verify", "--checkpoint", kept / "cp-new.pem", env=env).code == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    config.write_text(f'audit_checkpoints = "{empty}"\n', encoding="utf-8")
    moved = tk("--json", "doctor", env=env)
    assert any(f"no audit checkpoint in {empty}" in n for n in moved.json["notes"]), moved.json
