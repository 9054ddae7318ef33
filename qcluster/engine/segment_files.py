"""On-disk form of a sealed segment: immutable files plus a checksum manifest.

::

    <segment dir>/
      meta.json          format, id, row count, vector columns, crc32 of every other file
      ids.msgpack        point ids by offset
      payloads.msgpack   payloads by offset
      versions.npy       int64 versions by offset
      vectors-<i>.npy    float32 rows of vector column i without HNSW (memory-mapped when on_disk)
      present-<i>.npy    bool presence of vector column i
      hnsw-<i>.faiss     FAISS HNSW-Flat index of column i, when built; it holds the
                         column's vectors too, which are read from it (no second copy)

A segment is written into ``<dir>.tmp``, every file fsynced, then renamed into
place, so a crash leaves either no segment or a whole one. Tombstones are not
part of a segment: the shard's checkpoint holds them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any, Final

import msgpack
import numpy as np

from qcluster.engine import vector_index
from qcluster.engine.segment import Segment
from qcluster.engine.wal import fsync_directory
from qcluster.errors import DataCorruption
from qcluster.types import CollectionConfig, PayloadFieldSchema

__all__ = ["read_segment", "write_segment"]

_FORMAT: Final = 1
_CHECKSUM_CHUNK_BYTES: Final = 8 << 20


def _write_file(path: Path, data: bytes, checksums: dict[str, int]) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    checksums[path.name] = zlib.crc32(data)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_segment(segment: Segment, directory: Path) -> None:
    """Persist a sealed segment atomically at ``directory``."""
    assert not segment.is_appendable
    assert not directory.exists(), f"segment directory {directory} already exists"
    temporary = directory.with_name(directory.name + ".tmp")
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    count = segment.count
    checksums: dict[str, int] = {}
    _write_file(temporary / "ids.msgpack", msgpack.packb(segment.ids[:count], use_bin_type=True), checksums)
    _write_file(
        temporary / "payloads.msgpack", msgpack.packb(segment.payloads[:count], use_bin_type=True), checksums
    )
    _write_file(temporary / "versions.npy", _npy_bytes(segment.versions[:count]), checksums)
    columns: dict[str, Any] = {}
    for position, (name, column) in enumerate(sorted(segment.vectors.items())):
        has_hnsw = name in segment.hnsw
        if not has_hnsw:  # an HNSW-Flat file holds the vectors itself
            _write_file(temporary / f"vectors-{position}.npy", _npy_bytes(column.matrix[:count]), checksums)
        _write_file(temporary / f"present-{position}.npy", _npy_bytes(column.present[:count]), checksums)
        if has_hnsw:
            path = temporary / f"hnsw-{position}.faiss"
            vector_index.write_index(segment.hnsw[name], path)
            checksums[path.name] = zlib.crc32(path.read_bytes())
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        columns[name] = {"position": position, "dim": column.dim, "has_hnsw": has_hnsw}
    meta = {"format": _FORMAT, "segment_id": segment.segment_id, "count": count, "columns": columns}
    meta["checksums"] = checksums
    _write_file(temporary / "meta.json", json.dumps(meta, sort_keys=True).encode(), {})
    fsync_directory(temporary)
    temporary.rename(directory)
    fsync_directory(directory.parent)


def _read_checked(path: Path, checksums: dict[str, int]) -> bytes:
    data = path.read_bytes()
    expected = checksums.get(path.name)
    if expected is None or zlib.crc32(data) != expected:
        raise DataCorruption(f"segment file {path} failed its checksum")
    return data


def _check_streaming(path: Path, checksums: dict[str, int]) -> None:
    """Verify a file's crc32 without holding it in memory (memory-mapped and index files)."""
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHECKSUM_CHUNK_BYTES):
            crc = zlib.crc32(chunk, crc)
    if checksums.get(path.name) != crc:
        raise DataCorruption(f"segment file {path} failed its checksum")


def _read_npy(path: Path, checksums: dict[str, int], *, mmap: bool) -> np.ndarray:
    if mmap:
        _check_streaming(path, checksums)
        return np.load(path, mmap_mode="r", allow_pickle=False)
    return np.load(io.BytesIO(_read_checked(path, checksums)), allow_pickle=False)


def read_segment(
    directory: Path,
    *,
    config: CollectionConfig,
    field_schemas: dict[str, PayloadFieldSchema],
    deleted_seq: np.ndarray | None = None,
) -> Segment:
    """Load a sealed segment with the checkpoint's tombstones ``deleted_seq``
    (None: every row live). They are applied as the rows load: a segment
    extended by the optimizer may hold a dead row and a live row of one point."""
    try:
        meta = json.loads((directory / "meta.json").read_bytes())
    except (OSError, ValueError) as exc:
        raise DataCorruption(f"segment {directory} has no readable meta.json") from exc
    if meta.get("format") != _FORMAT:
        raise DataCorruption(f"segment {directory} has unknown format {meta.get('format')!r}")
    checksums = meta["checksums"]
    ids = msgpack.unpackb(_read_checked(directory / "ids.msgpack", checksums), raw=False)
    payloads = msgpack.unpackb(
        _read_checked(directory / "payloads.msgpack", checksums), raw=False, strict_map_key=False
    )
    versions = _read_npy(directory / "versions.npy", checksums, mmap=False)
    count = int(meta["count"])
    if not (len(ids) == len(payloads) == versions.shape[0] == count):
        raise DataCorruption(f"segment {directory}: column lengths disagree")
    segment = Segment(segment_id=int(meta["segment_id"]), config=config, field_schemas={}, is_appendable=False)
    vectors = {}
    indexes = {}
    for name, column in meta["columns"].items():
        if name not in config.vectors:
            continue  # the vector was removed from the collection config
        position = column["position"]
        on_disk = config.vectors[name].on_disk
        present = _read_npy(directory / f"present-{position}.npy", checksums, mmap=False)
        if column["has_hnsw"]:
            path = directory / f"hnsw-{position}.faiss"
            _check_streaming(path, checksums)
            indexes[name] = vector_index.read_index(path, mmap=on_disk)
            matrix = vector_index.stored_vectors(indexes[name])
        else:
            matrix = _read_npy(directory / f"vectors-{position}.npy", checksums, mmap=on_disk)
        if matrix.dtype != np.float32 or matrix.shape != (count, column["dim"]):
            raise DataCorruption(f"segment {directory}: vectors of {name!r} are {matrix.dtype} {matrix.shape}")
        vectors[name] = (matrix, present)
    if deleted_seq is not None and deleted_seq.shape != (count,):
        raise DataCorruption(f"segment {directory}: tombstones do not match its rows")
    segment.assign_columns(ids=list(ids), payloads=list(payloads), versions=versions, vectors=vectors,
                           deleted_seq=deleted_seq)
    segment.hnsw = indexes
    for key, schema in field_schemas.items():
        segment.ensure_field_index(key, schema)
    assert segment.count == count
    return segment


def map_on_disk_vectors(segment: Segment, directory: Path) -> None:
    """Swap the in-RAM columns of ``on_disk`` vectors for memory maps of the written files.

    Called right after ``write_segment``, so an on_disk collection does not keep
    freshly built segments in RAM until the next restart.
    """
    meta = json.loads((directory / "meta.json").read_bytes())
    for name, column in meta["columns"].items():
        params = segment.config.vectors.get(name)
        if params is None or not params.on_disk:
            continue
        position = column["position"]
        if column["has_hnsw"]:
            segment.hnsw[name] = vector_index.read_index(directory / f"hnsw-{position}.faiss", mmap=True)
            mapped = vector_index.stored_vectors(segment.hnsw[name])
        else:
            mapped = np.load(directory / f"vectors-{position}.npy", mmap_mode="r", allow_pickle=False)
        assert mapped.shape == segment.vectors[name].matrix.shape
        segment.vectors[name].matrix = mapped
