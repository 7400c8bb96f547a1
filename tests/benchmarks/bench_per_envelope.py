"""Python time per small envelope, with a software key so that no device time is in it.

    .venv/bin/python tests/benchmarks/bench_per_envelope.py [--n 300] [--rounds 5]

N envelopes of 4 KB (AES-256-GCM, ECDH P-256) opened one after the other in one thread
through opening_files.open_one, in interleaved rounds:
- as shipped: outputs published in groups (one syncfs per group, opening_files.Publisher);
- one fsync per output, as before group commit;
- one fsync per output and the BER reader's buffer at 1 MB whatever the file (the
  previous main);
- the key agreement and AES-GCM alone (cryptography, no parsing, no file): the floor;
- the same as shipped for envelopes to an RSA-3072 key (RSAES-OAEP-SHA256, what a
  batch on an HSM opens), with its floor: the RSA decryption and AES-GCM alone.
Prints ms per envelope (min / median / max over rounds) and each row less the floor.

Run it on a settled disk: for a minute or two after another bench has deleted
thousands of files, ext4 spends up to 0.5 ms more per new file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF  # noqa: E402

from tests.cli.share_support import PIN, soft_store  # noqa: E402
from tokenkeys.config import Config  # noqa: E402
from tokenkeys.drivers import open_token  # noqa: E402
from tokenkeys.envelope import SealOptions, seal  # noqa: E402
from tokenkeys.envelope import open as envelope_open  # noqa: E402
from tokenkeys.files import CommitGroup  # noqa: E402
from tokenkeys.services import opening_batch  # noqa: E402
from tokenkeys.services.opening_files import Publisher, open_one  # noqa: E402
from tokenkeys.types import Secret, given_pin  # noqa: E402


def floor(n: int, plain: bytes) -> float:
    """ECDH + X9.63 KDF + AES-256-GCM over the same size, n times: seconds."""
    key = ec.generate_private_key(ec.SECP256R1())
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    nonce = b"\0" * 12
    sealed = AESGCM(b"k" * 32).encrypt(nonce, plain, None)
    start = time.perf_counter()
    for _ in range(n):
        shared = key.exchange(ec.ECDH(), peer)
        X963KDF(hashes.SHA256(), 32, None).derive(shared)
        AESGCM(b"k" * 32).decrypt(nonce, sealed, None)
    return time.perf_counter() - start


def rsa_floor(n: int, plain: bytes) -> float:
    """RSA-3072 OAEP-SHA256 decryption + AES-256-GCM over the same size, n times: seconds."""
    key = rsa.generate_private_key(65537, 3072)
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    wrapped = key.public_key().encrypt(b"k" * 32, oaep)
    nonce = b"\0" * 12
    sealed = AESGCM(b"k" * 32).encrypt(nonce, plain, None)
    start = time.perf_counter()
    for _ in range(n):
        AESGCM(key.decrypt(wrapped, oaep)).decrypt(nonce, sealed, None)
    return time.perf_counter() - start


def open_all(pairs: list[tuple[Path, Path]], keys: list[Any]) -> float:
    """open_one over the pairs, outputs published in groups: seconds."""
    start = time.perf_counter()
    publisher = Publisher(CommitGroup(), lambda _result: None)
    for src, dst in pairs:
        publisher.take(open_one(src, dst, keys, publisher.group))
    publisher.publish()
    return time.perf_counter() - start


def sealed_to(token: Any, plain: Path, bids: Path, n: int) -> tuple[list[Any], list[Path]]:
    """Log in, seal n envelopes of `plain` to the token's key into `bids`: (keys, inputs)."""
    token.login(given_pin(Secret(PIN)))
    keys = token.list_keys()
    cert = keys[0].certificate
    assert cert is not None
    bids.mkdir(exist_ok=True)
    for i in range(n):
        seal(plain, bids / f"bid-{i:04d}.p7m", [cert], SealOptions())
    return keys, opening_batch.collect_inputs([bids])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tk-bench-env-"))
    uri = soft_store(work / "ks", ("K", "ec-p256", False))
    rsa_uri = soft_store(work / "ks-rsa", ("R", "rsa3072", False))
    plain = b"offre " * 700  # about 4 KB
    (work / "plain").write_bytes(plain)
    bids = work / "bids"
    bids.mkdir()
    times: dict[str, list[float]] = {"as shipped": [], "fsync per output": [],
                                     "fsync per output, 1 MB reader buffer": [],
                                     "floor: ECDH + KDF + AES-GCM only": [],
                                     "RSA-3072 OAEP-SHA256, as shipped": [],
                                     "floor: RSA-OAEP decryption + AES-GCM only": []}
    shipped = (envelope_open.READ_BLOCK, envelope_open.MIN_READ_BLOCK)
    with open_token(uri, Config()) as token, open_token(rsa_uri, Config()) as rsa_token:
        keys, inputs = sealed_to(token, work / "plain", bids, args.n)
        rsa_keys, rsa_inputs = sealed_to(rsa_token, work / "plain", work / "rsa-bids", args.n)
        for r in range(args.rounds):
            for kind in times:
                if kind.startswith("floor"):
                    cost = rsa_floor if "RSA" in kind else floor
                    times[kind].append(cost(args.n, plain) / args.n)
                    continue
                envelope_open.MIN_READ_BLOCK = (envelope_open.READ_BLOCK if "1 MB" in kind
                                                else shipped[1])
                if kind.startswith("RSA"):
                    out = work / f"{r}-rsa"
                    out.mkdir()
                    times[kind].append(open_all(opening_batch.plan(rsa_inputs, out), rsa_keys)
                                       / args.n)
                    continue
                out = work / f"{r}-{list(times).index(kind)}"
                out.mkdir()
                pairs = opening_batch.plan(inputs, out)
                if kind == "as shipped":
                    times[kind].append(open_all(pairs, keys) / args.n)
                    continue
                start = time.perf_counter()
                for src, dst in pairs:
                    open_one(src, dst, keys)
                times[kind].append((time.perf_counter() - start) / args.n)
        envelope_open.MIN_READ_BLOCK = shipped[1]
    print(f"| one thread, {args.n} x 4 KB, {args.rounds} rounds | ms per envelope "
          "(min / median / max) | median less the floor |\n|---|---|---|")
    for kind, values in times.items():
        base = statistics.median(times["floor: RSA-OAEP decryption + AES-GCM only" if "RSA" in kind
                                       else "floor: ECDH + KDF + AES-GCM only"])
        ms = [v * 1000 for v in values]
        print(f"| {kind} | {min(ms):.3f} / {statistics.median(ms):.3f} / {max(ms):.3f} | "
              f"{(statistics.median(values) - base) * 1000:.3f} |")


if __name__ == "__main__":
    main()
