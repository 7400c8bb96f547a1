"""services/opening.open_envelopes in-process, on SoftHSM2: the start row exists before
the PIN is tried and before the first decryption; a batch that raises still gets
its end row, naming the error and what finished."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import token_with_key
from tokenkeys import files
from tokenkeys.config import Config
from tokenkeys.envelope import SealOptions, seal
from tokenkeys.errors import PinIncorrect, RegistryReadOnly, RegistryUnavailable
from tokenkeys.registry import AuditRow, Registry
from tokenkeys.services import access, consultations, opening, opening_batch
from tokenkeys.services.opening_audit import AuditSide
from tokenkeys.services.opening_batch import FileResult
from tokenkeys.types import PinSource, Secret

ENVELOPES = 12


@pytest.fixture(scope="module")
def sealed(softhsm: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    uri, cert = token_with_key(softhsm, "opening")
    bids = tmp_path_factory.mktemp("bids")
    for i in range(ENVELOPES):
        plain = bids.parent / "plain"
        plain.write_bytes(b"offre %d\n" % i * 200)
        seal(plain, bids / f"bid-{i:02d}.txt.p7m", [cert], SealOptions())
    return uri, bids


def pins(pin: str) -> PinSource:
    return PinSource(value=Secret(pin), interactive=False)


def run(config: Config, sealed: tuple[str, Path], out: Path, pin: str,
        **options: Any) -> opening.OpenedBatch:
    uri, bids = sealed
    found, unopened = opening_batch.collect([bids])
    return opening.open_envelopes(config, opening_batch.plan(found, out), outdir=out, token_uri=uri,
                                  service="default", pins=pins(pin), unopened=unopened,
                                  **options)


def audit(config: Config) -> list[AuditRow]:
    with Registry.open(config.registry) as reg:
        return reg.audit_rows()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(registry=str(tmp_path / "registry.sqlite"))


def test_wrong_pin_start_row_then_end_row_with_the_error(config: Config, softhsm: Any,
                                                          sealed: tuple[str, Path],
                                                          tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(PinIncorrect):
        run(config, sealed, out, "654321")
    assert not out.exists()
    start, end = audit(config)
    assert (start.event, end.event) == ("open-start", "open")
    planned = json.loads(start.details)
    assert planned["token"] == sealed[0] and planned["outdir"] == str(out)
    assert planned["envelopes"] == [
        {"file": f"bid-{i:02d}.txt.p7m", "output": str(out / f"bid-{i:02d}.txt")}
        for i in range(ENVELOPES)]
    ended = json.loads(end.details)
    assert ended["batch"] == planned["batch"] and len(ended["batch"]) == 32
    assert (ended["error"], ended["left"], ended["envelopes"]) == ("PinIncorrect", ENVELOPES, [])
    assert softhsm.pin not in start.details + end.details
    assert "654321" not in start.details + end.details


def test_start_row_is_there_before_the_first_output(config: Config, softhsm: Any,
                                                    sealed: tuple[str, Path],
                                                    tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def on_result(result: FileResult) -> None:
        if not seen:  # the first envelope is opened: what does the registry hold?
            seen.append([r.event for r in audit(config)])

    done = run(config, sealed, tmp_path / "out", softhsm.pin, on_result=on_result)
    assert seen == [["open-start"]]
    assert done.counts == {"opened": ENVELOPES, "skipped": 0, "failed": 0}
    start, end = audit(config)
    assert json.loads(start.details)["batch"] == json.loads(end.details)["batch"] \
        == done.batch_id
    assert "error" not in json.loads(end.details)

    # A rerun finds every output: it records them, with their envelopes' digests.
    again = run(config, sealed, tmp_path / "out", softhsm.pin)
    assert again.counts == {"opened": 0, "skipped": ENVELOPES, "failed": 0}
    ended = json.loads(audit(config)[-1].details)
    assert ended["skipped"] == ENVELOPES and {
        e["file"]: e["sha256"] for e in ended["envelopes"]} == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sealed[1].iterdir()}


@pytest.mark.parametrize("jobs", [1, 2])
def test_interrupted_batch_records_what_finished(config: Config, softhsm: Any,
                                                 sealed: tuple[str, Path], tmp_path: Path,
                                                 jobs: int) -> None:
    out = tmp_path / "out"
    calls = 0

    def interrupt(_result: FileResult) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt  # Ctrl-C while envelopes are being opened

    with pytest.raises(KeyboardInterrupt):
        run(config, sealed, out, softhsm.pin, on_result=interrupt, jobs=jobs)
    start, end = audit(config)
    ended = json.loads(end.details)
    assert ended["error"] == "KeyboardInterrupt" and ended["batch"] == json.loads(
        start.details)["batch"]
    recorded = {e["file"].removesuffix(".p7m") for e in ended["envelopes"]
                if e["status"] == "opened"}
    assert len(recorded) >= 3 and ended["left"] == ENVELOPES - len(ended["envelopes"])
    # Every output written, also by envelopes that finished after the interrupt, is
    # in the end row (with --jobs, at least in the start row: workers may outrun it).
    on_disk = {p.name for p in out.iterdir()}
    if jobs == 1:
        assert on_disk == recorded
    else:
        assert recorded <= on_disk


def test_unusable_registry_stops_before_the_token(sealed: tuple[str, Path],
                                                  tmp_path: Path) -> None:
    where = tmp_path / "registry.sqlite"
    where.mkdir()
    out = tmp_path / "out"
    # A token that does not exist: reaching it would raise TokenNotFound instead.
    with pytest.raises(RegistryUnavailable):
        opening.open_envelopes(Config(registry=str(where)), [(sealed[1] / "x.p7m", out / "x")],
                               outdir=out, token_uri="pkcs11:token=nowhere",
                               service="default", pins=pins("654321"))
    assert not out.exists()


def test_end_row_failure_never_hides_the_batch_error(config: Config, sealed: tuple[str, Path],
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The registry fails between the two rows (e.g. its disk filled up meanwhile).
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise RegistryReadOnly("the registry is read-only now")

    monkeypatch.setattr(consultations, "record_opening", refuse)
    with pytest.raises(PinIncorrect) as raised:
        run(config, sealed, tmp_path / "out", "654321")
    assert "could not be recorded: RegistryReadOnly" in "".join(raised.value.__notes__)
    assert [r.event for r in audit(config)] == ["open-start"]


def test_outputs_are_synced_in_groups_and_reported_once_visible(
        config: Config, softhsm: Any, sealed: tuple[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One fsync per output cost about 3 ms each on this VM: the batch syncs its outputs
    in groups (files.CommitGroup), and each result is reported only once its output
    is in place."""
    syncs: list[int] = []
    real = files._sync_files

    def counted(fds: list[int], directories: Any = frozenset()) -> None:
        syncs.append(len(fds))
        real(fds, directories)

    def visible_when_reported(result: FileResult) -> None:
        assert result.status == "opened" and Path(result.output).is_file()

    monkeypatch.setattr(files, "_sync_files", counted)
    done = run(config, sealed, tmp_path / "out", softhsm.pin,
               on_result=visible_when_reported)
    assert done.counts["opened"] == ENVELOPES
    data_syncs = [n for n in syncs if n]
    assert sum(data_syncs) == ENVELOPES and len(data_syncs) < ENVELOPES / 2, syncs


def test_registry_opens_on_its_own_thread_while_the_token_is_found(
        config: Config, softhsm: Any, sealed: tuple[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing SQLAlchemy and opening the registry (about 0.2 s) overlap finding the
    token; the start row still comes before the PIN (the other tests here)."""
    token_opened = threading.Event()
    real_open_token, real_open_registry = opening_batch.open_token, access.open_registry
    threads: list[str] = []

    def open_token(*args: Any, **kwargs: Any) -> Any:
        token_opened.set()
        return real_open_token(*args, **kwargs)

    def open_registry(cfg: Config) -> Registry:
        threads.append(threading.current_thread().name)
        assert token_opened.wait(10), "the token is only looked for once the registry is open"
        return real_open_registry(cfg)

    monkeypatch.setattr(opening_batch, "open_token", open_token)
    monkeypatch.setattr(access, "open_registry", open_registry)
    done = run(config, sealed, tmp_path / "out", softhsm.pin)
    assert threads == ["tokenkeys-audit"] and done.counts["opened"] == ENVELOPES
    assert [r.event for r in audit(config)] == ["open-start", "open"]


def test_jobs_workers_start_before_the_login(config: Config, softhsm: Any,
                                             sealed: tuple[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With --jobs, the worker processes are already starting when the parent logs in
    (their interpreter start overlaps it); they get the PIN only after that login."""
    import multiprocessing

    from tokenkeys.services import login as login_service

    real_login, seen = login_service.login, []

    def login(*args: Any, **kwargs: Any) -> Any:
        seen.append(len(multiprocessing.active_children()))
        return real_login(*args, **kwargs)

    monkeypatch.setattr(login_service, "login", login)
    done = run(config, sealed, tmp_path / "out", softhsm.pin, jobs=2)
    assert seen == [2] and done.counts["opened"] == ENVELOPES
    assert multiprocessing.active_children() == []


def test_workers_stop_when_the_audit_side_is_gone_before_the_batch(
        config: Config, sealed: tuple[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's side died before it got the batch: the error is the registry's,
    and the --jobs workers already started do not outlive the call."""
    started: list[Any] = []
    real = opening_batch.start_workers

    def spied(*args: Any) -> Any:
        started.append(real(*args))
        return started[-1]

    monkeypatch.setattr(opening_batch, "start_workers", spied)
    gone = AuditSide(config)
    gone.close()  # its side has left: begin() cannot reach it
    with pytest.raises(RegistryUnavailable, match="the audit process stopped"):
        run(config, sealed, tmp_path / "out", "654321", jobs=2, audit=gone)
    (workers,) = started
    assert workers is not None and not any(p.is_alive() for p in workers._pool._pool)
    assert not (tmp_path / "out").exists()
