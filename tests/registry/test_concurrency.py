"""Two processes writing at once, and a process killed in the middle of a write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT, RawSql
from tests.registry.conftest import soft_facts
from tokenkeys.registry import Registry

EACH = 100 if os.environ.get("TOKENKEYS_STRESS") == "full" else 50  # per process


def _setup(location: str) -> None:
    with Registry.open(location) as reg:
        reg.add_key("default", soft_facts("K"), "generate")
        reg.add_key("default", soft_facts("B", backup=True), "generate")


def _worker(location: str, prefix: str, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.registry.worker", location, prefix,
                             str(count)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _consistent(location: str, raw_sql: RawSql) -> int:
    with Registry.open(location) as reg:
        verdict = reg.verify_audit()
        assert verdict.ok, verdict.problems
        made = reg.consultations("default")
        assert len(reg.audit_rows(event="consultation-create")) == len(made)
        assert all(len(c.backups) == 1 for c in made)
    if not location.startswith("postgresql"):
        assert raw_sql("PRAGMA integrity_check") == [("ok",)]
    return len(made)


def test_two_processes_create_consultations_at_once(registry_location: str,
                                                    raw_sql: RawSql) -> None:
    _setup(registry_location)
    workers = [_worker(registry_location, p, EACH) for p in ("A", "B")]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (out, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err
        assert "locked" not in err.lower() and "serializ" not in err.lower()
        assert len(out.split()) == EACH
    assert _consistent(registry_location, raw_sql) == 2 * EACH
    with Registry.open(registry_location) as reg:
        assert len(reg.audit_rows()) == 2 * EACH + 2


def test_two_processes_racing_for_the_same_references(registry_location: str,
                                                       raw_sql: RawSql) -> None:
    _setup(registry_location)
    workers = [_worker(registry_location, "SAME", 40) for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    refused = 0
    for w, (out, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err
        refused += out.count("refused")
    assert refused == 40
    assert _consistent(registry_location, raw_sql) == 40


def test_killed_in_the_middle_of_writes(registry_location: str, raw_sql: RawSql) -> None:
    _setup(registry_location)
    for round_ in range(3):
        worker = _worker(registry_location, f"R{round_}", 10_000)
        assert worker.stdout is not None
        for _ in range(5 + 7 * round_):  # a different moment each round
            assert worker.stdout.readline(), worker.stderr.read() if worker.stderr else ""
        time.sleep(0.003 * round_)
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=60)
        made = _consistent(registry_location, raw_sql)
        assert made >= 5
    # Killed for certain inside an open write transaction: nothing of it remains.
    worker = _worker(registry_location, "HANG", 1)
    assert worker.stdout is not None and worker.stdout.readline().strip() == "inside"
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=60)
    _consistent(registry_location, raw_sql)
    with Registry.open(registry_location) as reg:
        assert "half-written" not in [s.name for s in reg.services()]
        reg.record_event("share-import", subject="K", details={"after": "kill"})
        assert reg.verify_audit().ok


def test_first_use_by_four_processes_at_once(registry_location: str) -> None:
    code = ("import sys; from tokenkeys.registry import Registry; "
            "r = Registry.open(sys.argv[1]); r.create_service(sys.argv[2]); r.close()")
    procs = [subprocess.Popen([sys.executable, "-c", code, registry_location, f"s{n}"],
                              stderr=subprocess.PIPE, text=True) for n in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with Registry.open(registry_location) as reg:
        assert [s.name for s in reg.services()] == ["default", "s0", "s1", "s2", "s3"]
        assert reg.verify_audit().ok and len(reg.audit_rows()) == 4
