"""A shard's checkpoint: which sealed segments exist and their tombstones at seq S.

``manifest.json`` names the checkpoint seq S, the WAL index from which records
may be above S, the sealed segment ids, the payload field schemas and the
tombstone file. A checkpoint is written as: tombstones file (fsync), manifest
to a temporary name (fsync), rename over ``manifest.json``, fsync the
directory. Recovery loads exactly what the manifest names and replays the WAL
records whose seq is above S.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from qcluster.engine.wal import fsync_directory
from qcluster.errors import DataCorruption
from qcluster.types import PayloadFieldSchema

__all__ = ["Checkpoint", "read_checkpoint", "write_checkpoint"]

_FORMAT: Final = 1
MANIFEST: Final = "manifest.json"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq_no: int
    wal_index: int
    segment_ids: tuple[int, ...]
    next_segment_id: int
    field_schemas: dict[str, PayloadFieldSchema]
    # segment id -> deleted_seq column as of seq_no
    tombstones: dict[int, np.ndarray]
    # The primary term of the record at seq_no (0: single node, or written
    # before terms existed): a replica compares it when it catches up.
    term: int = 0


def write_checkpoint(directory: Path, checkpoint: Checkpoint) -> None:
    """Durably replace the shard's checkpoint."""
    assert set(checkpoint.tombstones) == set(checkpoint.segment_ids)
    tombstone_name = f"tombstones-{checkpoint.seq_no:020d}.npz"
    buffer = io.BytesIO()
    np.savez(buffer, **{str(segment_id): column for segment_id, column in checkpoint.tombstones.items()})
    with open(directory / tombstone_name, "wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    manifest = {
        "format": _FORMAT,
        "seq_no": checkpoint.seq_no,
        "wal_index": checkpoint.wal_index,
        "segment_ids": list(checkpoint.segment_ids),
        "next_segment_id": checkpoint.next_segment_id,
        "field_schemas": {key: schema.encode() for key, schema in checkpoint.field_schemas.items()},
        "tombstones": tombstone_name,
        "term": checkpoint.term,
    }
    temporary = directory / (MANIFEST + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(json.dumps(manifest, sort_keys=True).encode())
        handle.flush()
        os.fsync(handle.fileno())
    temporary.rename(directory / MANIFEST)
    fsync_directory(directory)
    for stale in directory.glob("tombstones-*.npz"):
        if stale.name != tombstone_name:
            stale.unlink()


def read_checkpoint(directory: Path) -> Checkpoint | None:
    """The last durable checkpoint, or None for a shard that never wrote one."""
    path = directory / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_bytes())
    except ValueError as exc:
        raise DataCorruption(f"{path} is not valid JSON") from exc
    if manifest.get("format") != _FORMAT:
        raise DataCorruption(f"{path} has unknown format {manifest.get('format')!r}")
    with np.load(directory / manifest["tombstones"], allow_pickle=False) as stored:
        tombstones = {int(name): stored[name] for name in stored.files}
    segment_ids = tuple(int(segment_id) for segment_id in manifest["segment_ids"])
    if set(tombstones) != set(segment_ids):
        raise DataCorruption(f"{path}: tombstones do not match the segment list")
    return Checkpoint(
        seq_no=int(manifest["seq_no"]),
        term=int(manifest.get("term", 0)),
        wal_index=int(manifest["wal_index"]),
        segment_ids=segment_ids,
        next_segment_id=int(manifest["next_segment_id"]),
        field_schemas={key: PayloadFieldSchema.decode(raw) for key, raw in manifest["field_schemas"].items()},
        tombstones=tombstones,
    )
