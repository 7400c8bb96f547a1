"""Stress: a large mixed batch on SoftHSM2, one login, every outcome checked.

Short by default and in CI; `TOKENKEYS_STRESS=full` for the long run.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tokenkeys.config import Config
from tokenkeys.drivers import open_token
from tokenkeys.envelope import SealOptions, seal
from tokenkeys.services import opening_batch, token_keys
from tokenkeys.types import Algorithm, PinSource, Secret

FULL = os.environ.get("TOKENKEYS_STRESS") == "full"
N = 2000 if FULL else 120

pytestmark = pytest.mark.stress


@pytest.mark.parametrize("jobs", [1, 2])
def test_large_mixed_batch(softhsm: Any, tmp_path: Path, jobs: int) -> None:
    label = softhsm.new_token("stress")
    uri = softhsm.uri(label)
    pins = PinSource(value=Secret(softhsm.pin), interactive=False)
    certs: list[x509.Certificate] = []
    with open_token(uri, Config()) as token:
        token.login(pins)
        for name, alg in (("rsa", Algorithm.RSA2048), ("ec", Algorithm.EC_P256)):
            token_keys.generate_key(token, name, algorithm=alg, days=30)
            key = token.find_key(label=name)
            assert key.certificate is not None
            certs.append(key.certificate)
    other = certs[0]
    rng = random.Random(1234)
    bids = tmp_path / "bids"
    bids.mkdir()
    expected: dict[str, bytes | None] = {}
    plain = tmp_path / "plain"
    options = [SealOptions(), SealOptions(authenticated=False),
               SealOptions(key_transport="oaep-sha1"), SealOptions(use_ski=True, pem=True)]
    for i in range(N):
        data = rng.randbytes(rng.choice([0, 1, 15, 16, 17, 4096, 70_000]))
        plain.write_bytes(data)
        env = bids / f"bid-{i:05d}.p7m"
        opt = options[i % len(options)]
        seal(plain, env, [certs[i % 2]] if i % 5 else [other, certs[1]], opt)
        expected[f"bid-{i:05d}"] = data
        if i % 17 == 3 and opt.authenticated and not opt.pem:
            raw = bytearray(env.read_bytes())  # damage the end: tag and framing
            raw[-30] ^= 0x80
            env.write_bytes(bytes(raw))
            expected[f"bid-{i:05d}"] = None
    pairs = opening_batch.plan(opening_batch.collect_inputs([bids]), tmp_path / "out")
    results = opening_batch.open_batch(pairs, tmp_path / "out", uri, Config(), pins, jobs=jobs)
    assert len(results) == N
    for r in results:
        want = expected[Path(r.output).name]
        if want is None:
            assert r.status == "failed", r
            assert r.error_type in {"EnvelopeIntegrity", "EnvelopeMalformed"}, r
            assert not Path(r.output).exists()
        else:
            assert r.status == "opened", r
            assert Path(r.output).read_bytes() == want
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
