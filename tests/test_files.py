"""write_atomic: the small-file face of the one atomic writer (AtomicOutput)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenkeys import files
from tokenkeys.errors import OutputExists


@pytest.fixture(params=["unnamed", "named"])
def writer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "named":  # as where the kernel offers no O_TMPFILE
        monkeypatch.setattr(files, "_O_TMPFILE", 0)
    return str(request.param)


def test_write_atomic_mode_and_overwrite(tmp_path: Path, writer: str) -> None:
    target = tmp_path / "cert.pem"
    files.write_atomic(target, b"one", overwrite=False)
    assert target.read_bytes() == b"one" and target.stat().st_mode & 0o777 == 0o644
    with pytest.raises(OutputExists):
        files.write_atomic(target, b"two", overwrite=False)
    files.write_atomic(target, b"three", mode=0o600)
    assert target.read_bytes() == b"three" and target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["cert.pem"]  # no temp file left


def test_write_atomic_leaves_nothing_when_writing_fails(
        tmp_path: Path, writer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: files.AtomicOutput, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.AtomicOutput, "write", full)
    with pytest.raises(OSError):
        files.write_atomic(tmp_path / "record.json", b"{}", overwrite=False)
    assert list(tmp_path.iterdir()) == []
