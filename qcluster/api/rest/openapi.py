"""The OpenAPI 3 document, generated from the same route table the router uses.

Schemas are compact: they name every field of every request and response
and its JSON type, without repeating Qdrant's full descriptions. A route that
names a schema missing here fails ``build_document`` (an assertion), so the
table and the document cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import qcluster
from qcluster.api.actions import CLUSTER_OPERATIONS
from qcluster.api.rest._route import Route

__all__ = ["SCHEMAS", "build_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], *, required: Iterable[str] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


_ANY: Final[dict[str, Any]] = {}
_INT: Final = {"type": "integer"}
_NUM: Final = {"type": "number"}
_STR: Final = {"type": "string"}
_BOOL: Final = {"type": "boolean"}
_OBJ: Final = {"type": "object"}
_ID: Final = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "format": "uuid"}]}
_VECTOR: Final = _array(_NUM)
_VECTOR_INPUT: Final = {"anyOf": [_VECTOR, {"type": "object", "additionalProperties": _VECTOR}]}
_WITH_PAYLOAD: Final = {"anyOf": [_BOOL, _array(_STR), _object({"include": _array(_STR)}),
                                  _object({"exclude": _array(_STR)})]}
_WITH_VECTOR: Final = {"anyOf": [_BOOL, _array(_STR)]}
_SELECTOR: Final = {"points": _array(_ID), "filter": _ref("Filter")}
_HNSW: Final = _object({"m": _INT, "ef_construct": _INT, "full_scan_threshold": _INT,
                        "max_indexing_threads": _INT, "on_disk": _BOOL, "payload_m": _INT})
_VECTOR_PARAMS: Final = _object({"size": _INT, "distance": {"type": "string",
                                                              "enum": ["Cosine", "Dot", "Euclid", "Manhattan"]},
                                 "on_disk": _BOOL, "hnsw_config": _HNSW}, required=("size", "distance"))
_SCORED_POINT: Final = _object({"id": _ID, "version": _INT, "score": _NUM, "payload": _OBJ,
                                "vector": _VECTOR_INPUT, "shard_key": _ANY, "order_value": _ANY},
                               required=("id", "version", "score"))
_RECORD: Final = _object({"id": _ID, "payload": _OBJ, "vector": _VECTOR_INPUT, "shard_key": _ANY,
                          "order_value": _ANY}, required=("id",))
_SEARCH_COMMON: Final = {"filter": _ref("Filter"), "params": _object({"hnsw_ef": _INT, "exact": _BOOL,
                                                                      "indexed_only": _BOOL}),
                         "limit": _INT, "offset": _INT, "score_threshold": _NUM,
                         "with_payload": _WITH_PAYLOAD, "with_vector": _WITH_VECTOR}
_UPDATE_RESULT: Final = _object({"operation_id": _INT, "status": {"type": "string",
                                                                  "enum": ["acknowledged", "completed"]}},
                                required=("status",))
_POINT_INSERT: Final = {"anyOf": [
    _object({"points": _array(_object({"id": _ID, "vector": _VECTOR_INPUT, "payload": _OBJ},
                                      required=("id", "vector")))}, required=("points",)),
    _object({"batch": _object({"ids": _array(_ID), "vectors": _ANY, "payloads": _array(_OBJ)},
                              required=("ids", "vectors"))}, required=("batch",)),
]}
_QUERY_REQUEST: Final = _object({"query": {"anyOf": [_VECTOR, _ID, _object({"nearest": {"anyOf": [_VECTOR, _ID]}})]},
                                 "using": _STR, **_SEARCH_COMMON})
_SEARCH_REQUEST: Final = _object({"vector": {"anyOf": [_VECTOR, _object({"name": _STR, "vector": _VECTOR})]},
                                  **_SEARCH_COMMON}, required=("vector",))
_COLLECTION_INFO: Final = _object({
    "status": _STR, "optimizer_status": _STR, "warnings": _array(_object({"message": _STR})),
    "segments_count": _INT, "points_count": _INT, "indexed_vectors_count": _INT,
    "config": _object({"params": _OBJ, "hnsw_config": _HNSW, "optimizer_config": _OBJ, "wal_config": _OBJ,
                       "quantization_config": _ANY}),
    "payload_schema": {"type": "object", "additionalProperties": _object(
        {"data_type": _STR, "params": _OBJ, "points": _INT})},
    "created_at": _STR,
}, required=("status", "optimizer_status", "segments_count", "config", "payload_schema"))
_ALIASES: Final = _object({"aliases": _array(_object({"alias_name": _STR, "collection_name": _STR}))})
_SHARD_STATE: Final = {"type": "string", "enum": ["Active"]}

SCHEMAS: Final[dict[str, Any]] = {
    "Any": _ANY,
    "Bool": _BOOL,
    "Filter": _object({"must": _ANY, "should": _ANY, "must_not": _ANY, "min_should": _ANY}),
    "ErrorResponse": _object({"status": _object({"error": _STR}), "time": _NUM}),
    "VersionInfo": _object({"title": _STR, "version": _STR, "commit": _STR}, required=("title", "version")),
    "CollectionsResponse": _object({"collections": _array(_object({"name": _STR}))}),
    "CollectionInfo": _COLLECTION_INFO,
    "CollectionExistence": _object({"exists": _BOOL}),
    "CollectionsAliasesResponse": _ALIASES,
    "CreateCollection": _object({
        "vectors": {"anyOf": [_VECTOR_PARAMS, {"type": "object", "additionalProperties": _VECTOR_PARAMS}]},
        "shard_number": _INT, "replication_factor": _INT, "write_consistency_factor": _INT,
        "on_disk_payload": _BOOL, "hnsw_config": _HNSW, "optimizers_config": _OBJ, "wal_config": _OBJ,
        "quantization_config": {"type": "null"},
    }, required=("vectors",)),
    "UpdateCollection": _object({"vectors": _OBJ, "optimizers_config": _OBJ, "params": _OBJ, "hnsw_config": _HNSW}),
    "ChangeAliasesOperation": _object({"actions": _array(_OBJ)}, required=("actions",)),
    "CreateFieldIndex": _object({"field_name": _STR, "field_schema": {"anyOf": [_STR, _OBJ]}},
                                required=("field_name", "field_schema")),
    "UpdateResult": _UPDATE_RESULT,
    "UpdateResultList": _array(_UPDATE_RESULT),
    "PointInsertOperations": _POINT_INSERT,
    "PointRequest": _object({"ids": _array(_ID), "with_payload": _WITH_PAYLOAD, "with_vector": _WITH_VECTOR},
                            required=("ids",)),
    "PointsSelector": _object(_SELECTOR),
    "SetPayload": _object({"payload": _OBJ, "key": _STR, **_SELECTOR}, required=("payload",)),
    "DeletePayload": _object({"keys": _array(_STR), **_SELECTOR}, required=("keys",)),
    "UpdateVectors": _object({"points": _array(_object({"id": _ID, "vector": _VECTOR_INPUT}))},
                             required=("points",)),
    "DeleteVectors": _object({"vector": _array(_STR), **_SELECTOR}, required=("vector",)),
    "UpdateOperations": _object({"operations": _array(_OBJ)}, required=("operations",)),
    "ScrollRequest": _object({"filter": _ref("Filter"), "limit": _INT, "offset": _ID,
                              "order_by": {"anyOf": [_STR, _object({"key": _STR, "direction": _STR,
                                                                   "start_from": _NUM})]},
                              "with_payload": _WITH_PAYLOAD, "with_vector": _WITH_VECTOR}),
    "ScrollResult": _object({"points": _array(_RECORD), "next_page_offset": _ID}, required=("points",)),
    "CountRequest": _object({"filter": _ref("Filter"), "exact": _BOOL}),
    "CountResult": _object({"count": _INT}, required=("count",)),
    "Record": _RECORD,
    "RecordList": _array(_RECORD),
    "QueryRequest": _QUERY_REQUEST,
    "QueryRequestBatch": _object({"searches": _array(_QUERY_REQUEST)}, required=("searches",)),
    "QueryResponse": _object({"points": _array(_SCORED_POINT)}, required=("points",)),
    "QueryResponseList": _array(_object({"points": _array(_SCORED_POINT)})),
    "SearchRequest": _SEARCH_REQUEST,
    "SearchRequestBatch": _object({"searches": _array(_SEARCH_REQUEST)}, required=("searches",)),
    "ScoredPointList": _array(_SCORED_POINT),
    "ScoredPointListList": _array(_array(_SCORED_POINT)),
    "ClusterStatus": _object({"status": {"type": "string", "enum": ["disabled"]}}, required=("status",)),
    "CollectionClusterInfo": _object({
        "peer_id": _INT, "shard_count": _INT,
        "local_shards": _array(_object({"shard_id": _INT, "shard_key": _ANY, "points_count": _INT,
                                        "state": _SHARD_STATE}, required=("shard_id", "points_count", "state"))),
        "remote_shards": _array(_OBJ), "shard_transfers": _array(_OBJ),
    }, required=("peer_id", "shard_count", "local_shards", "remote_shards", "shard_transfers")),
    # Exactly one key; every operation answers 409 on a single node.
    "CreateShardingKey": _object({"shard_key": {"anyOf": [_STR, _INT]}, "shards_number": _INT,
                                  "replication_factor": _INT}, required=("shard_key",)),
    "DropShardingKey": _object({"shard_key": {"anyOf": [_STR, _INT]}}, required=("shard_key",)),
    "ClusterOperations": {"anyOf": [_object({key: _OBJ}, required=(key,)) for key in CLUSTER_OPERATIONS]},
}

_PATH_PARAMETER = re.compile(r"{(\w+)}")


def _envelope(result_schema: str) -> dict[str, Any]:
    return _object({"result": _ref(result_schema), "status": {"type": "string", "enum": ["ok"]}, "time": _NUM},
                   required=("result", "status", "time"))


def _operation(route: Route) -> dict[str, Any]:
    assert route.result_schema in SCHEMAS, f"{route.operation_id}: unknown schema {route.result_schema}"
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _STR} for name in _PATH_PARAMETER.findall(route.path)
    ]
    parameters += [{"name": name, "in": "query", "required": False, "schema": _ANY} for name in route.query_params]
    if route.is_enveloped:
        ok: dict[str, Any] = {"description": "successful operation",
                              "content": {"application/json": {"schema": _envelope(route.result_schema)}}}
    elif route.result_schema != "Any":
        ok = {"description": "successful operation",
              "content": {"application/json": {"schema": _ref(route.result_schema)}}}
    else:
        ok = {"description": "successful operation", "content": {"text/plain": {"schema": _STR}}}
    error = {"description": "error", "content": {"application/json": {"schema": _ref("ErrorResponse")}}}
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "parameters": parameters,
        "responses": {"200": ok, "4XX": error, "5XX": error},
    }
    if route.request_schema is not None:
        assert route.request_schema in SCHEMAS, f"{route.operation_id}: unknown schema {route.request_schema}"
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": _ref(route.request_schema)}}}
    return operation


def build_document(routes: Iterable[Route]) -> dict[str, Any]:
    """An OpenAPI 3.0 document with one operation per route."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        methods = paths.setdefault(route.path, {})
        assert route.method.lower() not in methods, f"duplicate route {route.method} {route.path}"
        methods[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {"title": "qcluster", "version": qcluster.QDRANT_API_VERSION,
                 "description": "Qdrant-compatible REST API of qcluster"},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
