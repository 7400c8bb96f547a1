"""The assistant under Starlette's TestClient: the real application (guard, routes,
services, SoftHSM2 through the device lane), on the loopback address it would bind."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tokenkeys.assistant.server import build
from tokenkeys.assistant.settings import Settings
from tokenkeys.assistant.state import Assistant
from tokenkeys.config import Config

PLATFORM = "https://marches.example"
OTHER = "https://other-platform.example"
BASE = "http://127.0.0.1:8765"
OWN = "http://127.0.0.1:8765"


@dataclass
class Running:
    client: Any  # a TestClient, or an httpx.Client on a served assistant
    assistant: Assistant
    token: str | None = None
    answers: list[dict[str, Any]] = field(default_factory=list)

    def headers(self, origin: str = PLATFORM, *, token: str | None = None,
                kind: str = "application/json") -> dict[str, str]:
        out = {"Origin": origin, "X-Tokenkeys-Client": "1", "Content-Type": kind}
        token = token or self.token
        if token:
            out["Authorization"] = f"Bearer {token}"
        return out

    def pair(self, origin: str = PLATFORM) -> str:
        r = self.client.post("/v1/pairing/start", json={}, headers=self.headers(origin))
        assert r.status_code == 200, r.text
        code = self.assistant.desk.pending()[origin]
        r = self.client.post("/v1/pairing/confirm", json={"code": code},
                             headers=self.headers(origin))
        assert r.status_code == 200, r.text
        token: str = r.json()["token"]
        if origin == PLATFORM:
            self.token = token
        return token

    def ui(self, path: str, body: dict[str, Any]) -> Any:
        """A call from the assistant's own page (its origin, the launch secret)."""
        return self.client.post(path, json=body, headers={
            "Origin": self.assistant.settings.base_url, "X-Tokenkeys-Client": "1",
            "X-Tokenkeys-Secret":
            self.assistant.secret})

    def answering(self, approve: bool = True, pin: str | None = "123456",
                  count: int = 1) -> threading.Thread:
        """Answer the next `count` approvals through the assistant's own page, as the user
        would, in a thread (the API call that waits for them blocks)."""
        def work() -> None:
            deadline = time.monotonic() + 20
            done = 0
            while done < count and time.monotonic() < deadline:
                state = self.ui("/ui/api/state", {}).json()
                for request in state["approvals"]:
                    r = self.ui("/ui/api/answer", {"id": request["id"], "approve": approve,
                                                   "pin": pin})
                    self.answers.append({**request, "status": r.status_code})
                    done += 1
                time.sleep(0.05)
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        return thread

    def with_approval(self, call: Callable[[], Any], **answer: Any) -> Any:
        thread = self.answering(**answer)
        try:
            return call()
        finally:
            thread.join(20)


def make(tmp_path: Path, config: Config, **settings: Any) -> tuple[Any, Assistant]:
    chosen = Settings(origins=(PLATFORM, OTHER), pairings=tmp_path / "pairings.json",
                      workdir=tmp_path / "work", **settings)
    return build(chosen, config)


@contextmanager
def paired(tmp_path: Path, config: Config, **settings: Any) -> Iterator[Running]:
    """A running assistant (approvals answered within 10 s unless `settings` says
    otherwise) and a page of the platform paired with it."""
    settings.setdefault("approval_timeout", 10.0)
    app, assistant = make(tmp_path, config, **settings)
    with TestClient(app, base_url=BASE) as client:
        running = Running(client, assistant)
        running.pair()
        yield running


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(registry=str(tmp_path / "registry.sqlite"))


@pytest.fixture
def running(tmp_path: Path, config: Config) -> Iterator[Running]:
    app, assistant = make(tmp_path, config, approval_timeout=10.0)
    with TestClient(app, base_url=BASE) as client:
        yield Running(client, assistant)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def served(app: Any, port: int) -> Iterator[str]:
    """The application under a real uvicorn, in a thread of this process, on loopback."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
