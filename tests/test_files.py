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


def _grouped(group: files.CommitGroup, path: Path, data: bytes) -> None:
    with files.AtomicOutput(path, False, group=group) as out:
        out.write(data)
        out.commit()


def test_group_outputs_appear_only_when_published(tmp_path: Path, writer: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A grouped commit makes nothing visible; publish() syncs once per file system,
    then names every file (a result is reported opened only after that)."""
    syncs: list[int] = []
    real = files._sync_files

    def counted(fds: list[int], directories: object = frozenset()) -> None:
        syncs.append(len(fds))
        real(fds, directories)  # type: ignore[arg-type]

    monkeypatch.setattr(files, "_sync_files", counted)
    group = files.CommitGroup()
    for i in range(5):
        _grouped(group, tmp_path / f"bid-{i}", b"plain %d" % i)
    # (the fallback writer's temp files are hidden `.bid-N.*.part` files)
    assert len(group) == 5 and [p for p in tmp_path.iterdir() if p.name[0] != "."] == []
    (tmp_path / "bid-3").write_bytes(b"another run got there first")
    placed = group.publish()
    assert syncs == [5, 0]  # the five files' data, then the directory
    assert [p for p, refused in placed.items() if refused] == [tmp_path / "bid-3"]
    assert (tmp_path / "bid-3").read_bytes() == b"another run got there first"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"bid-{i}" for i in range(5)]
    assert (tmp_path / "bid-4").read_bytes() == b"plain 4" and len(group) == 0


def test_discarded_group_leaves_nothing(tmp_path: Path, writer: str) -> None:
    group = files.CommitGroup()
    for i in range(3):
        _grouped(group, tmp_path / f"bid-{i}", b"x")
    group.discard()
    assert list(tmp_path.iterdir()) == [] and group.publish() == {}
