"""CollectionConfig <-> JSON for the collection's config.json, and PATCH application."""

from __future__ import annotations

import dataclasses
from typing import Any

from qcluster.errors import InvalidRequest
from qcluster.types import (
    CollectionConfig,
    CollectionPatch,
    Distance,
    HnswConfig,
    OptimizersConfig,
    VectorParams,
    WalConfig,
)

__all__ = ["apply_patch", "config_from_json", "config_to_json", "replace_checked"]


def config_to_json(config: CollectionConfig) -> dict[str, Any]:
    def vector(params: VectorParams) -> dict[str, Any]:
        return {
            "size": params.size,
            "distance": params.distance.value,
            "on_disk": params.on_disk,
            "hnsw_config": None if params.hnsw_config is None else dataclasses.asdict(params.hnsw_config),
        }

    return {
        "vectors": {name: vector(params) for name, params in config.vectors.items()},
        "is_named_vectors": config.is_named_vectors,
        "shard_number": config.shard_number,
        "sharding_method": "custom" if config.custom_sharding else "auto",
        "replication_factor": config.replication_factor,
        "write_consistency_factor": config.write_consistency_factor,
        "on_disk_payload": config.on_disk_payload,
        "hnsw_config": dataclasses.asdict(config.hnsw_config),
        "optimizers_config": dataclasses.asdict(config.optimizers_config),
        "wal_config": dataclasses.asdict(config.wal_config),
    }


def config_from_json(raw: dict[str, Any]) -> CollectionConfig:
    vectors = {
        name: VectorParams(
            size=value["size"],
            distance=Distance(value["distance"]),
            on_disk=value["on_disk"],
            hnsw_config=None if value["hnsw_config"] is None else HnswConfig(**value["hnsw_config"]),
        )
        for name, value in raw["vectors"].items()
    }
    wal = dict(raw["wal_config"])
    return CollectionConfig(
        vectors=vectors,
        is_named_vectors=raw["is_named_vectors"],
        shard_number=raw["shard_number"],
        custom_sharding=raw.get("sharding_method", "auto") == "custom",
        replication_factor=raw["replication_factor"],
        write_consistency_factor=raw["write_consistency_factor"],
        on_disk_payload=raw["on_disk_payload"],
        hnsw_config=HnswConfig(**raw["hnsw_config"]),
        optimizers_config=OptimizersConfig(**raw["optimizers_config"]),
        wal_config=WalConfig(**wal),
    )


def replace_checked(value: Any, changes: dict[str, Any], *, path: str) -> Any:
    """``dataclasses.replace`` that names unknown fields and wrong types in its error."""
    known = {field.name: field for field in dataclasses.fields(value)}
    clean = {}
    for key, new in changes.items():
        if key not in known:
            raise InvalidRequest(f"{path}.{key}: unknown field; expected one of {sorted(known)}")
        if new is None:
            continue
        current = getattr(value, key)
        if isinstance(current, bool) != isinstance(new, bool) and current is not None:
            raise InvalidRequest(f"{path}.{key}: expected {type(current).__name__}, got {type(new).__name__}")
        if isinstance(current, (int, float)) and not isinstance(current, bool):
            if isinstance(new, bool) or not isinstance(new, (int, float)) or new < 0:
                raise InvalidRequest(f"{path}.{key}: expected a non-negative number, got {new!r}")
        clean[key] = new
    return dataclasses.replace(value, **clean)


def apply_patch(config: CollectionConfig, patch: CollectionPatch) -> CollectionConfig:
    """The config with a PATCH applied; vector size and distance cannot change."""
    updated = config
    if patch.hnsw_config:
        updated = dataclasses.replace(
            updated, hnsw_config=replace_checked(updated.hnsw_config, patch.hnsw_config, path="hnsw_config")
        )
    if patch.optimizers_config:
        updated = dataclasses.replace(
            updated,
            optimizers_config=replace_checked(
                updated.optimizers_config, patch.optimizers_config, path="optimizers_config"
            ),
        )
    if patch.params:
        allowed = {"replication_factor", "write_consistency_factor", "on_disk_payload"}
        for key in patch.params:
            if key not in allowed:
                raise InvalidRequest(f"params.{key}: cannot be changed; changeable: {sorted(allowed)}")
        updated = replace_checked(updated, patch.params, path="params")
    if patch.vectors:
        vectors = dict(updated.vectors)
        for name, changes in patch.vectors.items():
            params = updated.vector_params(name, path=f"vectors.{name}")
            changes = dict(changes)
            hnsw = changes.pop("hnsw_config", None)
            for key in changes:
                if key != "on_disk":
                    raise InvalidRequest(f"vectors.{name}.{key}: cannot be changed after creation")
            params = replace_checked(params, changes, path=f"vectors.{name}")
            if hnsw:
                base = params.hnsw_config or updated.hnsw_config
                params = dataclasses.replace(params, hnsw_config=replace_checked(base, hnsw, path=f"vectors.{name}.hnsw_config"))
            vectors[name] = params
        updated = dataclasses.replace(updated, vectors=vectors)
    return updated
