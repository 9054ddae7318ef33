"""Point write requests: upserts (points and batch forms), selectors, payload
and vector updates, and the ``/points/batch`` operation list.

Vectors are checked against the collection's configuration (names,
dimensions, finiteness) here, so a bad request is rejected before storage is
touched and its message names the JSON path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qcluster import limits
from qcluster.api.schema.parse import (
    check_keys,
    check_payload,
    get_list,
    get_object,
    get_str,
    join,
    json_type,
    optional_filter,
    point_id,
    point_ids,
    reject_unsupported,
)
from qcluster.api.schema.vectors import check_dense_matrix, vector_matrix
from qcluster.errors import InvalidRequest, LimitExceeded
from qcluster.operations import (
    ClearPayload,
    DeletePayload,
    DeletePoints,
    DeleteVectors,
    Operation,
    OverwritePayload,
    PointSelector,
    PointsBatch,
    SetPayload,
    UpdateVectors,
    UpsertPoints,
)
from qcluster.types import DEFAULT_VECTOR, CollectionConfig, PointId

__all__ = [
    "parse_batch_operations",
    "parse_clear_payload",
    "parse_delete_payload",
    "parse_delete_points",
    "parse_delete_vectors",
    "parse_dense_upsert",
    "parse_overwrite_payload",
    "parse_set_payload",
    "parse_update_vectors",
    "parse_upsert",
    "points_batch_from_columns",
]

# name -> (raw rows, index of the point each row belongs to, path of each row)
_Columns = dict[str, tuple[list[Any], list[int], list[str]]]


def _check_count(count: int, *, path: str) -> None:
    if count > limits.POINTS_PER_REQUEST_MAX:
        raise LimitExceeded(
            f"{path}: {count} points exceeds the maximum of {limits.POINTS_PER_REQUEST_MAX} "
            "per request (POINTS_PER_REQUEST_MAX)"
        )


def points_batch_from_columns(
    *, ids: list[PointId], columns: _Columns, payloads: list[dict[str, Any] | None], config: CollectionConfig
) -> PointsBatch:
    """Assemble one float32 matrix per vector name, with a presence mask when
    some points do not carry that vector."""
    count = len(ids)
    assert len(payloads) == count
    vectors: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray | None] = {}
    for name, (rows, indices, paths) in columns.items():
        params = config.vector_params(name, path=paths[0])
        matrix = vector_matrix(rows, dim=params.size, row_path=paths.__getitem__)
        if len(indices) == count and indices == list(range(count)):
            vectors[name], present[name] = matrix, None
            continue
        if len(set(indices)) != len(indices):
            raise InvalidRequest(f"{paths[0]}: vector {name!r} given twice for one point")
        full = np.zeros((count, params.size), dtype=np.float32)
        mask = np.zeros(count, dtype=np.bool_)
        full[indices] = matrix
        mask[indices] = True
        vectors[name], present[name] = full, mask
    return PointsBatch(ids=tuple(ids), vectors=vectors, present=present, payloads=tuple(payloads))


def _add_point_vector(columns: _Columns, vector: Any, *, index: int, path: str) -> None:
    if isinstance(vector, list):
        rows, indices, paths = columns.setdefault(DEFAULT_VECTOR, ([], [], []))
        rows.append(vector)
        indices.append(index)
        paths.append(path)
        return
    if isinstance(vector, dict):
        for name, value in vector.items():
            if isinstance(value, dict) and ("indices" in value or "values" in value):
                raise InvalidRequest(f"{join(path, name)}: sparse vectors are not supported by qcluster")
            rows, indices, paths = columns.setdefault(name, ([], [], []))
            rows.append(value)
            indices.append(index)
            paths.append(join(path, name))
        return
    raise InvalidRequest(f"{path}: expected an array of numbers or an object of named vectors, got {json_type(vector)}")


def _batch_from_point_list(
    raw: list[Any], *, config: CollectionConfig, path: str, has_payload: bool
) -> PointsBatch:
    _check_count(len(raw), path=path)
    ids: list[PointId] = []
    payloads: list[dict[str, Any] | None] = []
    columns: _Columns = {}
    allowed = ("id", "vector", "payload") if has_payload else ("id", "vector")
    for index, point in enumerate(raw):
        point_path = f"{path}[{index}]"
        if not isinstance(point, dict):
            raise InvalidRequest(f"{point_path}: expected an object, got {json_type(point)}")
        check_keys(point, allowed, path=point_path)
        if point.get("id") is None:
            raise InvalidRequest(f"{point_path}.id: missing required field")
        ids.append(point_id(point["id"], path=f"{point_path}.id"))
        if point.get("vector") is None:
            raise InvalidRequest(f"{point_path}.vector: missing required field")
        _add_point_vector(columns, point["vector"], index=index, path=f"{point_path}.vector")
        payloads.append(check_payload(point.get("payload"), path=f"{point_path}.payload"))
    return points_batch_from_columns(ids=ids, columns=columns, payloads=payloads, config=config)


def _batch_columns(raw_vectors: Any, *, count: int, path: str) -> _Columns:
    if isinstance(raw_vectors, list):
        named = {DEFAULT_VECTOR: raw_vectors}
        paths_of = {DEFAULT_VECTOR: path}
    elif isinstance(raw_vectors, dict):
        named = raw_vectors
        paths_of = {name: join(path, name) for name in raw_vectors}
    else:
        raise InvalidRequest(f"{path}: expected an array of vectors or an object of named vector arrays")
    columns: _Columns = {}
    for name, rows in named.items():
        if not isinstance(rows, list):
            raise InvalidRequest(f"{paths_of[name]}: expected an array of vectors, got {json_type(rows)}")
        if len(rows) != count:
            raise InvalidRequest(f"{paths_of[name]}: has {len(rows)} vectors for {count} ids")
        columns[name] = (rows, list(range(count)), [f"{paths_of[name]}[{i}]" for i in range(count)])
    return columns


def _batch_from_columns_form(raw: Any, *, config: CollectionConfig, path: str) -> PointsBatch:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: expected an object, got {json_type(raw)}")
    check_keys(raw, ("ids", "vectors", "payloads"), path=path)
    raw_ids = get_list(raw, "ids", path=path, required=True)
    assert raw_ids is not None
    ids = list(point_ids(raw_ids, path=f"{path}.ids"))
    if raw.get("vectors") is None:
        raise InvalidRequest(f"{path}.vectors: missing required field")
    columns = _batch_columns(raw["vectors"], count=len(ids), path=f"{path}.vectors")
    raw_payloads = get_list(raw, "payloads", path=path)
    if raw_payloads is None:
        payloads: list[dict[str, Any] | None] = [None] * len(ids)
    else:
        if len(raw_payloads) != len(ids):
            raise InvalidRequest(f"{path}.payloads: has {len(raw_payloads)} payloads for {len(ids)} ids")
        payloads = [check_payload(item, path=f"{path}.payloads[{i}]") for i, item in enumerate(raw_payloads)]
    return points_batch_from_columns(ids=ids, columns=columns, payloads=payloads, config=config)


def parse_upsert(raw: dict[str, Any], *, config: CollectionConfig, path: str = "") -> UpsertPoints:
    """``{"points": [...]}`` or ``{"batch": {"ids", "vectors", "payloads"}}``."""
    check_keys(raw, ("points", "batch", "shard_key", "update_filter", "update_mode"), path=path)
    reject_unsupported(raw, ("shard_key", "update_filter", "update_mode"), path=path)
    has_points = raw.get("points") is not None
    has_batch = raw.get("batch") is not None
    if has_points == has_batch:
        raise InvalidRequest(f"{path or 'body'}: expected exactly one of points or batch")
    if has_points:
        points = get_list(raw, "points", path=path, required=True)
        assert points is not None
        return UpsertPoints(points=_batch_from_point_list(points, config=config, path=join(path, "points"), has_payload=True))
    return UpsertPoints(points=_batch_from_columns_form(raw["batch"], config=config, path=join(path, "batch")))


def parse_dense_upsert(
    *, raw_ids: list[Any], vectors: dict[str, np.ndarray], raw_payloads: list[Any] | None, config: CollectionConfig
) -> UpsertPoints:
    """An upsert whose vectors arrived as float32 matrices (the dense gRPC
    extension); validated like the JSON forms, with the same limits."""
    _check_count(len(raw_ids), path="ids")
    ids = list(point_ids(raw_ids, path="ids"))
    if not vectors:
        raise InvalidRequest("vectors: missing required field")
    checked: dict[str, np.ndarray] = {}
    for name, matrix in vectors.items():
        path = f"vectors.{name}" if name else "vectors"
        params = config.vector_params(name, path=path)
        checked[name] = check_dense_matrix(matrix, dim=params.size, rows=len(ids), path=path)
    if raw_payloads is None:
        payloads: list[dict[str, Any] | None] = [None] * len(ids)
    else:
        if len(raw_payloads) != len(ids):
            raise InvalidRequest(f"payloads: has {len(raw_payloads)} payloads for {len(ids)} ids")
        payloads = [check_payload(item, path=f"payloads[{i}]") for i, item in enumerate(raw_payloads)]
    return UpsertPoints(points=PointsBatch(ids=tuple(ids), vectors=checked, present=dict.fromkeys(checked),
                                           payloads=tuple(payloads)))


def _selector(raw: dict[str, Any], *, path: str) -> PointSelector:
    has_ids = raw.get("points") is not None
    has_filter = raw.get("filter") is not None
    if has_ids and has_filter:
        raise InvalidRequest(f"{path or 'body'}: expected either points or filter, not both")
    if has_ids:
        return PointSelector(ids=point_ids(raw["points"], path=join(path, "points")))
    if has_filter:
        return PointSelector(filter=optional_filter(raw, "filter", path=path))
    raise InvalidRequest(f"{path or 'body'}: expected points (a list of ids) or filter")


def parse_delete_points(raw: dict[str, Any], *, path: str = "") -> DeletePoints:
    check_keys(raw, ("points", "filter", "shard_key"), path=path)
    reject_unsupported(raw, ("shard_key",), path=path)
    return DeletePoints(selector=_selector(raw, path=path))


def parse_clear_payload(raw: dict[str, Any], *, path: str = "") -> ClearPayload:
    check_keys(raw, ("points", "filter", "shard_key"), path=path)
    reject_unsupported(raw, ("shard_key",), path=path)
    return ClearPayload(selector=_selector(raw, path=path))


def _payload_body(raw: dict[str, Any], *, path: str) -> dict[str, Any]:
    check_keys(raw, ("payload", "points", "filter", "shard_key", "key"), path=path)
    reject_unsupported(raw, ("shard_key",), path=path)
    payload = get_object(raw, "payload", path=path, required=True)
    assert payload is not None
    checked = check_payload(payload, path=join(path, "payload"))
    assert checked is not None
    return checked


def parse_set_payload(raw: dict[str, Any], *, path: str = "") -> SetPayload:
    payload = _payload_body(raw, path=path)
    key = get_str(raw, "key", path=path)
    if key is not None and len(key) > limits.KEY_LENGTH_MAX:
        raise LimitExceeded(f"{join(path, 'key')}: longer than {limits.KEY_LENGTH_MAX} (KEY_LENGTH_MAX)")
    return SetPayload(selector=_selector(raw, path=path), payload=payload, key=key)


def parse_overwrite_payload(raw: dict[str, Any], *, path: str = "") -> OverwritePayload:
    payload = _payload_body(raw, path=path)
    reject_unsupported(raw, ("key",), path=path)
    return OverwritePayload(selector=_selector(raw, path=path), payload=payload)


def parse_delete_payload(raw: dict[str, Any], *, path: str = "") -> DeletePayload:
    check_keys(raw, ("keys", "points", "filter", "shard_key"), path=path)
    reject_unsupported(raw, ("shard_key",), path=path)
    keys = get_list(raw, "keys", path=path, required=True)
    assert keys is not None
    if not all(isinstance(key, str) for key in keys):
        raise InvalidRequest(f"{join(path, 'keys')}: expected an array of strings")
    return DeletePayload(selector=_selector(raw, path=path), keys=tuple(keys))


def parse_update_vectors(raw: dict[str, Any], *, config: CollectionConfig, path: str = "") -> UpdateVectors:
    check_keys(raw, ("points", "shard_key", "update_filter"), path=path)
    reject_unsupported(raw, ("shard_key", "update_filter"), path=path)
    points = get_list(raw, "points", path=path, required=True)
    assert points is not None
    batch = _batch_from_point_list(points, config=config, path=join(path, "points"), has_payload=False)
    return UpdateVectors(points=batch)


def parse_delete_vectors(raw: dict[str, Any], *, config: CollectionConfig, path: str = "") -> DeleteVectors:
    check_keys(raw, ("points", "filter", "vector", "shard_key"), path=path)
    reject_unsupported(raw, ("shard_key",), path=path)
    names = get_list(raw, "vector", path=path, required=True)
    assert names is not None
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise InvalidRequest(f"{join(path, 'vector')}[{index}]: expected a vector name, got {json_type(name)}")
        config.vector_params(name, path=f"{join(path, 'vector')}[{index}]")
    return DeleteVectors(selector=_selector(raw, path=path), names=tuple(names))


def _parse_one_batch_operation(item: Any, *, config: CollectionConfig, path: str) -> Operation:
    if not isinstance(item, dict) or len(item) != 1:
        raise InvalidRequest(f"{path}: expected an object with exactly one operation key")
    (kind, body), = item.items()
    body_path = join(path, kind)
    if not isinstance(body, dict):
        raise InvalidRequest(f"{body_path}: expected an object, got {json_type(body)}")
    match kind:
        case "upsert":
            return parse_upsert(body, config=config, path=body_path)
        case "delete":
            return parse_delete_points(body, path=body_path)
        case "set_payload":
            return parse_set_payload(body, path=body_path)
        case "overwrite_payload":
            return parse_overwrite_payload(body, path=body_path)
        case "delete_payload":
            return parse_delete_payload(body, path=body_path)
        case "clear_payload":
            return parse_clear_payload(body, path=body_path)
        case "update_vectors":
            return parse_update_vectors(body, config=config, path=body_path)
        case "delete_vectors":
            return parse_delete_vectors(body, config=config, path=body_path)
    raise InvalidRequest(f"{path}: unknown operation {kind!r}")


def parse_batch_operations(raw: dict[str, Any], *, config: CollectionConfig) -> list[Operation]:
    """Qdrant's UpdateOperations, each parsed and shape-validated before any is applied."""
    check_keys(raw, ("operations",), path="")
    operations = get_list(raw, "operations", path="", required=True)
    assert operations is not None
    if len(operations) > limits.BATCH_OPERATIONS_MAX:
        raise LimitExceeded(
            f"operations: {len(operations)} operations exceeds the maximum of "
            f"{limits.BATCH_OPERATIONS_MAX} (BATCH_OPERATIONS_MAX)"
        )
    return [
        _parse_one_batch_operation(item, config=config, path=f"operations[{index}]")
        for index, item in enumerate(operations)
    ]
