"""Sealed segment files: round trip, checksum failures, memory-mapped on_disk vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qcluster.engine import vector_index
from qcluster.engine.segment import Segment
from qcluster.engine.segment_files import map_on_disk_vectors, read_segment, write_segment
from qcluster.errors import DataCorruption
from qcluster.types import CollectionConfig, Distance, PayloadFieldSchema, PayloadSchemaType, VectorParams


def _sealed(config: CollectionConfig, *, with_hnsw: bool = True) -> Segment:
    rng = np.random.default_rng(1)
    segment = Segment(segment_id=7, config=config, field_schemas={}, is_appendable=False)
    matrix = rng.normal(size=(50, 8)).astype(np.float32)
    segment.assign_columns(
        ids=list(range(50)),
        payloads=[{"k": n % 3} if n % 7 else None for n in range(50)],
        versions=np.arange(1, 51, dtype=np.int64),
        vectors={"": (matrix, np.ones(50, dtype=bool))},
    )
    if with_hnsw:
        segment.hnsw[""] = vector_index.build_hnsw(distance=Distance.DOT, parts=[matrix], m=8, ef_construct=40)
        segment.vectors[""].matrix = vector_index.stored_vectors(segment.hnsw[""])
    return segment


@pytest.mark.parametrize("with_hnsw", [False, True])
@pytest.mark.parametrize("on_disk", [False, True])
def test_round_trip(tmp_path: Path, on_disk: bool, with_hnsw: bool) -> None:
    config = CollectionConfig(vectors={"": VectorParams(size=8, distance=Distance.DOT, on_disk=on_disk)})
    original = _sealed(config, with_hnsw=with_hnsw)
    write_segment(original, tmp_path / "7")
    # An HNSW-Flat file holds the vectors: no second copy on disk.
    assert (tmp_path / "7" / "vectors-0.npy").exists() != with_hnsw
    assert not (tmp_path / "7.tmp").exists()
    schema = {"k": PayloadFieldSchema(type=PayloadSchemaType.INTEGER)}
    loaded = read_segment(tmp_path / "7", config=config, field_schemas=schema)
    assert loaded.ids == original.ids
    assert loaded.payloads == original.payloads
    np.testing.assert_array_equal(loaded.vectors[""].matrix, original.vectors[""].matrix)
    np.testing.assert_array_equal(loaded.versions, original.versions)
    assert (loaded.hnsw[""].ntotal == 50) if with_hnsw else not loaded.hnsw
    if with_hnsw:
        assert not loaded.vectors[""].matrix.flags.owndata, "a view of the index's own storage"
    else:
        assert isinstance(loaded.vectors[""].matrix, np.memmap) == on_disk
    assert loaded.field_indexes["k"].has_value_mask(50).sum() == sum(1 for n in range(50) if n % 7)
    map_on_disk_vectors(original, tmp_path / "7")
    if not with_hnsw:
        assert isinstance(original.vectors[""].matrix, np.memmap) == on_disk
    np.testing.assert_array_equal(original.vectors[""].matrix, loaded.vectors[""].matrix)


@pytest.mark.parametrize("victim", ["ids.msgpack", "payloads.msgpack", "present-0.npy", "hnsw-0.faiss"])
def test_a_flipped_byte_is_data_corruption(tmp_path: Path, victim: str) -> None:
    config = CollectionConfig(vectors={"": VectorParams(size=8, distance=Distance.DOT)})
    write_segment(_sealed(config), tmp_path / "7")
    path = tmp_path / "7" / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DataCorruption, match=victim):
        read_segment(tmp_path / "7", config=config, field_schemas={})
