"""The assistant against the CLI, side by side in one run, on SoftHSM2.

    .venv/bin/python tests/benchmarks/bench_assistant.py [--n 1000] [--rounds 3] [--size-mb 1024]

1. N envelopes of 4 KB sealed to a consultation (RSA-3072 key on a throwaway SoftHSM2
   token, AES-256-GCM + RSAES-OAEP-SHA256, as bench_batch.py), opened:
   - by `tokenkeys open DIR -o OUT --token URI --consultation REF` (CLI end to end:
     process start, login, audit rows);
   - through the assistant (`tokenkeys assistant`, a separate process): one opening
     session (one approval, one PIN, answered through the assistant's own page API),
     then the N envelopes posted by 3 client threads, each plaintext read back. Timed
     from the session request to the last plaintext, and envelopes only.
   Rounds interleaved; min / median / max.
2. One envelope of SIZE MB streamed through a fresh assistant: peak RSS (VmHWM, reset
   with /proc/PID/clear_refs once the assistant is idle and warmed up) against its idle
   RSS, and the wall time; the plaintext is hashed as it streams back and checked.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "123456"  # throwaway token
TOKEN, KEY, REF = "bench", "bench-rsa3072", "BENCH-001"
ORIGIN = "https://marches.example"
THREADS = 3


def tokenkeys(*args: str | Path, env: dict[str, str] | None = None) -> str:
    return subprocess.run([sys.executable, "-m", "tokenkeys", *map(str, args)],
                          capture_output=True, text=True, check=True,
                          env=env or os.environ.copy()).stdout


def setup(base: Path, n: int) -> tuple[str, Path]:
    os.environ.update({"TOKENKEYS_PIN": PIN, "TOKENKEYS_SO_PIN": "12345678",
                       "TOKENKEYS_REGISTRY": str(base / "registry.sqlite"),
                       "TOKENKEYS_PAIRINGS": str(base / "pairings.json"),
                       "XDG_CACHE_HOME": str(base / "cache")})
    out = subprocess.run([str(ROOT / "softhsm-config" / "setup-tokens.sh"), str(base / "hsm"),
                          TOKEN], env={**os.environ, "PYTHON": sys.executable},
                         capture_output=True, text=True, check=True).stdout
    os.environ["SOFTHSM2_CONF"] = out.strip().split("=", 1)[1]
    uri = f"pkcs11:token={TOKEN}?module-path={SOFTHSM}"
    os.environ["TOKENKEYS_TOKEN"] = uri
    tokenkeys("key", "generate", "--token", uri, "--name", KEY, "--algorithm", "rsa3072")
    tokenkeys("consultation", "create", REF, "--key", KEY, "--no-backup")
    from tokenkeys.config import load_config
    from tokenkeys.services import sealing

    config = load_config()
    bids = base / "bids"
    bids.mkdir()
    plain = base / "plain.bin"
    for i in range(n):
        plain.write_bytes(os.urandom(4096))
        sealing.seal_file(config, plain, bids / f"bid-{i:05d}.bin.p7m", consultation=REF)
    return uri, bids


class Assistant:
    """`tokenkeys assistant` in its own process; approvals answered through its page API."""

    def __init__(self, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k != "TOKENKEYS_PIN"}
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tokenkeys", "assistant", "--port", str(port), "--origin",
             ORIGIN, "--max-body", str(4 * 1024**3)], env=env, stderr=subprocess.PIPE,
            text=True)
        self.secret = ""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "/ui#" in line:
                self.secret = line.strip().rsplit("#", 1)[1]
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stderr or []],
                         daemon=True).start()
        self.http = httpx.Client(base_url=self.url, timeout=600,
                                 limits=httpx.Limits(max_connections=THREADS + 2))
        for _ in range(100):
            try:
                self.http.get("/v1/status", headers={"Origin": ORIGIN})
                break
            except httpx.TransportError:
                time.sleep(0.05)
        self.token = self._pair()
        self.approvals = 0

    def ui(self, path: str, body: dict[str, Any]) -> Any:
        r = self.http.post(path, json=body, headers={
            "Origin": self.url, "X-Tokenkeys-Client": "1", "X-Tokenkeys-Secret": self.secret})
        r.raise_for_status()
        return r.json()

    def headers(self, kind: str = "application/json") -> dict[str, str]:
        return {"Origin": ORIGIN, "X-Tokenkeys-Client": "1", "Content-Type": kind,
                **({"Authorization": f"Bearer {self.token}"} if getattr(self, "token", None)
                   else {})}

    def _pair(self) -> str:
        self.http.post("/v1/pairing/start", json={}, headers=self.headers()).raise_for_status()
        [pending] = self.ui("/ui/api/state", {})["codes"]
        r = self.http.post("/v1/pairing/confirm", json={"code": pending["code"]},
                           headers=self.headers())
        r.raise_for_status()
        token: str = r.json()["token"]
        return token

    def _approve_next(self) -> None:
        while True:
            for request in self.ui("/ui/api/state", {})["approvals"]:
                self.ui("/ui/api/answer", {"id": request["id"], "approve": True, "pin": PIN})
                self.approvals += 1
                return
            time.sleep(0.01)

    def session(self, count: int) -> str:
        approver = threading.Thread(target=self._approve_next)
        approver.start()
        r = self.http.post("/v1/openings", json={"consultation": REF, "count": count},
                           headers=self.headers())
        approver.join()
        r.raise_for_status()
        session: str = r.json()["session"]
        return session

    def open(self, session: str, envelope: bytes) -> bytes:
        r = self.http.post(f"/v1/openings/{session}/envelopes", content=envelope,
                           headers=self.headers("application/octet-stream"))
        r.raise_for_status()
        return r.content

    def close(self, session: str) -> None:
        r = self.http.request("DELETE", f"/v1/openings/{session}", json={},
                              headers=self.headers())
        if r.status_code != 410:  # 410: its count was reached, the assistant closed it
            r.raise_for_status()

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def time_cli(uri: str, bids: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    tokenkeys("open", bids, "-o", out, "--token", uri, "--consultation", REF)
    return time.perf_counter() - start


def time_assistant(a: Assistant, envelopes: list[bytes]) -> tuple[float, float]:
    start = time.perf_counter()
    session = a.session(len(envelopes))
    first = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        sizes = list(pool.map(lambda e: len(a.open(session, e)), envelopes))
    end = time.perf_counter()
    a.close(session)
    assert sizes == [4096] * len(envelopes)
    return end - start, end - first


def large(base: Path, size_mb: int) -> dict[str, float]:
    from tokenkeys.config import load_config
    from tokenkeys.services import sealing

    plain = base / "large.bin"
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    with plain.open("wb") as f:
        for _ in range(size_mb):
            f.write(block)
            digest.update(block)
    envelope = base / "large.bin.p7m"
    sealing.seal_file(load_config(), plain, envelope, consultation=REF)
    plain.unlink()
    a = Assistant(free_port())
    try:
        warm = a.session(1)  # warmed up: every module of an opening is loaded
        a.open(warm, (base / "bids" / "bid-00000.bin.p7m").read_bytes())
        a.close(warm)
        time.sleep(0.5)
        idle = a.status("VmRSS")
        Path(f"/proc/{a.proc.pid}/clear_refs").write_text("5")  # resets VmHWM
        session = a.session(1)

        def chunks() -> Iterator[bytes]:
            with envelope.open("rb") as f:
                while chunk := f.read(1024 * 1024):
                    yield chunk

        got = hashlib.sha256()
        start = time.perf_counter()
        with a.http.stream("POST", f"/v1/openings/{session}/envelopes", content=chunks(),
                           headers=a.headers("application/octet-stream")) as r:
            r.raise_for_status()
            for piece in r.iter_bytes(1024 * 1024):
                got.update(piece)
        wall = time.perf_counter() - start
        peak = a.status("VmHWM")
        a.close(session)
        assert got.hexdigest() == digest.hexdigest(), "the plaintext differs"
        return {"idle": idle / 2**20, "peak": peak / 2**20, "wall": wall,
                "approvals": a.approvals}
    finally:
        a.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="tk-bench-assistant-"))
    try:
        uri, bids = setup(base, args.n)
        envelopes = [p.read_bytes() for p in sorted(bids.iterdir())]
        a = Assistant(free_port())
        rates: dict[str, list[float]] = {"cli": [], "assistant": [], "assistant-envelopes": []}
        try:
            for r in range(args.rounds):
                for kind in ("cli", "assistant") if r % 2 == 0 else ("assistant", "cli"):
                    if kind == "cli":
                        rates["cli"].append(args.n / time_cli(uri, bids, base / f"out-{r}"))
                    else:
                        whole, only = time_assistant(a, envelopes)
                        rates["assistant"].append(args.n / whole)
                        rates["assistant-envelopes"].append(args.n / only)
            approvals = a.approvals
        finally:
            a.stop()
        print(f"{args.n} envelopes of 4 KB, RSA-3072 on SoftHSM2, {args.rounds} rounds, "
              f"interleaved; {approvals} approvals for {args.rounds} sessions\n")
        print("| what | envelopes/s (min / median / max) | x CLI (median) |\n|---|---|---|")
        cli = statistics.median(rates["cli"])
        labels = {"cli": "`tokenkeys open --consultation` (CLI end to end)",
                  "assistant": "assistant: session request (approval, login) to last plaintext",
                  "assistant-envelopes": "assistant: envelopes only"}
        for kind, runs in rates.items():
            print(f"| {labels[kind]} | {min(runs):.0f} / {statistics.median(runs):.0f} / "
                  f"{max(runs):.0f} | {statistics.median(runs) / cli:.2f} |")
        if args.size_mb:
            big = large(base, args.size_mb)
            print(f"\none envelope of {args.size_mb} MB through the assistant: "
                  f"{big['wall']:.2f} s ({args.size_mb / big['wall']:.0f} MB/s), idle RSS "
                  f"{big['idle']:.1f} MB, peak RSS {big['peak']:.1f} MB "
                  f"(+{big['peak'] - big['idle']:.1f} MB), {big['approvals']:.0f} approvals")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
