"""Collection-level requests: create, patch, aliases and payload indexes."""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from qcluster import limits
from qcluster.api.schema.parse import (
    check_collection_name,
    check_keys,
    get_bool,
    get_float,
    get_int,
    get_list,
    get_object,
    get_str,
    join,
    json_type,
    reject_unsupported,
)
from qcluster.engine.filters import validate_key
from qcluster.errors import InvalidRequest, LimitExceeded
from qcluster.operations import CreateFieldIndex
from qcluster.storage.interface import AliasAction
from qcluster.types import (
    DEFAULT_VECTOR,
    CollectionConfig,
    CollectionPatch,
    Distance,
    HnswConfig,
    OptimizersConfig,
    PayloadFieldSchema,
    PayloadSchemaType,
    VectorParams,
    WalConfig,
)

__all__ = [
    "parse_alias_actions",
    "parse_create_collection",
    "parse_create_index",
    "parse_update_collection",
]

_SHARD_NUMBER_MAX: Final = 1024
_REPLICATION_FACTOR_MAX: Final = 16


def _hnsw_changes(raw: dict[str, Any], *, path: str) -> dict[str, Any]:
    check_keys(raw, ("m", "ef_construct", "full_scan_threshold", "max_indexing_threads", "on_disk",
                     "payload_m", "memory", "inline_storage"), path=path)
    reject_unsupported(raw, ("memory",), path=path)
    changes: dict[str, Any] = {
        "m": get_int(raw, "m", path=path, default=None, minimum=0, maximum=limits.HNSW_M_MAX, limit_name="HNSW_M_MAX"),
        "ef_construct": get_int(raw, "ef_construct", path=path, default=None, minimum=4,
                                maximum=limits.HNSW_EF_MAX, limit_name="HNSW_EF_MAX"),
        "full_scan_threshold": get_int(raw, "full_scan_threshold", path=path, default=None, minimum=0),
        "max_indexing_threads": get_int(raw, "max_indexing_threads", path=path, default=None, minimum=0),
        "payload_m": get_int(raw, "payload_m", path=path, default=None, minimum=0,
                             maximum=limits.HNSW_M_MAX, limit_name="HNSW_M_MAX"),
        "on_disk": None if raw.get("on_disk") is None else get_bool(raw, "on_disk", path=path, default=False),
    }
    get_bool(raw, "inline_storage", path=path, default=False)
    return {key: value for key, value in changes.items() if value is not None}


def _optimizer_changes(raw: dict[str, Any], *, path: str) -> dict[str, Any]:
    check_keys(raw, ("deleted_threshold", "vacuum_min_vector_number", "default_segment_number",
                     "max_segment_size", "memmap_threshold", "indexing_threshold", "flush_interval_sec",
                     "max_optimization_threads", "prevent_unoptimized"), path=path)
    threads = raw.get("max_optimization_threads")
    if threads == "auto":
        threads = None
    elif threads is not None:
        threads = get_int(raw, "max_optimization_threads", path=path, default=None, minimum=0)
    changes: dict[str, Any] = {
        "deleted_threshold": get_float(raw, "deleted_threshold", path=path, minimum=0.0, maximum=1.0),
        "vacuum_min_vector_number": get_int(raw, "vacuum_min_vector_number", path=path, default=None, minimum=0),
        "default_segment_number": get_int(raw, "default_segment_number", path=path, default=None, minimum=0),
        "max_segment_size": get_int(raw, "max_segment_size", path=path, default=None, minimum=1),
        "memmap_threshold": get_int(raw, "memmap_threshold", path=path, default=None, minimum=0),
        "indexing_threshold": get_int(raw, "indexing_threshold", path=path, default=None, minimum=0),
        "flush_interval_sec": get_int(raw, "flush_interval_sec", path=path, default=None, minimum=0),
        "max_optimization_threads": threads,
    }
    get_bool(raw, "prevent_unoptimized", path=path, default=False)
    return {key: value for key, value in changes.items() if value is not None}


def _wal_changes(raw: dict[str, Any], *, path: str) -> dict[str, Any]:
    check_keys(raw, ("wal_capacity_mb", "wal_segments_ahead", "wal_retain_closed"), path=path)
    get_int(raw, "wal_retain_closed", path=path, default=None, minimum=0)
    changes = {
        "wal_capacity_mb": get_int(raw, "wal_capacity_mb", path=path, default=None, minimum=1),
        "wal_segments_ahead": get_int(raw, "wal_segments_ahead", path=path, default=None, minimum=0),
    }
    return {key: value for key, value in changes.items() if value is not None}


def _distance(raw: dict[str, Any], *, path: str) -> Distance:
    value = raw.get("distance")
    if value is None:
        raise InvalidRequest(f"{join(path, 'distance')}: missing required field")
    try:
        return Distance(value)
    except ValueError as exc:
        known = ", ".join(distance.value for distance in Distance)
        raise InvalidRequest(f"{join(path, 'distance')}: unknown distance {value!r}, expected one of {known}") from exc


def _vector_params(raw: Any, *, path: str) -> VectorParams:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: expected an object, got {json_type(raw)}")
    check_keys(raw, ("size", "distance", "on_disk", "hnsw_config", "quantization_config", "datatype",
                     "multivector_config", "memory"), path=path)
    reject_unsupported(raw, ("quantization_config", "multivector_config", "memory"), path=path)
    datatype = get_str(raw, "datatype", path=path)
    if datatype not in (None, "float32"):
        raise InvalidRequest(f"{join(path, 'datatype')}: only float32 is supported by qcluster, got {datatype!r}")
    if raw.get("size") is None:
        raise InvalidRequest(f"{join(path, 'size')}: missing required field")
    size = get_int(raw, "size", path=path, default=None, minimum=1, maximum=limits.VECTOR_DIM_MAX,
                   limit_name="VECTOR_DIM_MAX")
    assert size is not None
    hnsw_raw = get_object(raw, "hnsw_config", path=path)
    hnsw = None
    if hnsw_raw is not None:
        hnsw = dataclasses.replace(HnswConfig(), **_hnsw_changes(hnsw_raw, path=join(path, "hnsw_config")))
    return VectorParams(
        size=size,
        distance=_distance(raw, path=path),
        on_disk=get_bool(raw, "on_disk", path=path, default=False),
        hnsw_config=hnsw,
    )


def _vectors(raw: Any, *, path: str) -> tuple[dict[str, VectorParams], bool]:
    """Single unnamed vector params, or ``{name: params}``; returns (vectors, is_named)."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: expected an object, got {json_type(raw)}")
    if "size" in raw or "distance" in raw:
        return {DEFAULT_VECTOR: _vector_params(raw, path=path)}, False
    if not raw:
        raise InvalidRequest(f"{path}: expected vector params or at least one named vector")
    if len(raw) > limits.VECTOR_NAMES_MAX:
        raise LimitExceeded(f"{path}: {len(raw)} named vectors exceeds {limits.VECTOR_NAMES_MAX} (VECTOR_NAMES_MAX)")
    vectors = {}
    for name, params in raw.items():
        if len(name) > limits.KEY_LENGTH_MAX:
            raise LimitExceeded(f"{path}: vector name longer than {limits.KEY_LENGTH_MAX} (KEY_LENGTH_MAX)")
        vectors[name] = _vector_params(params, path=join(path, name))
    return vectors, True


_CREATE_KEYS: Final = (
    "vectors", "shard_number", "sharding_method", "replication_factor", "write_consistency_factor",
    "on_disk_payload", "hnsw_config", "wal_config", "optimizers_config", "quantization_config",
    "sparse_vectors", "strict_mode_config", "metadata", "init_from", "payload", "id_tracker",
)


def _collection_params(raw: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {
        "shard_number": get_int(raw, "shard_number", path="", default=1, minimum=1, maximum=_SHARD_NUMBER_MAX),
        "replication_factor": get_int(raw, "replication_factor", path="", default=1, minimum=1,
                                      maximum=_REPLICATION_FACTOR_MAX),
        "write_consistency_factor": get_int(raw, "write_consistency_factor", path="", default=1, minimum=1,
                                            maximum=_REPLICATION_FACTOR_MAX),
        "on_disk_payload": get_bool(raw, "on_disk_payload", path="", default=True),
        "custom_sharding": raw.get("sharding_method") == "custom",
    }
    if params["write_consistency_factor"] > params["replication_factor"]:
        raise InvalidRequest("write_consistency_factor: must not exceed replication_factor")
    return params


def parse_create_collection(raw: dict[str, Any]) -> CollectionConfig:
    """The body of ``PUT /collections/{name}`` (Qdrant's CreateCollection)."""
    check_keys(raw, _CREATE_KEYS, path="")
    if raw.get("sparse_vectors"):
        raise InvalidRequest("sparse_vectors: sparse vectors are not supported by qcluster")
    reject_unsupported(raw, ("quantization_config", "strict_mode_config", "metadata", "init_from", "payload",
                             "id_tracker"), path="")
    if raw.get("sharding_method") not in (None, "auto", "custom"):
        raise InvalidRequest(f"sharding_method: expected auto or custom, got {raw.get('sharding_method')!r}")
    if raw.get("vectors") is None:
        raise InvalidRequest("vectors: missing required field")
    vectors, is_named = _vectors(raw["vectors"], path="vectors")
    hnsw_raw = get_object(raw, "hnsw_config", path="") or {}
    optimizers_raw = get_object(raw, "optimizers_config", path="") or {}
    wal_raw = get_object(raw, "wal_config", path="") or {}
    return CollectionConfig(
        vectors=vectors,
        is_named_vectors=is_named,
        hnsw_config=dataclasses.replace(HnswConfig(), **_hnsw_changes(hnsw_raw, path="hnsw_config")),
        optimizers_config=dataclasses.replace(
            OptimizersConfig(), **_optimizer_changes(optimizers_raw, path="optimizers_config")
        ),
        wal_config=dataclasses.replace(WalConfig(), **_wal_changes(wal_raw, path="wal_config")),
        **_collection_params(raw),
    )


def _vector_patch(raw: Any, *, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: expected an object, got {json_type(raw)}")
    check_keys(raw, ("hnsw_config", "quantization_config", "on_disk", "memory"), path=path)
    reject_unsupported(raw, ("quantization_config", "memory"), path=path)
    patch: dict[str, Any] = {}
    hnsw = get_object(raw, "hnsw_config", path=path)
    if hnsw is not None:
        patch["hnsw_config"] = _hnsw_changes(hnsw, path=join(path, "hnsw_config"))
    if raw.get("on_disk") is not None:
        patch["on_disk"] = get_bool(raw, "on_disk", path=path, default=False)
    return patch


def _params_patch(raw: dict[str, Any], *, path: str) -> dict[str, Any]:
    check_keys(raw, ("replication_factor", "write_consistency_factor", "read_fan_out_factor",
                     "read_fan_out_delay_ms", "on_disk_payload", "payload", "id_tracker"), path=path)
    reject_unsupported(raw, ("read_fan_out_factor", "read_fan_out_delay_ms", "payload", "id_tracker"), path=path)
    patch = {
        "replication_factor": get_int(raw, "replication_factor", path=path, default=None, minimum=1,
                                      maximum=_REPLICATION_FACTOR_MAX),
        "write_consistency_factor": get_int(raw, "write_consistency_factor", path=path, default=None, minimum=1,
                                            maximum=_REPLICATION_FACTOR_MAX),
        "on_disk_payload": None if raw.get("on_disk_payload") is None
        else get_bool(raw, "on_disk_payload", path=path, default=True),
    }
    return {key: value for key, value in patch.items() if value is not None}


def parse_update_collection(raw: dict[str, Any]) -> CollectionPatch:
    """The body of ``PATCH /collections/{name}`` (Qdrant's UpdateCollection)."""
    check_keys(raw, ("vectors", "optimizers_config", "params", "hnsw_config", "quantization_config",
                     "sparse_vectors", "strict_mode_config", "metadata"), path="")
    if raw.get("sparse_vectors"):
        raise InvalidRequest("sparse_vectors: sparse vectors are not supported by qcluster")
    reject_unsupported(raw, ("quantization_config", "strict_mode_config", "metadata"), path="")
    vectors_raw = get_object(raw, "vectors", path="")
    hnsw_raw = get_object(raw, "hnsw_config", path="")
    optimizers_raw = get_object(raw, "optimizers_config", path="")
    params_raw = get_object(raw, "params", path="")
    return CollectionPatch(
        vectors=None if vectors_raw is None
        else {name: _vector_patch(value, path=join("vectors", name)) for name, value in vectors_raw.items()},
        hnsw_config=None if hnsw_raw is None else _hnsw_changes(hnsw_raw, path="hnsw_config"),
        optimizers_config=None if optimizers_raw is None
        else _optimizer_changes(optimizers_raw, path="optimizers_config"),
        params=None if params_raw is None else _params_patch(params_raw, path="params"),
    )


def _alias_action(item: Any, *, path: str) -> AliasAction:
    if not isinstance(item, dict) or len(item) != 1:
        raise InvalidRequest(f"{path}: expected an object with exactly one of create_alias, delete_alias, rename_alias")
    (kind, body), = item.items()
    body_path = join(path, kind)
    if not isinstance(body, dict):
        raise InvalidRequest(f"{body_path}: expected an object, got {json_type(body)}")

    def name(key: str) -> str:
        value = get_str(body, key, path=body_path, required=True)
        assert value is not None
        return check_collection_name(value, what=join(body_path, key))

    match kind:
        case "create_alias":
            check_keys(body, ("collection_name", "alias_name"), path=body_path)
            return AliasAction(kind="create", alias_name=name("alias_name"), collection_name=name("collection_name"))
        case "delete_alias":
            check_keys(body, ("alias_name",), path=body_path)
            return AliasAction(kind="delete", alias_name=name("alias_name"))
        case "rename_alias":
            check_keys(body, ("old_alias_name", "new_alias_name"), path=body_path)
            return AliasAction(kind="rename", old_alias_name=name("old_alias_name"),
                               new_alias_name=name("new_alias_name"))
    raise InvalidRequest(f"{path}: unknown alias action {kind!r}")


def parse_alias_actions(raw: dict[str, Any]) -> list[AliasAction]:
    check_keys(raw, ("actions",), path="")
    actions = get_list(raw, "actions", path="", required=True)
    assert actions is not None
    if len(actions) > limits.BATCH_OPERATIONS_MAX:
        raise LimitExceeded(f"actions: more than {limits.BATCH_OPERATIONS_MAX} actions (BATCH_OPERATIONS_MAX)")
    return [_alias_action(item, path=f"actions[{index}]") for index, item in enumerate(actions)]


_INDEX_PARAM_KEYS: Final[dict[PayloadSchemaType, tuple[str, ...]]] = {
    PayloadSchemaType.KEYWORD: ("is_tenant", "on_disk", "enable_hnsw"),
    PayloadSchemaType.UUID: ("is_tenant", "on_disk", "enable_hnsw"),
    PayloadSchemaType.INTEGER: ("lookup", "range", "is_principal", "on_disk", "enable_hnsw"),
    PayloadSchemaType.FLOAT: ("is_principal", "on_disk", "enable_hnsw"),
    PayloadSchemaType.DATETIME: ("is_principal", "on_disk", "enable_hnsw"),
    PayloadSchemaType.BOOL: ("on_disk", "enable_hnsw"),
    PayloadSchemaType.TEXT: ("tokenizer", "min_token_len", "max_token_len", "lowercase", "on_disk", "enable_hnsw",
                             "ascii_folding", "phrase_matching", "stopwords", "stemmer"),
}


def _schema_type(value: Any, *, path: str) -> PayloadSchemaType:
    if value == "geo":
        raise InvalidRequest(f"{path}: geo indexes are not supported by qcluster")
    try:
        return PayloadSchemaType(value)
    except ValueError as exc:
        known = ", ".join(item.value for item in PayloadSchemaType)
        raise InvalidRequest(f"{path}: unknown payload schema type {value!r}, expected one of {known}") from exc


def _text_options(raw: dict[str, Any], *, path: str) -> dict[str, Any]:
    tokenizer = get_str(raw, "tokenizer", path=path)
    if tokenizer not in (None, "word"):
        raise InvalidRequest(f"{join(path, 'tokenizer')}: only the 'word' tokenizer is supported by qcluster")
    reject_unsupported(raw, ("stopwords", "stemmer"), path=path)
    for flag in ("ascii_folding", "phrase_matching"):
        if get_bool(raw, flag, path=path, default=False):
            raise InvalidRequest(f"{join(path, flag)}: not supported by qcluster")
    return {
        "lowercase": get_bool(raw, "lowercase", path=path, default=True),
        "min_token_len": get_int(raw, "min_token_len", path=path, default=None, minimum=0),
        "max_token_len": get_int(raw, "max_token_len", path=path, default=None, minimum=1),
    }


def _field_schema(raw: Any, *, path: str) -> PayloadFieldSchema:
    if isinstance(raw, str):
        return PayloadFieldSchema(type=_schema_type(raw, path=path))
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: expected a schema type name or an object, got {json_type(raw)}")
    schema_type = _schema_type(raw.get("type"), path=join(path, "type"))
    check_keys(raw, ("type", *_INDEX_PARAM_KEYS[schema_type]), path=path)
    for flag in ("on_disk", "enable_hnsw"):
        get_bool(raw, flag, path=path, default=False)
    options: dict[str, Any] = {}
    match schema_type:
        case PayloadSchemaType.KEYWORD | PayloadSchemaType.UUID:
            options["is_tenant"] = get_bool(raw, "is_tenant", path=path, default=False)
        case PayloadSchemaType.INTEGER:
            options["lookup"] = get_bool(raw, "lookup", path=path, default=True)
            options["range"] = get_bool(raw, "range", path=path, default=True)
            options["is_principal"] = get_bool(raw, "is_principal", path=path, default=False)
            if not (options["lookup"] or options["range"]):
                raise InvalidRequest(f"{path}: lookup and range cannot both be false")
        case PayloadSchemaType.FLOAT | PayloadSchemaType.DATETIME:
            options["is_principal"] = get_bool(raw, "is_principal", path=path, default=False)
        case PayloadSchemaType.TEXT:
            options.update(_text_options(raw, path=path))
        case PayloadSchemaType.BOOL:
            pass
    return PayloadFieldSchema(type=schema_type, **options)


def parse_create_index(raw: dict[str, Any]) -> CreateFieldIndex:
    """The body of ``PUT /collections/{name}/index``."""
    check_keys(raw, ("field_name", "field_schema"), path="")
    field_name = get_str(raw, "field_name", path="", required=True)
    assert field_name is not None
    validate_key(field_name, path="field_name")
    if raw.get("field_schema") is None:
        raise InvalidRequest("field_schema: missing required field (qcluster does not infer index types)")
    return CreateFieldIndex(field_name=field_name, schema=_field_schema(raw["field_schema"], path="field_schema"))
