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
- A failed ``append`` or ``sync`` (a full disk, an I/O error) leaves no trace:
  the file is cut back to its last synced size and the record's index is
  handed out again, so no later record is ever appended behind a partial
  frame that recovery would take for a torn tail and drop with everything
  after it. ENOSPC / EDQUOT raise ``StorageFull`` (retry once space is back);
  other errors ``ShardUnavailable``. If the cut itself fails, the log is
  *poisoned*: it refuses every append until the shard is reopened, whose
  recovery then truncates the partial frame (nothing behind it was
  acknowledged).

Threading: not thread-safe; the shard serialises writers.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final, final

from qcluster.errors import DataCorruption, ShardUnavailable, StorageFull
from qcluster.limits import WAL_RECORD_BYTES_MAX

__all__ = ["Wal"]

_HEADER: Final = struct.Struct("<II")
_PREFIX: Final = "wal-"
_SUFFIX: Final = ".log"
_READ_CHUNK_BYTES: Final = 1 << 20
_DISK_FULL_ERRNOS: Final = frozenset((errno.ENOSPC, errno.EDQUOT))

logger = logging.getLogger(__name__)


def _file_name(first_index: int) -> str:
    return f"{_PREFIX}{first_index:020d}{_SUFFIX}"


def storage_error(error: OSError, *, what: str) -> ShardUnavailable | StorageFull:
    """The retryable error a client sees for ``error`` while doing ``what``."""
    if error.errno in _DISK_FULL_ERRNOS:
        return StorageFull(f"{what}: no space left on the device holding it ({error.strerror}); "
                           "nothing was written: retry once space is freed")
    return ShardUnavailable(f"{what}: {error.strerror or error}")


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
        # Unbuffered: a record reaches the file in one write call, so a
        # failed append leaves nothing in a user-space buffer to flush later.
        self._handle: BinaryIO | None = None
        self._handle_size = 0  # bytes in the file up to the last whole record written
        self._synced_size = 0  # bytes of the file known durable
        self._synced_next_index = 1
        self._poisoned: str | None = None
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
        self._handle = open(last_path, "ab", buffering=0)
        self._handle_size = last_path.stat().st_size
        self._mark_synced()

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
        """Continue in a new file. The old one stays the log's tail until the
        new one exists durably, so a failure here changes nothing."""
        path = self._directory / _file_name(first_index)
        try:
            handle = open(path, "ab", buffering=0)
        except OSError as error:
            raise storage_error(error, what=f"WAL {self._directory}") from error
        try:
            fsync_directory(self._directory)
            if self._handle is not None:
                os.fsync(self._handle.fileno())
        except OSError as error:
            handle.close()
            path.unlink(missing_ok=True)
            raise storage_error(error, what=f"WAL {self._directory}") from error
        if self._handle is not None:
            self._handle.close()
        self._handle = handle
        self._handle_size = 0
        self._files.append((first_index, path))
        self._mark_synced()

    def _mark_synced(self) -> None:
        self._synced_size = self._handle_size
        self._synced_next_index = self._next_index

    def _undo_unsynced(self, error: OSError) -> ShardUnavailable | StorageFull:
        """Cut the file back to its last synced size after ``error``; poison
        the log if that fails. Returns the error to raise."""
        assert self._handle is not None
        try:
            os.ftruncate(self._handle.fileno(), self._synced_size)
            os.fsync(self._handle.fileno())
        except OSError as cut_error:
            self._poisoned = f"a failed write could not be cut away ({cut_error.strerror}): reopen the shard"
            logger.error("WAL %s poisoned after %s: %s", self._directory, error, cut_error)
        else:
            logger.warning("WAL %s: a write failed (%s); cut back to byte %d", self._directory, error,
                           self._synced_size)
        self._handle_size = self._synced_size
        self._next_index = self._synced_next_index
        return storage_error(error, what=f"WAL {self._directory}")

    def _check_writable(self) -> None:
        assert self._handle is not None, "WAL is closed"
        if self._poisoned is not None:
            raise ShardUnavailable(f"WAL {self._directory} refuses writes: {self._poisoned}")

    @property
    def next_index(self) -> int:
        """The index the next appended record gets."""
        return self._next_index

    def append(self, payload: bytes) -> int:
        """Append one record (not yet durable: call ``sync``). Returns its index.
        Raises StorageFull / ShardUnavailable with nothing appended."""
        self._check_writable()
        assert self._handle is not None
        assert len(payload) <= WAL_RECORD_BYTES_MAX
        if self._handle_size > 0 and self._handle_size + len(payload) > self._file_size_max_bytes:
            if self._synced_size != self._handle_size:
                self.sync()
            self._open_new_file(first_index=self._next_index)
        header = _HEADER.pack(len(payload), zlib.crc32(payload))
        try:
            _write_all(self._handle.fileno(), header, payload)
        except OSError as error:
            raise self._undo_unsynced(error) from error
        self._handle_size += len(header) + len(payload)
        index = self._next_index
        self._next_index += 1
        return index

    def sync(self) -> None:
        """Make every appended record durable. On failure the records appended
        since the last sync are cut away (their indexes are handed out again)
        and StorageFull / ShardUnavailable is raised: they were never durable."""
        self._check_writable()
        assert self._handle is not None
        try:
            os.fsync(self._handle.fileno())
        except OSError as error:
            raise self._undo_unsynced(error) from error
        self._mark_synced()

    def read_all(self) -> Iterator[bytes]:
        """Yield every record still held, oldest first. Call before appending."""
        assert self._handle is not None
        for position, (_first, path) in enumerate(self._files):
            is_last = position == len(self._files) - 1
            for payload, _end in self._iter_file(path, tolerate_torn_tail=is_last):
                yield payload

    def file_sizes(self) -> list[tuple[Path, int]]:
        """Every file still held with its size, after a flush: the bytes a copy
        must take (the last file may still grow; earlier ones are closed)."""
        assert self._handle is not None, "WAL is closed"
        return [(path, path.stat().st_size) for _first, path in self._files]

    def rotate(self) -> None:
        """Continue in a new file, so the current one can be dropped once checkpointed."""
        self._check_writable()
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
            try:
                if self._poisoned is None:
                    os.fsync(self._handle.fileno())
            finally:
                self._handle.close()
                self._handle = None


def _write_all(fd: int, header: bytes, payload: bytes) -> None:
    """Write header then payload with as few calls as the kernel allows."""
    written = os.writev(fd, (header, payload))
    if written < len(header):
        written += os.write(fd, header[written:])
    view = memoryview(payload)
    while written < len(header) + len(payload):
        written += os.write(fd, view[written - len(header):])
