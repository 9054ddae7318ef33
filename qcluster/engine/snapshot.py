"""A shard's snapshot: a directory of files that opens as the same shard.

Used to rebuild a replica whose WAL delta is gone (checkpointed and
truncated) or whose history diverged, and later for user snapshots. Taken
under the shard's optimizer and write mutexes, so no optimization and no
write runs while it is cut: sealed segment files and the checkpoint are
immutable once written, so they are hard-linked (no copy, no extra space);
the WAL files are copied up to their current length (the last one keeps
growing in the live shard). ``snapshot.json`` lists every file with its size
and CRC32; ``restore_snapshot`` checks them all before the shard directory
appears (staged, fsynced, renamed), so a damaged or partial transfer never
becomes a shard.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from qcluster.engine.checkpoint import MANIFEST
from qcluster.engine.shard import SEGMENTS_DIR, WAL_DIR, LocalShard
from qcluster.engine.wal import fsync_directory
from qcluster.errors import DataCorruption

__all__ = ["SNAPSHOT_MANIFEST", "SnapshotInfo", "create_snapshot", "restore_snapshot"]

SNAPSHOT_MANIFEST: Final = "snapshot.json"
_FORMAT: Final = 1
_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    seq_no: int  # the shard's last_seq when the snapshot was cut
    term: int
    files: dict[str, tuple[int, int]]  # relative path -> (size, crc32)


def _crc32(path: Path) -> int:
    checksum = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            checksum = zlib.crc32(chunk, checksum)
    return checksum


def _copy_prefix(source: Path, target: Path, size: int) -> None:
    with open(source, "rb") as reader, open(target, "wb") as writer:
        remaining = size
        while remaining > 0:
            chunk = reader.read(min(_CHUNK, remaining))
            assert chunk, f"{source} shrank while copying"
            writer.write(chunk)
            remaining -= len(chunk)
        writer.flush()
        os.fsync(writer.fileno())


def create_snapshot(shard: LocalShard, target: Path) -> SnapshotInfo:
    """Cut a snapshot of ``shard`` into the new directory ``target``."""
    target.mkdir(parents=True)
    with shard.optimizer_mutex, shard.write_mutex:
        if shard.is_closed:
            raise DataCorruption(f"shard {shard.directory} is closed")
        source = shard.directory
        linked: list[Path] = []
        manifest = source / MANIFEST
        if manifest.exists():
            linked.append(manifest)
            linked.extend(source.glob("tombstones-*.npz"))
        for segment in shard.sealed:
            segment_dir = source / SEGMENTS_DIR / str(segment.segment_id)
            linked.extend(path for path in sorted(segment_dir.rglob("*")) if path.is_file())
        for path in linked:
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, destination)
            except OSError:  # another filesystem: copy instead
                _copy_prefix(path, destination, path.stat().st_size)
        (target / WAL_DIR).mkdir(exist_ok=True)
        for path, size in shard.wal.file_sizes():
            _copy_prefix(path, target / WAL_DIR / path.name, size)
        seq_no, term = shard.last_seq, shard.last_term
    files = {str(path.relative_to(target)): (path.stat().st_size, _crc32(path))
             for path in sorted(target.rglob("*")) if path.is_file()}
    info = SnapshotInfo(seq_no=seq_no, term=term, files=files)
    (target / SNAPSHOT_MANIFEST).write_text(json.dumps(
        {"format": _FORMAT, "seq_no": seq_no, "term": term, "files": files}, sort_keys=True))
    return info


def read_snapshot_info(snapshot: Path) -> SnapshotInfo:
    try:
        raw = json.loads((snapshot / SNAPSHOT_MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise DataCorruption(f"{snapshot}: no readable {SNAPSHOT_MANIFEST}: {exc}") from exc
    if raw.get("format") != _FORMAT:
        raise DataCorruption(f"{snapshot}: unknown snapshot format {raw.get('format')!r}")
    return SnapshotInfo(seq_no=int(raw["seq_no"]), term=int(raw["term"]),
                        files={name: (int(size), int(crc)) for name, (size, crc) in raw["files"].items()})


def restore_snapshot(snapshot: Path, shard_dir: Path) -> SnapshotInfo:
    """Check every file of ``snapshot`` and install it as ``shard_dir`` (which
    must not exist). Raises DataCorruption, leaving nothing behind, when a
    file is missing, of another size, or fails its checksum."""
    info = read_snapshot_info(snapshot)
    assert not shard_dir.exists(), shard_dir
    staging = shard_dir.with_name(f".restoring-{shard_dir.name}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for name, (size, crc) in info.files.items():
            source = snapshot / name
            if not source.is_file() or source.stat().st_size != size or _crc32(source) != crc:
                raise DataCorruption(f"snapshot file {name} is missing or damaged")
            destination = staging / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            _copy_prefix(source, destination, size)
        for directory in sorted({path.parent for path in staging.rglob("*")} | {staging}, reverse=True):
            fsync_directory(directory)
        staging.rename(shard_dir)
        fsync_directory(shard_dir.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info
