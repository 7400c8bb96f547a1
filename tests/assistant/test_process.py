"""`tokenkeys assistant` as the user runs it: a process, approvals on its console
(--console), pairings listed and revoked with the CLI, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.assistant.conftest import PLATFORM, free_port
from tests.conftest import ROOT, SoftHSM

pytestmark = pytest.mark.softhsm


def test_console_approval_and_sigterm_leave_nothing_behind(softhsm: SoftHSM,
                                                           tmp_path: Path) -> None:
    port = free_port()
    label = softhsm.new_token("proc")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENKEYS_")}
    env.update({"SOFTHSM2_CONF": str(softhsm.conf), "PYTHONPATH": str(ROOT),
                "TOKENKEYS_TOKEN": softhsm.uri(label),
                "TOKENKEYS_REGISTRY": str(tmp_path / "registry.sqlite"),
                "TOKENKEYS_PAIRINGS": str(tmp_path / "pairings.json"),
                "XDG_CACHE_HOME": str(tmp_path / "cache"),
                "XDG_CONFIG_HOME": str(tmp_path / "config")})
    # A new session: no controlling terminal, so the console reads the PIN from stdin.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenkeys", "assistant", "--port", str(port), "--origin",
         PLATFORM, "--console"], env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    assert proc.stderr is not None and proc.stdin is not None
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")),  # type: ignore[union-attr]
                     daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    headers = {"Origin": PLATFORM, "X-Tokenkeys-Client": "1"}

    def wait_for(text: str) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = [line for line in list(lines) if text in line]
            if found:
                return found[-1]
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in {''.join(lines)}")

    try:
        wait_for("listening on")
        with httpx.Client(base_url=url, timeout=30) as http:
            http.post("/v1/pairing/start", json={}, headers=headers).raise_for_status()
            code = wait_for("Pairing code for").split(": ")[1].split()[0]
            token = http.post("/v1/pairing/confirm", json={"code": code},
                              headers=headers).json()["token"]
            headers["Authorization"] = f"Bearer {token}"
            answer = threading.Thread(target=lambda: (
                wait_for("wants to create the key pair CONSOLE"),
                proc.stdin.write("y\n123456\n"), proc.stdin.flush()))  # type: ignore[union-attr]
            answer.start()
            made = http.post("/v1/keys", json={"designation": "CONSOLE"}, headers=headers)
            answer.join()
            assert made.status_code == 201, made.text
        listed = subprocess.run([sys.executable, "-m", "tokenkeys", "--json", "assistant",
                                 "pairings", "list"], env=env, capture_output=True,
                                text=True, check=True)
        assert [p["origin"] for p in json.loads(listed.stdout)["pairings"]] == [PLATFORM]
        assert token not in listed.stdout
        subprocess.run([sys.executable, "-m", "tokenkeys", "assistant", "pairings", "revoke",
                        PLATFORM], env=env, check=True, capture_output=True)
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.get("/v1/keys", headers=headers).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, "".join(lines)
    wait_for("every opening session was closed")
    assert not list((tmp_path / "cache" / "tokenkeys").glob("assistant-*"))
