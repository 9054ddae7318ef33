"""Write-ahead log: an append-only sequence of framed, checksummed records.

Layout: a directory of files ``wal-<first index, 20 digits>.log``. Each record
is ``<u32 length><u32 crc32 of payload><payload>``. Records are opaque bytes;
the shard stores its (seq_no, operation) encoding in them.

Contracts:
- ``append`` writes a record to the OS; ``sync`` makes every appended record
  durable (fsync). A caller acknowledges a write only after ``sync``.
- On open, a torn tail of the last file (a short header, a short payload or a
  checksum mismatch) is truncated away: such a record was never synced, so it
  was never acknowledged. A bad record in an earlier file is corruption.
- ``truncate_before(index)`` drops whole files whose records all precede
  ``index``; it never rewrites a file.

Threading: not thread-safe; the shard serialises writers.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final, final

from qcluster.errors import DataCorruption
from qcluster.limits import WAL_RECORD_BYTES_MAX

__all__ = ["Wal"]

_HEADER: Final = struct.Struct("<II")
_PREFIX: Final = "wal-"
_SUFFIX: Final = ".log"
_READ_CHUNK_BYTES: Final = 1 << 20

logger = logging.getLogger(__name__)


def _file_name(first_index: int) -> str:
    return f"{_PREFIX}{first_index:020d}{_SUFFIX}"


def fsync_directory(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@final
class Wal:
    """An append-only log of records numbered 1, 2, 3... across files."""

    def __init__(self, directory: Path, *, file_size_max_bytes: int) -> None:
        assert file_size_max_bytes > 0
        self._directory = directory
        self._file_size_max_bytes = file_size_max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        # (first record index, path) of every file, oldest first.
        self._files: list[tuple[int, Path]] = self._list_files()
        self._next_index = 1
        self._handle = None
        self._handle_size = 0
        self._recover()

    def _list_files(self) -> list[tuple[int, Path]]:
        files = []
        for path in self._directory.iterdir():
            name = path.name
            if name.startswith(_PREFIX) and name.endswith(_SUFFIX):
                files.append((int(name[len(_PREFIX) : -len(_SUFFIX)]), path))
        files.sort()
        return files

    def _recover(self) -> None:
        """Count records, truncate a torn tail, and open the last file for appending."""
        if not self._files:
            self._open_new_file(first_index=1)
            return
        for position, (first_index, path) in enumerate(self._files):
            is_last = position == len(self._files) - 1
            if first_index != self._next_index and position > 0:
                raise DataCorruption(f"WAL file {path.name} starts at {first_index}, expected {self._next_index}")
            self._next_index = first_index
            count, good_bytes = self._scan_file(path, is_last=is_last)
            self._next_index += count
            if is_last and good_bytes < path.stat().st_size:
                logger.warning("truncating torn WAL tail of %s at byte %d", path.name, good_bytes)
                with open(path, "r+b") as handle:
                    handle.truncate(good_bytes)
                    handle.flush()
                    os.fsync(handle.fileno())
        last_path = self._files[-1][1]
        self._handle = open(last_path, "ab")
        self._handle_size = last_path.stat().st_size

    def _scan_file(self, path: Path, *, is_last: bool) -> tuple[int, int]:
        """Return (valid records, bytes they span) of one file."""
        count = 0
        good_bytes = 0
        for _payload, end in self._iter_file(path, tolerate_torn_tail=is_last):
            count += 1
            good_bytes = end
        return count, good_bytes

    def _iter_file(self, path: Path, *, tolerate_torn_tail: bool) -> Iterator[tuple[bytes, int]]:
        """Yield (payload, end offset) of each valid record of one file."""
        with open(path, "rb") as handle:
            data = handle.read()
        offset = 0
        size = len(data)
        while offset < size:
            problem = None
            if size - offset < _HEADER.size:
                problem = "short header"
            else:
                length, crc = _HEADER.unpack_from(data, offset)
                start = offset + _HEADER.size
                if length > WAL_RECORD_BYTES_MAX or start + length > size:
                    problem = "short payload"
                else:
                    payload = data[start : start + length]
                    if zlib.crc32(payload) != crc:
                        problem = "checksum mismatch"
            if problem is not None:
                if tolerate_torn_tail:
                    return
                raise DataCorruption(f"WAL file {path.name}: {problem} at byte {offset}")
            yield payload, start + length
            offset = start + length

    def _open_new_file(self, *, first_index: int) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        path = self._directory / _file_name(first_index)
        self._handle = open(path, "ab")
        self._handle_size = 0
        self._files.append((first_index, path))
        fsync_directory(self._directory)

    @property
    def next_index(self) -> int:
        """The index the next appended record gets."""
        return self._next_index

    def append(self, payload: bytes) -> int:
        """Append one record (not yet durable: call ``sync``). Returns its index."""
        assert self._handle is not None, "WAL is closed"
        assert len(payload) <= WAL_RECORD_BYTES_MAX
        if self._handle_size > 0 and self._handle_size + len(payload) > self._file_size_max_bytes:
            self._open_new_file(first_index=self._next_index)
        header = _HEADER.pack(len(payload), zlib.crc32(payload))
        self._handle.write(header)
        self._handle.write(payload)
        self._handle_size += len(header) + len(payload)
        index = self._next_index
        self._next_index += 1
        return index

    def sync(self) -> None:
        """Make every appended record durable."""
        assert self._handle is not None, "WAL is closed"
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def read_all(self) -> Iterator[bytes]:
        """Yield every record still held, oldest first. Call before appending."""
        assert self._handle is not None
        self._handle.flush()
        for position, (_first, path) in enumerate(self._files):
            is_last = position == len(self._files) - 1
            for payload, _end in self._iter_file(path, tolerate_torn_tail=is_last):
                yield payload

    def file_sizes(self) -> list[tuple[Path, int]]:
        """Every file still held with its size, after a flush: the bytes a copy
        must take (the last file may still grow; earlier ones are closed)."""
        assert self._handle is not None, "WAL is closed"
        self._handle.flush()
        return [(path, path.stat().st_size) for _first, path in self._files]

    def rotate(self) -> None:
        """Continue in a new file, so the current one can be dropped once checkpointed."""
        assert self._handle is not None, "WAL is closed"
        if self._handle_size > 0:
            self._open_new_file(first_index=self._next_index)

    def truncate_before(self, index: int) -> int:
        """Delete files whose records all have an index below ``index``. Returns files removed."""
        removed = 0
        # A file can go when the next file starts at or below ``index``; the
        # last (open) file always stays.
        while len(self._files) > 1 and self._files[1][0] <= index:
            _first, path = self._files.pop(0)
            path.unlink()
            removed += 1
        if removed:
            fsync_directory(self._directory)
        return removed

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for _first, path in self._files)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None
