"""What each API call does, independent of the protocol that carried it.

Every action is synchronous and runs in the node's storage executor: it takes
the table of contents, the collection name and the request in Qdrant's JSON
shape (a REST body, or a gRPC message converted to that shape), parses and
validates it with ``qcluster.api.schema``, calls storage, and returns the
result in Qdrant's JSON shape. The REST API sends that result as it is; the
gRPC API converts it to the protobuf reply. So both protocols validate alike,
answer alike and fail with the same messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from qcluster import limits

from qcluster.api.schema.parse import (
    check_keys,
    json_type,
    loads_object,
    point_id,
    reject_unsupported,
    shard_key,
    shard_key_selector,
)
from qcluster.api.schema.parse_collection import (
    parse_alias_actions,
    parse_create_collection,
    parse_create_index,
    parse_update_collection,
)
from qcluster.api.schema.parse_points import (
    parse_batch_operations,
    parse_dense_upsert,
    parse_clear_payload,
    parse_delete_payload,
    parse_delete_points,
    parse_delete_vectors,
    parse_overwrite_payload,
    parse_set_payload,
    parse_update_vectors,
    parse_upsert,
)
from qcluster.api.schema.parse_query import (
    ParsedQuery,
    parse_count,
    parse_query,
    parse_query_batch,
    parse_retrieve,
    parse_scroll,
    parse_search,
    parse_search_batch,
)
from qcluster.api.schema.render import (
    render_collection_info,
    render_record,
    render_scored_columns,
    render_scored_point,
    render_update_result,
)
from qcluster.api.schema.vectors import check_dense_matrix
from qcluster.engine.reads import search_key
from qcluster.errors import InvalidRequest, LimitExceeded, NotFound, PreconditionFailed, QclusterError
from qcluster.operations import DeleteFieldIndex, Operation
from qcluster.types import CollectionConfig, PayloadSelector, PointId, QueryRequest, ReadConsistency, ScoredColumns, ScoredPoint

if TYPE_CHECKING:
    from qcluster.storage.collection import Collection
    from qcluster.storage.toc import TableOfContents

__all__ = [
    "CLUSTER_OPERATIONS",
    "OPERATION_PARSERS",
    "QueryItem",
    "batch_update",
    "collection_cluster_info",
    "collection_aliases",
    "collection_exists",
    "collection_info",
    "count",
    "create_collection",
    "create_index",
    "create_shard_key",
    "delete_collection",
    "delete_index",
    "delete_shard_key",
    "dense_query",
    "dense_upsert",
    "get_point",
    "list_collections",
    "query_batch",
    "query_many",
    "retrieve",
    "scroll",
    "search",
    "search_batch",
    "update_aliases",
    "update_cluster_setup",
    "update_collection",
    "write",
]

# ---------------------------------------------------------------- collections


def list_collections(toc: TableOfContents) -> dict[str, Any]:
    return {"collections": [{"name": name} for name in sorted(toc.collection_names())]}


def create_collection(toc: TableOfContents, *, name: str, raw: Any) -> bool:
    toc.create_collection(name, parse_create_collection(raw))
    return True


def collection_info(toc: TableOfContents, *, name: str) -> dict[str, Any]:
    collection = toc.collection(name)
    return render_collection_info(collection.info(), config=collection.config,
                                  created_at=getattr(collection, "created_at", None))


def collection_exists(toc: TableOfContents, *, name: str) -> dict[str, bool]:
    return {"exists": toc.exists(name)}


def update_collection(toc: TableOfContents, *, name: str, raw: Any) -> bool:
    toc.update_collection(name, parse_update_collection(raw))
    return True


def delete_collection(toc: TableOfContents, *, name: str) -> bool:
    return toc.delete_collection(name)


def update_aliases(toc: TableOfContents, *, raw: Any) -> bool:
    toc.update_aliases(parse_alias_actions(raw))
    return True


def collection_aliases(toc: TableOfContents, *, name: str | None) -> dict[str, Any]:
    """Aliases of collection ``name``, or every alias when ``name`` is None."""
    pairs = toc.aliases(name)
    return {"aliases": [{"alias_name": alias, "collection_name": collection} for alias, collection in pairs]}


def create_index(toc: TableOfContents, *, name: str, raw: Any, wait: bool) -> dict[str, Any]:
    operation = parse_create_index(raw)
    return render_update_result(toc.collection(name).update(operation, wait=wait))


def delete_index(toc: TableOfContents, *, name: str, field_name: str, wait: bool) -> dict[str, Any]:
    return render_update_result(toc.collection(name).update(DeleteFieldIndex(field_name=field_name), wait=wait))


# -------------------------------------------------------------------- cluster
#
# The single-node forms of Qdrant's cluster endpoints: what Qdrant answers with
# cluster mode disabled. Every shard of a collection is local and Active, there
# are no peers, so nothing can move between them.

# The peer id a single node reports (it has no peers to tell apart).
SINGLE_NODE_PEER_ID: Final = 0

# Qdrant's cluster operations (``POST /collections/{name}/cluster``), by key.
CLUSTER_OPERATIONS: Final = (
    "move_shard", "replicate_shard", "abort_transfer", "drop_replica", "create_sharding_key",
    "drop_sharding_key", "restart_transfer", "start_resharding", "abort_resharding", "replicate_points",
    "rebalance",  # qcluster's: move replicas so that every node holds as many (cluster mode)
)


def collection_cluster_info(toc: TableOfContents, *, name: str, digest: bool = False) -> dict[str, Any]:
    """Qdrant's shape. In cluster mode the collection describes its shards
    itself (``cluster_info``), with ``digest`` adding each local replica's
    content digest; on a single node every shard is local and Active."""
    collection = toc.collection(name)
    describe = getattr(collection, "cluster_info", None)
    if describe is not None:
        return describe(digest=digest)  # type: ignore[no-any-return]
    counts = collection.shard_point_counts()
    assert len(counts) == collection.config.shard_number, (len(counts), collection.config.shard_number)
    return {
        "peer_id": SINGLE_NODE_PEER_ID,
        "shard_count": len(counts),
        "local_shards": [{"shard_id": shard_id, "points_count": points, "state": "Active"}
                         for shard_id, points in enumerate(counts)],
        "remote_shards": [],
        "shard_transfers": [],
    }


def update_cluster_setup(toc: TableOfContents, *, name: str, raw: Any) -> bool:
    """Validate the operation, then run it (cluster mode) or refuse it (a single node has no peers)."""
    collection = toc.collection(name)  # 404 first, as for every collection endpoint
    if not isinstance(raw, dict):
        raise InvalidRequest(f"Format error in JSON body: expected an object at the top level, got {json_type(raw)}")
    unknown = [key for key in raw if key not in CLUSTER_OPERATIONS]
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: unknown cluster operation (expected one of "
                             f"{', '.join(CLUSTER_OPERATIONS)})")
    present = [key for key, value in raw.items() if value is not None]  # null counts as absent
    if len(present) != 1:
        raise InvalidRequest(f"body: expected exactly one of {', '.join(CLUSTER_OPERATIONS)}, "
                             f"got {', '.join(present) if present else 'none'}")
    operation = present[0]
    if not isinstance(raw[operation], dict):
        raise InvalidRequest(f"{operation}: expected an object, got {json_type(raw[operation])}")
    run = getattr(collection, "cluster_operation", None)
    if run is not None:  # cluster mode
        run(operation, raw[operation])
        return True
    raise PreconditionFailed(
        f"cluster mode is not enabled on this node: cannot {operation} in collection `{name}` "
        "(a single node has no peers; every shard is local and Active)"
    )


# ----------------------------------------------------------------- shard keys


def create_shard_key(toc: TableOfContents, *, name: str, raw: Any) -> bool:
    """``PUT /collections/{c}/shards``: a new shard key of a custom-sharded
    collection, with the collection's shard_number and replication_factor."""
    check_keys(raw, ("shard_key", "shards_number", "replication_factor", "placement", "initial_state"), path="")
    reject_unsupported(raw, ("placement", "initial_state"), path="")
    key = shard_key(raw.get("shard_key"), path="shard_key")
    collection = toc.collection(name)
    for field, value in (("shards_number", collection.config.shard_number),
                         ("replication_factor", collection.config.replication_factor)):
        if raw.get(field) not in (None, value):
            raise InvalidRequest(f"{field}: every shard key of collection `{name}` has the collection's {value}")
    collection.create_shard_key(key)
    return True


def delete_shard_key(toc: TableOfContents, *, name: str, raw: Any) -> bool:
    """``POST /collections/{c}/shards/delete``: drop a shard key and its points."""
    check_keys(raw, ("shard_key",), path="")
    toc.collection(name).delete_shard_key(shard_key(raw.get("shard_key"), path="shard_key"))
    return True


# --------------------------------------------------------------------- writes

# Parses a write request into one operation, given the collection's config.
OperationParser = Callable[[Any, CollectionConfig], Operation]

OPERATION_PARSERS: dict[str, OperationParser] = {
    "upsert": lambda raw, config: parse_upsert(raw, config=config),
    "delete": lambda raw, _config: parse_delete_points(raw),
    "set_payload": lambda raw, _config: parse_set_payload(raw),
    "overwrite_payload": lambda raw, _config: parse_overwrite_payload(raw),
    "delete_payload": lambda raw, _config: parse_delete_payload(raw),
    "clear_payload": lambda raw, _config: parse_clear_payload(raw),
    "update_vectors": lambda raw, config: parse_update_vectors(raw, config=config),
    "delete_vectors": lambda raw, config: parse_delete_vectors(raw, config=config),
}


def write(toc: TableOfContents, *, name: str, raw: Any, wait: bool, kind: str) -> dict[str, Any]:
    """One point write; ``kind`` is a key of ``OPERATION_PARSERS``. The whole
    request is parsed and validated before storage is called, so a rejected
    request writes nothing."""
    collection = toc.collection(name)
    raw, shard_keys = _pop_shard_keys(raw)
    operation = OPERATION_PARSERS[kind](raw, collection.config)
    return render_update_result(collection.update(operation, wait=wait, shard_keys=shard_keys))


def batch_update(toc: TableOfContents, *, name: str, raw: Any, wait: bool) -> list[Any]:
    """Operations in order. Like Qdrant's, not atomic: every operation's shape
    is validated first, but a check that needs stored state can fail part-way
    and the operations before it stay applied."""
    collection = toc.collection(name)
    operations = parse_batch_operations(raw, config=collection.config)
    results = []
    for index, operation in enumerate(operations):
        # Only the last operation needs to wait: the shard applies in order.
        is_last = index == len(operations) - 1
        results.append(render_update_result(collection.update(operation, wait=wait and is_last)))
    return results


# ---------------------------------------------------------------- point reads


ShardKeys = tuple[int | str, ...] | None


def _reading(toc: TableOfContents, name: str, consistency: ReadConsistency | None,
             shard_keys: ShardKeys = None) -> Collection:
    """The collection ``name`` (or alias), read under ``consistency`` from
    the shards of ``shard_keys`` (every shard when None)."""
    return toc.collection(name).reading(consistency, shard_keys=shard_keys)


def _pop_shard_keys(raw: Any, *, path: str = "shard_key") -> tuple[Any, ShardKeys]:
    """The request without its ``shard_key``, and the keys it selects."""
    if not isinstance(raw, dict) or "shard_key" not in raw:
        return raw, None
    rest = dict(raw)
    return rest, shard_key_selector(rest.pop("shard_key"), path=path)


def _pop_each_shard_keys(raw: Any, field: str) -> tuple[Any, list[ShardKeys]]:
    """A batch request (``raw[field]`` a list of requests) without the items'
    ``shard_key``, and each item's keys."""
    if not isinstance(raw, dict) or not isinstance(raw.get(field), list):
        return raw, []
    items, keys = [], []
    for index, item in enumerate(raw[field]):
        item, selected = _pop_shard_keys(item, path=f"{field}[{index}].shard_key")
        items.append(item)
        keys.append(selected)
    return {**raw, field: items}, keys


def _per_shard_keys(collection: Collection, consistency: ReadConsistency | None, keys: list[ShardKeys],
                    items: list[Any], run: Callable[[Collection, list[Any]], list[Any]]) -> list[Any]:
    """``run(view, items)`` once per distinct shard key selection among the
    items (``keys[i]`` is item i's), answers in the items' order."""
    groups: dict[ShardKeys, list[int]] = {}
    for position in range(len(items)):
        groups.setdefault(keys[position] if position < len(keys) else None, []).append(position)
    answers: list[Any] = [None] * len(items)
    for selected, positions in groups.items():
        view = collection.reading(consistency, shard_keys=selected)
        for position, answer in zip(positions, run(view, [items[i] for i in positions]), strict=True):
            answers[position] = answer
    return answers


def retrieve(toc: TableOfContents, *, name: str, raw: Any,
             consistency: ReadConsistency | None = None) -> list[Any]:
    raw, shard_keys = _pop_shard_keys(raw)
    collection = _reading(toc, name, consistency, shard_keys)
    spec = parse_retrieve(raw)
    records = collection.retrieve(list(spec.ids), with_payload=spec.with_payload, with_vector=spec.with_vector)
    is_named = collection.config.is_named_vectors
    return [render_record(record, is_named=is_named) for record in records]


def get_point(toc: TableOfContents, *, name: str, raw_id: str,
              consistency: ReadConsistency | None = None) -> Any:
    collection = _reading(toc, name, consistency)
    # A path segment is a string: digits are an integer id, anything else must be a UUID.
    target = point_id(int(raw_id) if raw_id.isdigit() else raw_id, path="id")
    records = collection.retrieve([target], with_payload=PayloadSelector(enabled=True), with_vector=True)
    if not records:
        raise NotFound(f"No point with id {target} found")
    return render_record(records[0], is_named=collection.config.is_named_vectors)


def scroll(toc: TableOfContents, *, name: str, raw: Any,
           consistency: ReadConsistency | None = None) -> dict[str, Any]:
    raw, shard_keys = _pop_shard_keys(raw)
    collection = _reading(toc, name, consistency, shard_keys)
    spec = parse_scroll(raw)
    records, next_offset = collection.scroll(
        filter=spec.filter, limit=spec.limit, offset=spec.offset, order_by=spec.order_by,
        with_payload=spec.with_payload, with_vector=spec.with_vector,
    )
    is_named = collection.config.is_named_vectors
    return {"points": [render_record(record, is_named=is_named) for record in records],
            "next_page_offset": next_offset}


def count(toc: TableOfContents, *, name: str, raw: Any,
          consistency: ReadConsistency | None = None) -> dict[str, int]:
    raw, shard_keys = _pop_shard_keys(raw)
    collection = _reading(toc, name, consistency, shard_keys)
    spec = parse_count(raw)
    return {"count": collection.count(filter=spec.filter, exact=spec.exact)}


# -------------------------------------------------------------------- queries


def _resolve_lookup(collection: Collection, parsed: ParsedQuery) -> QueryRequest:
    """Replace the placeholder vector with the stored vector of ``lookup_id``,
    asking for one more result so the point itself can be dropped."""
    request = parsed.request
    assert parsed.lookup_id is not None
    records = collection.retrieve([parsed.lookup_id], with_payload=PayloadSelector(enabled=False),
                                  with_vector=(request.using,))
    if not records:
        raise NotFound(f"query: no point with id {parsed.lookup_id} found")
    vector = (records[0].vectors or {}).get(request.using)
    if vector is None:
        raise InvalidRequest(f"query: point {parsed.lookup_id} has no vector {request.using!r}")
    return dataclasses.replace(request, vector=vector, limit=request.offset + request.limit + 1, offset=0)


def _trim_lookup(parsed: ParsedQuery, points: list[ScoredPoint]) -> list[ScoredPoint]:
    request = parsed.request
    kept = [point for point in points if point.id != parsed.lookup_id]
    return kept[request.offset:request.offset + request.limit]


def _scroll_as_query(collection: Collection, request: QueryRequest) -> list[Any]:
    """No ``query``: points in id order, as Qdrant answers, with score 0."""
    records, _next = collection.scroll(filter=request.filter, limit=request.offset + request.limit, offset=None,
                                       order_by=None, with_payload=request.with_payload,
                                       with_vector=request.with_vector)
    is_named = collection.config.is_named_vectors
    rendered = []
    for record in records[request.offset:]:
        point = render_record(record, is_named=is_named)
        point.update(version=0, score=0.0)
        rendered.append(point)
    return rendered


def _is_plain(parsed: ParsedQuery) -> bool:
    """Ids, versions and scores only: answered from columns, no object per hit."""
    request = parsed.request
    return (not parsed.is_scroll and parsed.lookup_id is None and request.offset == 0
            and not request.with_payload.enabled and not request.with_vector)


def _run_queries(collection: Collection, queries: list[ParsedQuery]) -> list[list[Any]]:
    """Answer every query. Plain vector queries that differ only in their
    vector go to storage as one matrix (``query_matrix``); the other vector
    queries as one batch."""
    is_named = collection.config.is_named_vectors
    answers: list[list[Any] | None] = [None] * len(queries)
    batch_requests: list[QueryRequest] = []
    batch_positions: list[int] = []
    plain: dict[tuple[bytes, float | None], list[int]] = {}  # one matrix per search and threshold
    for position, parsed in enumerate(queries):
        if parsed.is_scroll:
            answers[position] = _scroll_as_query(collection, parsed.request)
        elif _is_plain(parsed):
            plain.setdefault((search_key(parsed.request), parsed.request.score_threshold), []).append(position)
        else:
            request = _resolve_lookup(collection, parsed) if parsed.lookup_id is not None else parsed.request
            batch_requests.append(request)
            batch_positions.append(position)
    for positions in plain.values():
        columns = collection.query_matrix(queries[positions[0]].request,
                                          np.stack([queries[position].request.vector for position in positions]))
        for position, rendered in zip(positions, render_scored_columns(columns), strict=True):
            answers[position] = rendered
    results = collection.query_batch(batch_requests) if batch_requests else []
    assert len(results) == len(batch_requests)
    for position, points in zip(batch_positions, results, strict=True):
        parsed = queries[position]
        if parsed.lookup_id is not None:
            points = _trim_lookup(parsed, points)
        answers[position] = [render_scored_point(point, is_named=is_named) for point in points]
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


QueryItem = tuple[str, Any, ReadConsistency | None]


def query_many(toc: TableOfContents, items: list[QueryItem]) -> list[dict[str, Any] | BaseException]:
    """Answer single queries from several requests together (the REST and
    gRPC query batchers call this).

    ``items`` are ``(collection name, request, read consistency)`` where the
    request is a JSON body (bytes, parsed here, off the event loop) or an
    already JSON-shaped value. Each request keeps its own errors: a bad request or an unknown
    collection fails that request only; a storage failure fails the requests
    of that collection.
    """
    outcomes: list[dict[str, Any] | BaseException | None] = [None] * len(items)
    by_collection: dict[tuple[str, ReadConsistency | None], list[int]] = {}
    for position, (name, _raw, consistency) in enumerate(items):
        by_collection.setdefault((name, consistency), []).append(position)
    for (name, consistency), positions in by_collection.items():
        try:
            collection = _reading(toc, name, consistency)
        except QclusterError as error:
            for position in positions:
                outcomes[position] = error
            continue
        by_keys: dict[ShardKeys, tuple[list[ParsedQuery], list[int]]] = {}
        for position in positions:
            raw = items[position][1]
            try:
                raw, shard_keys = _pop_shard_keys(loads_object(raw) if isinstance(raw, bytes) else raw)
                parsed = parse_query(raw, config=collection.config)
            except QclusterError as error:
                outcomes[position] = error
                continue
            group = by_keys.setdefault(shard_keys, ([], []))
            group[0].append(parsed)
            group[1].append(position)
        for shard_keys, (parsed_queries, parsed_positions) in by_keys.items():
            try:
                answers = _run_queries(collection.reading(consistency, shard_keys=shard_keys), parsed_queries)
            except QclusterError as error:
                answers = [error] * len(parsed_queries)  # type: ignore[list-item]
            for position, answer in zip(parsed_positions, answers, strict=True):
                outcomes[position] = answer if isinstance(answer, BaseException) else {"points": answer}
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


def query_batch(toc: TableOfContents, *, name: str, raw: Any,
                consistency: ReadConsistency | None = None) -> list[dict[str, Any]]:
    raw, keys = _pop_each_shard_keys(raw, "searches")
    collection = _reading(toc, name, consistency)
    parsed = parse_query_batch(raw, config=collection.config)
    return [{"points": points} for points in _per_shard_keys(collection, consistency, keys, parsed, _run_queries)]


def search(toc: TableOfContents, *, name: str, raw: Any,
           consistency: ReadConsistency | None = None) -> list[Any]:
    raw, shard_keys = _pop_shard_keys(raw)
    collection = _reading(toc, name, consistency, shard_keys)
    request = parse_search(raw, config=collection.config)
    is_named = collection.config.is_named_vectors
    return [render_scored_point(point, is_named=is_named) for point in collection.query(request)]


def search_batch(toc: TableOfContents, *, name: str, raw: Any,
                 consistency: ReadConsistency | None = None) -> list[list[Any]]:
    raw, keys = _pop_each_shard_keys(raw, "searches")
    collection = _reading(toc, name, consistency)
    requests = parse_search_batch(raw, config=collection.config)
    is_named = collection.config.is_named_vectors
    results = _per_shard_keys(collection, consistency, keys, requests,
                              lambda view, part: view.query_batch(part))
    return [[render_scored_point(point, is_named=is_named) for point in points] for points in results]


# ------------------------------------------- numpy-native paths (dense gRPC)


def dense_upsert(toc: TableOfContents, *, name: str, raw_ids: list[Any], vectors: dict[str, np.ndarray],
                 raw_payloads: list[Any] | None, wait: bool) -> dict[str, Any]:
    """An upsert whose vectors are float32 matrices: no per-float parsing."""
    collection = toc.collection(name)
    operation = parse_dense_upsert(raw_ids=raw_ids, vectors=vectors, raw_payloads=raw_payloads,
                                   config=collection.config)
    return render_update_result(collection.update(operation, wait=wait))


def dense_query(toc: TableOfContents, *, name: str, queries: np.ndarray, raw: dict[str, Any]) -> ScoredColumns:
    """Every row of ``queries`` with the same parameters ``raw`` (a
    QueryRequest in JSON shape without ``query``): validated once, searched
    as one batch."""
    collection = toc.collection(name)
    rows = queries.shape[0]
    if rows > limits.QUERY_BATCH_MAX:
        raise LimitExceeded(f"queries: {rows} queries exceeds the maximum of {limits.QUERY_BATCH_MAX} "
                            "per request (QUERY_BATCH_MAX)")
    if rows == 0:
        return ScoredColumns(counts=np.zeros(0, np.uint32), ids=[], scores=np.zeros(0, np.float32),
                             versions=np.zeros(0, np.int64), payloads=None)
    using = raw.get("using") or ""
    dim = collection.config.vector_params(using, path="using").size
    checked = check_dense_matrix(queries, dim=dim, rows=rows, path="queries")
    parsed = parse_query({**raw, "query": checked[0].tolist()}, config=collection.config)
    assert parsed.lookup_id is None and not parsed.is_scroll
    return collection.query_matrix(parsed.request, checked)
