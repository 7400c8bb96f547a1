"""The audit row's envelope digest is computed while the envelope is opened (one
read of each input), and is the SHA-256 of the whole file, PEM armour included."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from tests.envelope.conftest import KeyPair
from tokenkeys.envelope import SealOptions, open_envelope, seal
from tokenkeys.registry import Registry
from tokenkeys.services import opening_batch
from tokenkeys.services.consultations import record_opening


@pytest.mark.parametrize("pem", [False, True])
def test_open_result_carries_the_file_digest(keys: dict[str, KeyPair], tmp_path: Path,
                                             pem: bool) -> None:
    env = tmp_path / "bid.p7m"
    seal(io.BytesIO(b"montant: 42 EUR\n" * 5000), env, [keys["p256"].cert], SealOptions(pem=pem))
    if pem:
        with env.open("ab") as f:
            f.write(b"\r\n\n")  # trailing blank lines after the armour
    result = open_envelope(env, tmp_path / "bid", [keys["p256"].identity()])
    assert result.sha256 == hashlib.sha256(env.read_bytes()).hexdigest()


def test_audit_row_uses_the_streamed_digest(keys: dict[str, KeyPair], tmp_path: Path) -> None:
    bids, out = tmp_path / "bids", tmp_path / "out"
    bids.mkdir()
    out.mkdir()
    seal(io.BytesIO(b"bid"), bids / "a.p7m", [keys["rsa"].cert], SealOptions())
    (bids / "junk.p7m").write_bytes(b"not an envelope")
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bids.iterdir()}
    results = [opening_batch.open_one(src, dst, [keys["rsa"].identity()])
               for src, dst in opening_batch.plan(opening_batch.collect_inputs([bids]), out)]
    assert {Path(r.input).name: r.status for r in results} == {"a.p7m": "opened",
                                                               "junk.p7m": "failed"}
    assert all("sha256" not in r.to_json() for r in results)  # the report is unchanged
    (bids / "a.p7m").unlink()  # not read again: the digest was taken while opening
    with Registry.open(str(tmp_path / "registry.sqlite")) as reg:
        reg.create_service("s")
        record_opening(reg, "s", None, "soft:/x", results)
        [row] = [r for r in reg.audit_rows() if r.event == "open"]
    recorded = {e["file"]: e["sha256"] for e in json.loads(row.details)["envelopes"]}
    assert recorded == digests
