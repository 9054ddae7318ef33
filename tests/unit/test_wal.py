"""WAL: framing, durability across reopen, torn tails, corruption, truncation."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qcluster.engine.wal import Wal
from qcluster.errors import DataCorruption, ShardUnavailable, StorageFull
from qcluster.testing import tmpfs


def _records(directory: Path) -> list[bytes]:
    wal = Wal(directory, file_size_max_bytes=1 << 20)
    try:
        return list(wal.read_all())
    finally:
        wal.close()


def test_records_survive_reopen_in_order(tmp_path: Path) -> None:
    wal = Wal(tmp_path, file_size_max_bytes=1 << 20)
    indexes = [wal.append(f"record {n}".encode()) for n in range(100)]
    wal.sync()
    wal.close()
    assert indexes == list(range(1, 101))
    assert _records(tmp_path) == [f"record {n}".encode() for n in range(100)]


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_torn_tail_is_truncated_and_appends_continue(tmp_path: Path, cut: int) -> None:
    wal = Wal(tmp_path, file_size_max_bytes=1 << 20)
    wal.append(b"first")
    wal.append(b"second-record-payload")
    wal.sync()
    wal.close()
    (path,) = tmp_path.iterdir()
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size - cut)
    wal = Wal(tmp_path, file_size_max_bytes=1 << 20)
    assert wal.next_index == 2, "the torn second record is gone"
    wal.append(b"third")
    wal.sync()
    wal.close()
    assert _records(tmp_path) == [b"first", b"third"]


def test_checksum_mismatch_in_tail_is_dropped(tmp_path: Path) -> None:
    wal = Wal(tmp_path, file_size_max_bytes=1 << 20)
    wal.append(b"good")
    wal.append(b"flipped")
    wal.sync()
    wal.close()
    (path,) = tmp_path.iterdir()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert _records(tmp_path) == [b"good"]


def test_corruption_in_an_older_file_is_reported(tmp_path: Path) -> None:
    wal = Wal(tmp_path, file_size_max_bytes=64)
    for n in range(10):
        wal.append(bytes([n]) * 40)
    wal.sync()
    wal.close()
    first = sorted(tmp_path.iterdir())[0]
    data = bytearray(first.read_bytes())
    data[10] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(DataCorruption):
        Wal(tmp_path, file_size_max_bytes=64)


def test_rotation_and_truncate_before(tmp_path: Path) -> None:
    wal = Wal(tmp_path, file_size_max_bytes=100)
    for n in range(20):
        wal.append(bytes([n]) * 50)
    wal.sync()
    files_before = len(list(tmp_path.iterdir()))
    assert files_before > 5
    removed = wal.truncate_before(15)
    assert removed > 0
    # One record per file here: records 1..14 (payloads 0..13) are dropped whole.
    assert list(wal.read_all()) == [bytes([n]) * 50 for n in range(14, 20)]
    wal.append(b"after")
    wal.sync()
    wal.close()
    assert _records(tmp_path)[-1] == b"after"


@settings(max_examples=30, deadline=None)
@given(payloads=st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=30), cut=st.integers(0, 400))
def test_any_cut_keeps_a_prefix(tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes], cut: int) -> None:
    """Truncating the file anywhere leaves exactly a prefix of the records."""
    directory = tmp_path_factory.mktemp("wal")
    wal = Wal(directory, file_size_max_bytes=1 << 20)
    for payload in payloads:
        wal.append(payload)
    wal.sync()
    wal.close()
    (path,) = directory.iterdir()
    size = path.stat().st_size
    os.truncate(path, max(0, size - cut))
    recovered = _records(directory)
    assert recovered == payloads[: len(recovered)]
    if cut == 0:
        assert recovered == payloads


def test_rotate_lets_a_checkpointed_file_go(tmp_path: Path) -> None:
    wal = Wal(tmp_path, file_size_max_bytes=1 << 20)
    for n in range(5):
        wal.append(bytes([n]))
    wal.sync()
    wal.rotate()
    assert wal.truncate_before(wal.next_index) == 1
    assert list(wal.read_all()) == []
    wal.append(b"next")
    wal.sync()
    wal.close()
    assert _records(tmp_path) == [b"next"]


# ---------------------------------------------------------------- failed writes

_needs_tmpfs = pytest.mark.skipif(tmpfs.skip_reason() is not None, reason=str(tmpfs.skip_reason()))


@_needs_tmpfs
@pytest.mark.parametrize("file_size_max_bytes", [1 << 30, 96 * 1024], ids=["one-file", "rotating"])
def test_a_full_disk_appends_nothing_and_loses_nothing(tmp_path: Path, file_size_max_bytes: int) -> None:
    """A record that hits ENOSPC leaves no partial frame: records appended
    after space is freed are still there on reopen (they used to be dropped
    as the 'torn tail' behind the partial frame)."""
    with tmpfs.mounted_tmpfs(tmp_path / "disk", size_kib=1024) as disk:
        wal = Wal(disk / "wal", file_size_max_bytes=file_size_max_bytes)
        tmpfs.fill(disk / "filler")
        (disk / "filler").unlink()
        tmpfs.fill(disk / "filler", max_bytes=768 * 1024)  # leave ~256 KiB
        acknowledged: list[bytes] = []
        refusals = 0
        for n in range(200):
            payload = n.to_bytes(4, "little") * 5000  # 20 kB
            try:
                wal.append(payload)
                wal.sync()
            except StorageFull as error:
                assert "no space left" in str(error)
                refusals += 1
                if refusals == 3:
                    (disk / "filler").unlink()  # space is back
                continue
            acknowledged.append(payload)
        wal.close()
        assert refusals >= 3, "the disk never filled"
        assert len(acknowledged) > 10
        assert _records(disk / "wal") == acknowledged


def test_a_failed_fsync_cuts_the_record_away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal = Wal(tmp_path, file_size_max_bytes=1 << 20)
    wal.append(b"kept")
    wal.sync()
    real_fsync = os.fsync
    failures = [OSError(errno.EIO, "Input/output error")]

    def fsync_failing_once(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_once)
    wal.append(b"never durable")
    with pytest.raises(ShardUnavailable, match="Input/output error"):
        wal.sync()
    assert wal.append(b"after") == 2, "the failed record's index is handed out again"
    wal.sync()
    wal.close()
    assert _records(tmp_path) == [b"kept", b"after"]


def test_a_write_that_cannot_be_cut_away_poisons_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal = Wal(tmp_path, file_size_max_bytes=1 << 20)
    wal.append(b"kept")
    wal.sync()

    def full_writev(fd: int, buffers: object) -> int:
        os.write(fd, b"\x05\x00")  # a partial header reaches the file
        raise OSError(errno.ENOSPC, "No space left on device")

    def failing_ftruncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "writev", full_writev)
    monkeypatch.setattr(os, "ftruncate", failing_ftruncate)
    with pytest.raises(StorageFull):
        wal.append(b"lost")
    monkeypatch.undo()
    with pytest.raises(ShardUnavailable, match="refuses writes"):
        wal.append(b"refused")
    wal.close()
    assert _records(tmp_path) == [b"kept"], "reopening truncates the partial frame"
