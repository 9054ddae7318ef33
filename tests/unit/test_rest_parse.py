"""Shape validation of REST bodies: every error names its JSON path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from qcluster import limits
from qcluster.api.schema.parse import loads_object, payload_selector, point_ids, vector_selector
from qcluster.api.schema.parse_collection import (
    parse_alias_actions,
    parse_create_collection,
    parse_create_index,
    parse_update_collection,
)
from qcluster.api.schema.parse_points import (
    parse_batch_operations,
    parse_delete_points,
    parse_delete_vectors,
    parse_set_payload,
    parse_update_vectors,
    parse_upsert,
)
from qcluster.api.schema.parse_query import parse_count, parse_query, parse_query_batch, parse_scroll, parse_search
from qcluster.api.schema.vectors import vector_matrix
from qcluster.errors import InvalidRequest, LimitExceeded
from qcluster.operations import DeletePoints, SetPayload, UpsertPoints
from qcluster.types import (
    DEFAULT_VECTOR,
    CollectionConfig,
    Direction,
    Distance,
    PayloadSchemaType,
    PayloadSelector,
    VectorParams,
)

UNNAMED = CollectionConfig(vectors={DEFAULT_VECTOR: VectorParams(size=3, distance=Distance.COSINE)})
NAMED = CollectionConfig(
    vectors={"image": VectorParams(size=2, distance=Distance.DOT), "text": VectorParams(size=3, distance=Distance.EUCLID)},
    is_named_vectors=True,
)
UUID = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"


def _raises(kind: type[Exception], needle: str, function: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(kind) as info:
        function(*args, **kwargs)
    message = str(info.value)
    assert needle in message, message
    return message


# --- bodies and primitives ---------------------------------------------------

def test_loads_object() -> None:
    assert loads_object(b"") == {}
    assert loads_object(b' {"a": 1} ') == {"a": 1}
    _raises(InvalidRequest, "Format error in JSON body", loads_object, b"{not json")
    _raises(InvalidRequest, "got array", loads_object, b"[1, 2]")
    _raises(InvalidRequest, "Format error in JSON body", loads_object, b'{"v": [1e999]}')


@pytest.mark.parametrize("raw", [-1, "abc", 1.5, True, None, 2**64, {"a": 1}])
def test_bad_point_ids_name_the_index(raw: Any) -> None:
    _raises(InvalidRequest, "ids[1]", point_ids, [1, raw], path="ids")


def test_point_ids_normalize_uuid_and_bound_the_count() -> None:
    assert point_ids([1, UUID.upper()], path="ids") == (1, UUID)
    _raises(LimitExceeded, "POINTS_PER_REQUEST_MAX", point_ids, [0] * (limits.POINTS_PER_REQUEST_MAX + 1), path="ids")


def test_payload_and_vector_selectors() -> None:
    assert payload_selector(None, path="p", default=True) == PayloadSelector(enabled=True)
    assert payload_selector(False, path="p", default=True) == PayloadSelector(enabled=False)
    assert payload_selector(["a"], path="p", default=False).include == ("a",)
    assert payload_selector({"include": ["a"]}, path="p", default=False).include == ("a",)
    assert payload_selector({"exclude": ["b"]}, path="p", default=False).exclude == ("b",)
    _raises(InvalidRequest, "with_payload", payload_selector, {"only": []}, path="with_payload", default=False)
    assert vector_selector(["image"], path="v", default=False) == ("image",)
    assert vector_selector(None, path="v", default=False) is False
    _raises(InvalidRequest, "with_vector", vector_selector, 3, path="with_vector", default=False)


# --- vectors -------------------------------------------------------------------

def test_vector_matrix_is_float32_contiguous() -> None:
    matrix = vector_matrix([[1, 2, 3], [0.5, 0.25, 0.125]], dim=3, row_path=lambda i: f"v[{i}]")
    assert matrix.dtype == np.float32
    assert matrix.flags["C_CONTIGUOUS"]
    assert matrix.shape == (2, 3)


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ([[1, 2, 3], [1, 2]], "v[1]: expected 3 dimensions, got 2"),
        ([[1, 2, 3], [1, 2, 3, 4]], "v[1]: expected 3 dimensions, got 4"),
        ([[1, 2], [1, 2]], "v[0]: expected 3 dimensions, got 2"),
        ([[1, 2, 3], [1, "x", 3]], "v[1][1]: expected a number"),
        ([[1, 2, 3], [1, "2", 3]], "v[1][1]: expected a number"),
        ([[1, 2, 3], [1, None, 3]], "v[1][1]: expected a number"),
        ([[1, 2, 3], [1e39, 2, 3]], "v[1]: contains a non-finite value"),
        ([[1, 2, 3], [[1], [2], [3]]], "multivectors"),
        ([{"indices": [1], "values": [1.0]}], "sparse"),
        ([5], "v[0]: expected an array of numbers"),
    ],
)
def test_vector_matrix_errors(rows: list[Any], needle: str) -> None:
    _raises(InvalidRequest, needle, vector_matrix, rows, dim=3, row_path=lambda i: f"v[{i}]")


# --- upserts -----------------------------------------------------------------

def test_upsert_points_form_unnamed() -> None:
    raw = {"points": [{"id": 1, "vector": [1, 2, 3], "payload": {"a": 1}}, {"id": UUID, "vector": [4, 5, 6]}]}
    operation = parse_upsert(raw, config=UNNAMED)
    assert isinstance(operation, UpsertPoints)
    batch = operation.points
    assert batch.ids == (1, UUID)
    assert batch.payloads == ({"a": 1}, None)
    assert batch.present[DEFAULT_VECTOR] is None
    np.testing.assert_array_equal(batch.vectors[DEFAULT_VECTOR], np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))


def test_upsert_points_form_named_with_missing_vectors() -> None:
    raw = {"points": [{"id": 1, "vector": {"image": [1, 2], "text": [1, 2, 3]}}, {"id": 2, "vector": {"text": [4, 5, 6]}}]}
    batch = parse_upsert(raw, config=NAMED).points
    mask = batch.present["image"]
    assert mask is not None
    assert mask.tolist() == [True, False]
    assert batch.present["text"] is None
    assert batch.vectors["image"].shape == (2, 2)


def test_upsert_batch_form() -> None:
    raw = {"batch": {"ids": [1, 2], "vectors": [[1, 2, 3], [4, 5, 6]], "payloads": [{"a": 1}, None]}}
    batch = parse_upsert(raw, config=UNNAMED).points
    assert batch.ids == (1, 2)
    raw_named = {"batch": {"ids": [1], "vectors": {"image": [[1, 2]], "text": [[1, 2, 3]]}}}
    assert set(parse_upsert(raw_named, config=NAMED).points.vectors) == {"image", "text"}


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"points": [{"id": 1, "vector": [1, 2, 3]}, {"id": 2, "vector": [1, 2]}]},
         "points[1].vector: expected 3 dimensions, got 2"),
        ({"points": [{"id": -1, "vector": [1, 2, 3]}]}, "points[0].id"),
        ({"points": [{"id": "abc", "vector": [1, 2, 3]}]}, "points[0].id"),
        ({"points": [{"id": 1.5, "vector": [1, 2, 3]}]}, "points[0].id"),
        ({"points": [{"vector": [1, 2, 3]}]}, "points[0].id: missing"),
        ({"points": [{"id": 1}]}, "points[0].vector: missing"),
        ({"points": [{"id": 1, "vector": [1, 2, 3], "payload": [1]}]}, "points[0].payload"),
        ({"points": [{"id": 1, "vector": [1, 2, 3], "extra": 1}]}, "points[0].extra: unknown field"),
        ({"points": [{"id": 1, "vector": {"nope": [1, 2, 3]}}]}, "points[0].vector.nope"),
        ({"batch": {"ids": [1, 2], "vectors": [[1, 2, 3]]}}, "batch.vectors: has 1 vectors for 2 ids"),
        ({"batch": {"ids": [1], "vectors": [[1, 2, 3]], "payloads": [1]}}, "batch.payloads[0]"),
        ({}, "exactly one of points or batch"),
        ({"points": [], "batch": {}}, "exactly one of points or batch"),
        ({"points": [], "update_filter": {"must": []}}, "update_filter: not supported"),
    ],
)
def test_upsert_errors(raw: dict[str, Any], needle: str) -> None:
    _raises(InvalidRequest, needle, parse_upsert, raw, config=UNNAMED)


def test_upsert_named_dimension_error_names_the_vector() -> None:
    raw = {"points": [{"id": 1, "vector": {"image": [1, 2, 3]}}]}
    _raises(InvalidRequest, "points[0].vector.image: expected 2 dimensions, got 3", parse_upsert, raw, config=NAMED)


def test_upsert_limits() -> None:
    too_many = {"points": [{"id": i, "vector": [1, 2, 3]} for i in range(limits.POINTS_PER_REQUEST_MAX + 1)]}
    _raises(LimitExceeded, "POINTS_PER_REQUEST_MAX", parse_upsert, too_many, config=UNNAMED)
    huge = {"points": [{"id": 1, "vector": [1, 2, 3], "payload": {"blob": "x" * (limits.PAYLOAD_BYTES_MAX + 1)}}]}
    _raises(LimitExceeded, "points[0].payload", parse_upsert, huge, config=UNNAMED)


# --- other writes ------------------------------------------------------------

def test_selectors() -> None:
    assert isinstance(parse_delete_points({"points": [1, 2]}), DeletePoints)
    by_filter = parse_delete_points({"filter": {"must": [{"key": "a", "match": {"value": 1}}]}})
    assert by_filter.selector.filter is not None
    _raises(InvalidRequest, "expected points", parse_delete_points, {})
    _raises(InvalidRequest, "not both", parse_delete_points, {"points": [1], "filter": {}})
    _raises(InvalidRequest, "filter", parse_delete_points, {"filter": {"must": [{"bogus": 1}]}})


def test_set_payload() -> None:
    operation = parse_set_payload({"payload": {"a": 1}, "points": [1], "key": "x.y"})
    assert isinstance(operation, SetPayload)
    assert operation.key == "x.y"
    _raises(InvalidRequest, "payload: missing", parse_set_payload, {"points": [1]})


def test_update_and_delete_vectors() -> None:
    operation = parse_update_vectors({"points": [{"id": 1, "vector": {"image": [1, 2]}}]}, config=NAMED)
    assert operation.points.vectors["image"].shape == (1, 2)
    _raises(InvalidRequest, "points[0].payload: unknown field", parse_update_vectors,
            {"points": [{"id": 1, "vector": [1, 2, 3], "payload": {}}]}, config=UNNAMED)
    deleted = parse_delete_vectors({"points": [1], "vector": ["image"]}, config=NAMED)
    assert deleted.names == ("image",)
    _raises(InvalidRequest, "vector[0]", parse_delete_vectors, {"points": [1], "vector": ["nope"]}, config=NAMED)


def test_batch_operations() -> None:
    raw = {"operations": [
        {"upsert": {"points": [{"id": 1, "vector": [1, 2, 3]}]}},
        {"delete": {"points": [2]}},
        {"set_payload": {"payload": {"a": 1}, "points": [1]}},
        {"overwrite_payload": {"payload": {"a": 1}, "points": [1]}},
        {"delete_payload": {"keys": ["a"], "points": [1]}},
        {"clear_payload": {"points": [1]}},
        {"update_vectors": {"points": [{"id": 1, "vector": [3, 2, 1]}]}},
        {"delete_vectors": {"points": [1], "vector": [""]}},
    ]}
    assert len(parse_batch_operations(raw, config=UNNAMED)) == 8
    bad = {"operations": [{"delete": {"points": [1]}}, {"upsert": {"points": [{"id": 1, "vector": [1]}]}}]}
    _raises(InvalidRequest, "operations[1].upsert.points[0].vector", parse_batch_operations, bad, config=UNNAMED)
    _raises(InvalidRequest, "operations[0]: unknown operation", parse_batch_operations,
            {"operations": [{"explode": {}}]}, config=UNNAMED)
    _raises(LimitExceeded, "BATCH_OPERATIONS_MAX", parse_batch_operations,
            {"operations": [{"delete": {"points": [1]}}] * (limits.BATCH_OPERATIONS_MAX + 1)}, config=UNNAMED)


# --- collections -------------------------------------------------------------

def test_create_collection_single_and_named() -> None:
    config = parse_create_collection({"vectors": {"size": 4, "distance": "Dot", "on_disk": True},
                                      "hnsw_config": {"m": 8}, "optimizers_config": {"indexing_threshold": 0},
                                      "quantization_config": None, "shard_number": 2})
    assert not config.is_named_vectors
    assert config.vectors[DEFAULT_VECTOR].size == 4
    assert config.vectors[DEFAULT_VECTOR].on_disk
    assert config.hnsw_config.m == 8
    assert config.optimizers_config.indexing_threshold == 0
    assert config.shard_number == 2
    named = parse_create_collection({"vectors": {"a": {"size": 2, "distance": "Euclid"},
                                                 "b": {"size": 3, "distance": "Manhattan",
                                                       "hnsw_config": {"ef_construct": 50}}}})
    assert named.is_named_vectors
    assert named.vectors["b"].hnsw_config is not None
    assert named.vectors["b"].hnsw_config.ef_construct == 50


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"vectors": {"size": 4, "distance": "Hamming"}}, "vectors.distance: unknown distance"),
        ({"vectors": {"a": {"size": 4, "distance": "Cos"}}}, "vectors.a.distance"),
        ({"vectors": {"size": 0, "distance": "Dot"}}, "vectors.size"),
        ({"vectors": {"size": "4", "distance": "Dot"}}, "vectors.size"),
        ({}, "vectors: missing"),
        ({"vectors": {"size": 4, "distance": "Dot"}, "sparse_vectors": {"s": {}}}, "sparse_vectors"),
        ({"vectors": {"size": 4, "distance": "Dot"}, "quantization_config": {"scalar": {}}}, "quantization_config"),
        ({"vectors": {"size": 4, "distance": "Dot"}, "hnsw_config": {"m": "x"}}, "hnsw_config.m"),
        ({"vectors": {"size": 4, "distance": "Dot"}, "wat": 1}, "wat: unknown field"),
    ],
)
def test_create_collection_errors(raw: dict[str, Any], needle: str) -> None:
    _raises(InvalidRequest, needle, parse_create_collection, raw)


def test_create_collection_dimension_limit() -> None:
    _raises(LimitExceeded, "VECTOR_DIM_MAX", parse_create_collection,
            {"vectors": {"size": limits.VECTOR_DIM_MAX + 1, "distance": "Dot"}})


def test_update_collection() -> None:
    patch = parse_update_collection({"optimizers_config": {"indexing_threshold": 100}, "params": {"replication_factor": 2},
                                     "vectors": {"": {"on_disk": True}}})
    assert patch.optimizers_config == {"indexing_threshold": 100}
    assert patch.params == {"replication_factor": 2}
    assert patch.vectors == {"": {"on_disk": True}}
    assert patch.hnsw_config is None


def test_alias_actions() -> None:
    actions = parse_alias_actions({"actions": [
        {"create_alias": {"collection_name": "c", "alias_name": "a"}},
        {"rename_alias": {"old_alias_name": "a", "new_alias_name": "b"}},
        {"delete_alias": {"alias_name": "b"}},
    ]})
    assert [action.kind for action in actions] == ["create", "rename", "delete"]
    _raises(InvalidRequest, "actions[0]", parse_alias_actions, {"actions": [{"create_alias": {"alias_name": "a"}}]})


@pytest.mark.parametrize("schema", ["keyword", "integer", "float", "bool", "datetime", "text", "uuid"])
def test_create_index_from_a_name(schema: str) -> None:
    operation = parse_create_index({"field_name": "f", "field_schema": schema})
    assert operation.schema.type == PayloadSchemaType(schema)


def test_create_index_with_params() -> None:
    keyword = parse_create_index({"field_name": "f", "field_schema": {"type": "keyword", "is_tenant": True}})
    assert keyword.schema.is_tenant
    text = parse_create_index({"field_name": "f", "field_schema": {"type": "text", "tokenizer": "word",
                                                                   "lowercase": False, "min_token_len": 2}})
    assert (text.schema.lowercase, text.schema.min_token_len) == (False, 2)
    _raises(InvalidRequest, "geo", parse_create_index, {"field_name": "f", "field_schema": "geo"})
    _raises(InvalidRequest, "field_schema: unknown payload schema type", parse_create_index, {"field_name": "f", "field_schema": "nope"})
    _raises(InvalidRequest, "field_schema.is_tenant: unknown field", parse_create_index,
            {"field_name": "f", "field_schema": {"type": "integer", "is_tenant": True}})
    _raises(InvalidRequest, "lookup and range", parse_create_index,
            {"field_name": "f", "field_schema": {"type": "integer", "lookup": False, "range": False}})


# --- reads -------------------------------------------------------------------

def test_query_forms() -> None:
    bare = parse_query({"query": [1, 2, 3], "limit": 5}, config=UNNAMED)
    assert bare.request.limit == 5
    assert bare.request.vector.dtype == np.float32
    nearest = parse_query({"query": {"nearest": [1, 2]}, "using": "image", "with_payload": True}, config=NAMED)
    assert nearest.request.using == "image"
    assert nearest.request.with_payload.enabled
    by_id = parse_query({"query": UUID}, config=UNNAMED)
    assert by_id.lookup_id == UUID
    assert parse_query({}, config=UNNAMED).is_scroll


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"query": [1, 2]}, "query: expected 3 dimensions, got 2"),
        ({"query": {"nearest": [1, 2]}}, "query.nearest: expected 3 dimensions"),
        ({"query": {"recommend": {}}}, "query.recommend"),
        ({"query": [1, 2, 3], "using": "nope"}, "using"),
        ({"query": [1, 2, 3], "limit": 0}, "limit"),
        ({"query": [1, 2, 3], "prefetch": []}, "prefetch"),
        ({"query": [1, 2, 3], "params": {"hnsw_ef": "x"}}, "params.hnsw_ef"),
        ({"query": -5}, "query"),
    ],
)
def test_query_errors(raw: dict[str, Any], needle: str) -> None:
    _raises(InvalidRequest, needle, parse_query, raw, config=UNNAMED)


def test_query_limits() -> None:
    _raises(LimitExceeded, "TOP_K_MAX", parse_query, {"query": [1, 2, 3], "limit": limits.TOP_K_MAX + 1}, config=UNNAMED)
    _raises(LimitExceeded, "OFFSET_MAX", parse_query, {"query": [1, 2, 3], "offset": limits.OFFSET_MAX}, config=UNNAMED)
    _raises(LimitExceeded, "QUERY_BATCH_MAX", parse_query_batch,
            {"searches": [{"query": [1, 2, 3]}] * (limits.QUERY_BATCH_MAX + 1)}, config=UNNAMED)
    _raises(InvalidRequest, "searches[1].query", parse_query_batch,
            {"searches": [{"query": [1, 2, 3]}, {"query": [1]}]}, config=UNNAMED)


def test_legacy_search() -> None:
    request = parse_search({"vector": {"name": "text", "vector": [1, 2, 3]}, "limit": 3}, config=NAMED)
    assert (request.using, request.limit) == ("text", 3)
    _raises(InvalidRequest, "vector.vector: expected 3", parse_search, {"vector": {"name": "text", "vector": [1]}},
            config=NAMED)


def test_scroll_and_count() -> None:
    spec = parse_scroll({"limit": 3, "offset": 7, "with_vector": True})
    assert (spec.limit, spec.offset, spec.with_vector) == (3, 7, True)
    assert spec.with_payload.enabled
    ordered = parse_scroll({"order_by": {"key": "year", "direction": "desc", "start_from": 5}})
    assert ordered.order_by is not None
    assert (ordered.order_by.key, ordered.order_by.direction, ordered.order_by.start_from) == ("year", Direction.DESC, 5.0)
    assert parse_scroll({"order_by": "year"}).order_by is not None
    _raises(InvalidRequest, "order_by.direction", parse_scroll, {"order_by": {"key": "y", "direction": "up"}})
    assert parse_count({}).exact
    assert not parse_count({"exact": False}).exact
