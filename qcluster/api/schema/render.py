"""Storage values to the JSON shapes qdrant-client's pydantic models parse.

Vectors stay numpy arrays: ``orjson`` with ``OPT_SERIALIZE_NUMPY`` writes
them without a Python float per element.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import numpy as np

from qcluster.storage.interface import CollectionInfo, UpdateResult
from qcluster.types import DEFAULT_VECTOR, CollectionConfig, HnswConfig, Record, ScoredColumns, ScoredPoint, VectorParams

__all__ = [
    "render_collection_info",
    "render_record",
    "render_scored_point",
    "render_update_result",
    "render_vectors",
]


def render_vectors(vectors: dict[str, np.ndarray] | None, *, is_named: bool) -> Any:
    """The unnamed vector as a bare list; named vectors as ``{name: [...]}``."""
    if vectors is None:
        return None
    if not is_named:
        vector = vectors.get(DEFAULT_VECTOR)
        return None if vector is None else np.ascontiguousarray(vector, dtype=np.float32)
    return {name: np.ascontiguousarray(vector, dtype=np.float32) for name, vector in vectors.items()}


def render_record(record: Record, *, is_named: bool) -> dict[str, Any]:
    return {
        "id": record.id,
        "payload": record.payload,
        "vector": render_vectors(record.vectors, is_named=is_named),
        "shard_key": None,
        "order_value": record.order_value,
    }


def render_scored_point(point: ScoredPoint, *, is_named: bool) -> dict[str, Any]:
    return {
        "id": point.id,
        "version": int(point.version),
        "score": float(point.score),
        "payload": point.payload,
        "vector": render_vectors(point.vectors, is_named=is_named),
        "shard_key": None,
        "order_value": None,
    }


def render_scored_columns(columns: ScoredColumns) -> list[list[dict[str, Any]]]:
    """Per query row, its hits as ``render_scored_point`` renders a plain
    ScoredPoint (no payload, no vector)."""
    hits = [
        {"id": point_id, "version": version, "score": score, "payload": None, "vector": None, "shard_key": None,
         "order_value": None}
        for point_id, version, score in zip(columns.id_list(), columns.versions.tolist(), columns.scores.tolist(),
                                            strict=True)
    ]
    ends = np.cumsum(columns.counts).tolist()
    return [hits[end - count:end] for end, count in zip(ends, columns.counts.tolist(), strict=True)]


def render_update_result(result: UpdateResult) -> dict[str, Any]:
    return {"operation_id": result.operation_id, "status": result.status.value}


def _hnsw(config: HnswConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _vector_params(params: VectorParams) -> dict[str, Any]:
    rendered: dict[str, Any] = {"size": params.size, "distance": params.distance.value, "on_disk": params.on_disk}
    if params.hnsw_config is not None:
        rendered["hnsw_config"] = _hnsw(params.hnsw_config)
    return rendered


def render_vectors_config(config: CollectionConfig) -> dict[str, Any]:
    if not config.is_named_vectors:
        return _vector_params(config.vectors[DEFAULT_VECTOR])
    return {name: _vector_params(params) for name, params in config.vectors.items()}


def render_collection_config(config: CollectionConfig) -> dict[str, Any]:
    optimizers = dataclasses.asdict(config.optimizers_config)
    return {
        "params": {
            "vectors": render_vectors_config(config),
            "shard_number": config.shard_number,
            "sharding_method": "custom" if config.custom_sharding else "auto",
            "replication_factor": config.replication_factor,
            "write_consistency_factor": config.write_consistency_factor,
            "on_disk_payload": config.on_disk_payload,
        },
        "hnsw_config": _hnsw(config.hnsw_config),
        "optimizer_config": optimizers,
        "wal_config": {
            "wal_capacity_mb": config.wal_config.wal_capacity_mb,
            "wal_segments_ahead": config.wal_config.wal_segments_ahead,
        },
        "quantization_config": None,
    }


def render_collection_info(info: CollectionInfo, *, config: CollectionConfig, created_at: datetime | None) -> dict[str, Any]:
    return {
        "status": info.status.value,
        "optimizer_status": "ok",
        "warnings": [{"message": message} for message in info.warnings],
        "segments_count": info.segments_count,
        "points_count": info.points_count,
        "indexed_vectors_count": info.indexed_vectors_count,
        "config": render_collection_config(config),
        "payload_schema": {
            field: {
                "data_type": index.schema.type.value,
                "params": index.schema.to_json(),
                "points": index.points,
                # qcluster extension: live points whose value at the key has another type.
                "type_violations": index.type_violations,
            }
            for field, index in info.payload_schema.items()
        },
        "created_at": None if created_at is None else created_at.isoformat(),
    }
