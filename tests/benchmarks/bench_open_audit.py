"""What the opening's audit costs: a batch opened with its two audit rows (the registry
opened, `open-start` before the PIN, `open` at the end: services.opening) against the
same batch opened bare (services.opening_batch.open_batch), side by side in one run.

    .venv/bin/python tests/benchmarks/bench_open_audit.py [--n 60] [--rounds 7]

In one process (import costs are not counted), with a software keystore so that the
device's time does not hide the registry's. Prints min / median / max per batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.cli.share_support import PIN, soft_store  # noqa: E402
from tokenkeys.config import Config  # noqa: E402
from tokenkeys.drivers import open_token  # noqa: E402
from tokenkeys.envelope import SealOptions, seal  # noqa: E402
from tokenkeys.services import opening, opening_batch  # noqa: E402
from tokenkeys.types import PinSource, Secret, given_pin  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tk-bench-audit-"))
    uri = soft_store(work / "ks", ("K", "ec-p256", False))
    with open_token(uri, Config()) as token:
        token.login(given_pin(Secret(PIN)))
        cert = token.find_key(label="K").certificate
    assert cert is not None
    bids = work / "bids"
    bids.mkdir()
    plain = work / "plain"
    plain.write_bytes(b"offre " * 700)  # about 4 KB
    for i in range(args.n):
        seal(plain, bids / f"bid-{i:03d}.p7m", [cert], SealOptions())
    config = Config(registry=str(work / "registry.sqlite"))
    pins = PinSource(value=Secret(PIN), interactive=False)
    times: dict[str, list[float]] = {"bare": [], "audited": []}
    for r in range(args.rounds):
        for kind in ("bare", "audited") if r % 2 else ("audited", "bare"):
            out = work / f"{kind}-{r}"
            pairs = opening_batch.plan(opening_batch.collect_inputs([bids]), out)
            start = time.perf_counter()
            if kind == "bare":
                done = opening_batch.open_batch(pairs, out, uri, config, pins)
            else:
                done = list(opening.open_envelopes(config, pairs, outdir=out, token_uri=uri,
                                                   service="default", pins=pins).results)
            times[kind].append(time.perf_counter() - start)
            assert sum(d.status == "opened" for d in done) == args.n
    print(f"{args.n} envelopes of 4 KB, software keystore (EC P-256), {args.rounds} rounds, "
          "interleaved\n")
    print("| batch | min | median | max |\n|---|---:|---:|---:|")
    for kind, runs in times.items():
        print(f"| {kind} | {min(runs):.3f} s | {statistics.median(runs):.3f} s | "
              f"{max(runs):.3f} s |")
    extra = statistics.median(times["audited"]) - statistics.median(times["bare"])
    print(f"\naudit rows cost {extra * 1000:.0f} ms per batch (median against median)")


if __name__ == "__main__":
    main()
