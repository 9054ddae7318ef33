"""Qdrant's protobuf messages <-> Qdrant's JSON shapes.

The gRPC API does not validate anything itself: it converts each request to
the JSON shape its REST twin takes, with qdrant-client's own converters
(``GrpcToRest``, the mapping Qdrant maintains), hands it to the same action
as REST, and converts the JSON-shaped result back (``RestToGrpc``). So a
field that REST rejects is rejected over gRPC with the same message.

Conversion runs in the storage executor, off the event loop: an upsert of a
thousand 384-d points is ~400 000 floats to move.

Proto3 cannot tell an empty repeated field from an absent one; an empty
``must`` / ``should`` / ``must_not`` list is taken as absent (as Qdrant does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import pydantic
from google.protobuf.message import Message
from qdrant_client import grpc as pb
from qdrant_client import models
from qdrant_client.conversions.conversion import (
    GrpcToRest,
    RestToGrpc,
    grpc_field_type_to_payload_schema,
    grpc_to_payload,
)

from qcluster.errors import InvalidRequest

__all__ = [
    "as_invalid_request",
    "cluster_operation_request",
    "collection_cluster_info_reply",
    "count_request",
    "create_collection_request",
    "create_index_request",
    "delete_vectors_request",
    "dump",
    "point_id_request",
    "query_request",
    "record_reply",
    "retrieve_request",
    "scored_point_reply",
    "scroll_request",
    "search_request",
    "selector",
    "set_payload_request",
    "update_collection_request",
    "update_result_reply",
]

_FILTER_LISTS: Final = ("must", "should", "must_not")
M = TypeVar("M", bound=Message)


def as_invalid_request(error: Exception) -> InvalidRequest:
    """A request message that qdrant-client's converters cannot read."""
    return InvalidRequest(f"invalid request message: {error}")


def _drop_empty_filter_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _drop_empty_filter_lists(item) for key, item in value.items()
                if not (key in _FILTER_LISTS and item == [])}
    if isinstance(value, list):
        return [_drop_empty_filter_lists(item) for item in value]
    return value


def dump(model: Any) -> Any:
    """A qdrant-client REST model (or a list / dict of them) as JSON values."""
    if isinstance(model, pydantic.BaseModel):
        return _drop_empty_filter_lists(model.model_dump(mode="json", exclude_none=True, by_alias=True))
    if isinstance(model, list):
        return [dump(item) for item in model]
    if isinstance(model, dict):
        return {key: dump(item) for key, item in model.items()}
    if hasattr(model, "value"):  # an enum
        return model.value
    return model


def _optional(message: Message, raw: dict[str, Any], fields: dict[str, tuple[str, Callable[[Any], Any]]]) -> None:
    """Copy each set field ``proto_name`` of ``message`` into ``raw[json_name]``, converted."""
    for proto_name, (json_name, convert) in fields.items():
        if message.HasField(proto_name):
            raw[json_name] = dump(convert(getattr(message, proto_name)))


def _same(value: Any) -> Any:
    return value


def _filter(message: pb.Filter) -> Any:
    return GrpcToRest.convert_filter(message)


_READ_FIELDS: Final = {
    "with_payload": ("with_payload", GrpcToRest.convert_with_payload_selector),
    "with_vectors": ("with_vector", GrpcToRest.convert_with_vectors_selector),
    "shard_key_selector": ("shard_key", GrpcToRest.convert_shard_key_selector),
}


# ------------------------------------------------------------- collections


def create_collection_request(message: pb.CreateCollection) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    _optional(message, raw, {
        "vectors_config": ("vectors", GrpcToRest.convert_vectors_config),
        "hnsw_config": ("hnsw_config", GrpcToRest.convert_hnsw_config_diff),
        "wal_config": ("wal_config", GrpcToRest.convert_wal_config_diff),
        "optimizers_config": ("optimizers_config", GrpcToRest.convert_optimizers_config_diff),
        "shard_number": ("shard_number", _same),
        "on_disk_payload": ("on_disk_payload", _same),
        "replication_factor": ("replication_factor", _same),
        "write_consistency_factor": ("write_consistency_factor", _same),
        "quantization_config": ("quantization_config", GrpcToRest.convert_quantization_config),
        "sharding_method": ("sharding_method", GrpcToRest.convert_sharding_method),
        "sparse_vectors_config": ("sparse_vectors", GrpcToRest.convert_sparse_vector_config),
        "strict_mode_config": ("strict_mode_config", GrpcToRest.convert_strict_mode_config),
    })
    if message.metadata:
        raw["metadata"] = grpc_to_payload(message.metadata)
    return raw


def update_collection_request(message: pb.UpdateCollection) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    _optional(message, raw, {
        "optimizers_config": ("optimizers_config", GrpcToRest.convert_optimizers_config_diff),
        "params": ("params", GrpcToRest.convert_collection_params_diff),
        "hnsw_config": ("hnsw_config", GrpcToRest.convert_hnsw_config_diff),
        "vectors_config": ("vectors", GrpcToRest.convert_vectors_config_diff),
        "quantization_config": ("quantization_config", GrpcToRest.convert_quantization_config_diff),
        "sparse_vectors_config": ("sparse_vectors", GrpcToRest.convert_sparse_vector_config),
        "strict_mode_config": ("strict_mode_config", GrpcToRest.convert_strict_mode_config),
    })
    if message.metadata:
        raw["metadata"] = grpc_to_payload(message.metadata)
    return raw


def create_index_request(message: pb.CreateFieldIndexCollection) -> dict[str, Any]:
    raw: dict[str, Any] = {"field_name": message.field_name}
    if message.HasField("field_index_params"):
        raw["field_schema"] = dump(GrpcToRest.convert_payload_schema_params(message.field_index_params))
    elif message.HasField("field_type"):
        schema_type = grpc_field_type_to_payload_schema(message.field_type)
        raw["field_schema"] = dump(GrpcToRest.convert_payload_schema_type(schema_type))
    return raw


def cluster_operation_request(message: pb.UpdateCollectionClusterSetupRequest) -> dict[str, Any]:
    """``{"<operation>": {...}}`` as the REST body; ``{}`` when no operation is set."""
    which = message.WhichOneof("operation")
    if which is None:
        return {}
    return dump(GrpcToRest.convert_cluster_operations(getattr(message, which)))


# ------------------------------------------------------------------ points


def selector(message: pb.PointsSelector) -> dict[str, Any]:
    """``{"points": [...]}`` or ``{"filter": {...}}``."""
    return dump(GrpcToRest.convert_points_selector(message))


def point_id_request(message: pb.PointId) -> Any:
    return dump(GrpcToRest.convert_point_id(message))


def set_payload_request(message: pb.SetPayloadPoints) -> dict[str, Any]:
    raw: dict[str, Any] = {"payload": grpc_to_payload(message.payload)}
    if message.HasField("points_selector"):
        raw.update(selector(message.points_selector))
    if message.HasField("key"):
        raw["key"] = message.key
    _optional(message, raw, {"shard_key_selector": _READ_FIELDS["shard_key_selector"]})
    return raw


def delete_vectors_request(message: pb.DeletePointVectors) -> dict[str, Any]:
    raw: dict[str, Any] = {"vector": list(message.vectors.names)}
    if message.HasField("points_selector"):
        raw.update(selector(message.points_selector))
    return raw


def retrieve_request(message: pb.GetPoints) -> dict[str, Any]:
    raw: dict[str, Any] = {"ids": [point_id_request(point) for point in message.ids]}
    _optional(message, raw, _READ_FIELDS)
    return raw


def scroll_request(message: pb.ScrollPoints) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    _optional(message, raw, {**_READ_FIELDS, "filter": ("filter", _filter),
                             "offset": ("offset", GrpcToRest.convert_point_id),
                             "limit": ("limit", _same), "order_by": ("order_by", GrpcToRest.convert_order_by)})
    return raw


def count_request(message: pb.CountPoints) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    _optional(message, raw, {"filter": ("filter", _filter), "exact": ("exact", _same),
                             "shard_key_selector": _READ_FIELDS["shard_key_selector"]})
    return raw


def search_request(message: pb.SearchPoints) -> dict[str, Any]:
    vector: Any = list(message.vector)
    if message.HasField("sparse_indices"):
        vector = {"name": message.vector_name, "vector": {"indices": list(message.sparse_indices.data),
                                                          "values": vector}}
    elif message.HasField("vector_name"):
        vector = {"name": message.vector_name, "vector": vector}
    raw: dict[str, Any] = {"vector": vector, "limit": message.limit}
    _optional(message, raw, {**_READ_FIELDS, "filter": ("filter", _filter),
                             "params": ("params", GrpcToRest.convert_search_params),
                             "score_threshold": ("score_threshold", _same), "offset": ("offset", _same)})
    return raw


def query_request(message: pb.QueryPoints) -> dict[str, Any]:
    return dump(GrpcToRest.convert_query_points(message))


# ----------------------------------------------------------------- replies


def _reply(model_class: type[pydantic.BaseModel], convert: Callable[[Any], M], value: Any) -> M:
    return convert(model_class.model_validate(value))


def update_result_reply(value: dict[str, Any]) -> pb.UpdateResult:
    return _reply(models.UpdateResult, RestToGrpc.convert_update_result, value)


def scored_point_reply(value: dict[str, Any]) -> pb.ScoredPoint:
    return _reply(models.ScoredPoint, RestToGrpc.convert_scored_point, value)


def record_reply(value: dict[str, Any]) -> pb.RetrievedPoint:
    return _reply(models.Record, RestToGrpc.convert_retrieved_point, value)


def collection_info_reply(value: dict[str, Any]) -> pb.CollectionInfo:
    return _reply(models.CollectionInfo, RestToGrpc.convert_collection_info, value)


def collection_cluster_info_reply(value: dict[str, Any]) -> pb.CollectionClusterInfoResponse:
    return _reply(models.CollectionClusterInfo, RestToGrpc.convert_collection_cluster_info, value)


def alias_reply(value: dict[str, Any]) -> pb.AliasDescription:
    return pb.AliasDescription(alias_name=value["alias_name"], collection_name=value["collection_name"])
