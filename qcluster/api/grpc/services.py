"""Qdrant's public gRPC services (``qdrant.Collections``, ``qdrant.Points``,
``qdrant.Snapshots``, ``qdrant.Qdrant``) on qcluster's actions.

Each RPC is one synchronous function ``(toc, request) -> reply`` run in the
storage executor: convert the request to Qdrant's JSON shape, run the same
action as the REST route, convert the result to the reply. Single queries
(``Points/Query``) go through a ``Batcher`` like REST's, so concurrent
clients share FAISS calls. A method of Qdrant's services that qcluster does
not implement answers UNIMPLEMENTED with a message naming it; every error
maps through ``qcluster.api.error_mapping``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import grpc
import pydantic
from google.protobuf.message import Message
from qdrant_client import grpc as pb

import qcluster
from qcluster.api import actions
from qcluster.api.batcher import Batcher
from qcluster.api.grpc import convert as C
from qcluster.api.grpc.dispatch import Dispatcher
from qcluster.api.schema.parse import check_collection_name, read_consistency
from qcluster.api.state import NodeState
from qcluster.errors import QclusterError
from qcluster.types import ReadConsistency

if TYPE_CHECKING:
    from qcluster.storage.toc import TableOfContents

__all__ = ["add_services", "unimplemented_methods"]

SyncRpc = Callable[["TableOfContents", Any], Message]


def _name(request: Any) -> str:
    return check_collection_name(request.collection_name)


def _converted(convert: Callable[[Any], Any], message: Any) -> Any:
    """``convert(message)``; a message the converters cannot read is an InvalidRequest."""
    try:
        return convert(message)
    except (ValueError, TypeError, KeyError, pydantic.ValidationError) as exc:
        raise C.as_invalid_request(exc) from exc


def _consistency(request: Any) -> ReadConsistency | None:
    """A read request's ``read_consistency`` (absent: the default)."""
    if not request.HasField("read_consistency"):
        return None
    value = _converted(C.GrpcToRest.convert_read_consistency, request.read_consistency)
    return read_consistency(getattr(value, "value", value), path="read_consistency")


def _operation_reply(result: Any) -> pb.PointsOperationResponse:
    return pb.PointsOperationResponse(result=C.update_result_reply(result))


# ------------------------------------------------------------- collections


def _list(toc: TableOfContents, _request: pb.ListCollectionsRequest) -> Message:
    listed = actions.list_collections(toc)["collections"]
    return pb.ListCollectionsResponse(collections=[pb.CollectionDescription(name=item["name"]) for item in listed])


def _get(toc: TableOfContents, request: pb.GetCollectionInfoRequest) -> Message:
    info = actions.collection_info(toc, name=_name(request))
    return pb.GetCollectionInfoResponse(result=C.collection_info_reply(info))


def _create(toc: TableOfContents, request: pb.CreateCollection) -> Message:
    raw = _converted(C.create_collection_request, request)
    return pb.CollectionOperationResponse(result=actions.create_collection(toc, name=_name(request), raw=raw))


def _update(toc: TableOfContents, request: pb.UpdateCollection) -> Message:
    raw = _converted(C.update_collection_request, request)
    return pb.CollectionOperationResponse(result=actions.update_collection(toc, name=_name(request), raw=raw))


def _delete_collection(toc: TableOfContents, request: pb.DeleteCollection) -> Message:
    return pb.CollectionOperationResponse(result=actions.delete_collection(toc, name=_name(request)))


def _exists(toc: TableOfContents, request: pb.CollectionExistsRequest) -> Message:
    exists = actions.collection_exists(toc, name=_name(request))["exists"]
    return pb.CollectionExistsResponse(result=pb.CollectionExists(exists=exists))


def _update_aliases(toc: TableOfContents, request: pb.ChangeAliases) -> Message:
    raw = {"actions": [_converted(lambda a: C.dump(C.GrpcToRest.convert_alias_operations(a)), action)
                       for action in request.actions]}
    return pb.CollectionOperationResponse(result=actions.update_aliases(toc, raw=raw))


def _aliases_reply(listed: dict[str, Any]) -> Message:
    return pb.ListAliasesResponse(aliases=[C.alias_reply(item) for item in listed["aliases"]])


def _collection_aliases(toc: TableOfContents, request: pb.ListCollectionAliasesRequest) -> Message:
    return _aliases_reply(actions.collection_aliases(toc, name=_name(request)))


def _all_aliases(toc: TableOfContents, _request: pb.ListAliasesRequest) -> Message:
    return _aliases_reply(actions.collection_aliases(toc, name=None))


def _cluster_info(toc: TableOfContents, request: pb.CollectionClusterInfoRequest) -> Message:
    return C.collection_cluster_info_reply(actions.collection_cluster_info(toc, name=_name(request)))


def _update_cluster_setup(toc: TableOfContents, request: pb.UpdateCollectionClusterSetupRequest) -> Message:
    raw = _converted(C.cluster_operation_request, request)
    result = actions.update_cluster_setup(toc, name=_name(request), raw=raw)
    return pb.UpdateCollectionClusterSetupResponse(result=result)


def _shard_key_raw(key: Any) -> Any:
    return _converted(C.GrpcToRest.convert_shard_key, key)


def _create_shard_key(toc: TableOfContents, request: pb.CreateShardKeyRequest) -> Message:
    spec = request.request
    raw: dict[str, Any] = {"shard_key": _shard_key_raw(spec.shard_key)}
    for field in ("shards_number", "replication_factor"):
        if spec.HasField(field):
            raw[field] = getattr(spec, field)
    if spec.placement:
        raw["placement"] = list(spec.placement)
    return pb.CreateShardKeyResponse(result=actions.create_shard_key(toc, name=_name(request), raw=raw))


def _delete_shard_key(toc: TableOfContents, request: pb.DeleteShardKeyRequest) -> Message:
    raw = {"shard_key": _shard_key_raw(request.request.shard_key)}
    return pb.DeleteShardKeyResponse(result=actions.delete_shard_key(toc, name=_name(request), raw=raw))


_COLLECTIONS: Final[dict[str, SyncRpc]] = {
    "List": _list, "Get": _get, "Create": _create, "Update": _update, "Delete": _delete_collection,
    "CollectionExists": _exists, "UpdateAliases": _update_aliases,
    "ListCollectionAliases": _collection_aliases, "ListAliases": _all_aliases,
    "CollectionClusterInfo": _cluster_info, "UpdateCollectionClusterSetup": _update_cluster_setup,
    "CreateShardKey": _create_shard_key, "DeleteShardKey": _delete_shard_key,
}

# ------------------------------------------------------------------ writes


def _writer(kind: str, to_raw: Callable[[Any], Any]) -> SyncRpc:
    assert kind in actions.OPERATION_PARSERS, kind

    def call(toc: TableOfContents, request: Any) -> Message:
        raw = _converted(to_raw, request)
        return _operation_reply(actions.write(toc, name=_name(request), raw=raw, wait=request.wait, kind=kind))

    return call


def _upsert_raw(request: pb.UpsertPoints) -> dict[str, Any]:
    raw: dict[str, Any] = {"points": [C.dump(C.GrpcToRest.convert_point_struct(point)) for point in request.points]}
    if request.HasField("update_filter"):
        raw["update_filter"] = C.dump(C.GrpcToRest.convert_filter(request.update_filter))
    if request.HasField("shard_key_selector"):
        raw["shard_key"] = C.dump(C.GrpcToRest.convert_shard_key_selector(request.shard_key_selector))
    return raw


def _update_vectors_raw(request: pb.UpdatePointVectors) -> dict[str, Any]:
    raw: dict[str, Any] = {"points": [C.dump(C.GrpcToRest.convert_point_vectors(point)) for point in request.points]}
    if request.HasField("update_filter"):
        raw["update_filter"] = C.dump(C.GrpcToRest.convert_filter(request.update_filter))
    return raw


def _create_index(toc: TableOfContents, request: pb.CreateFieldIndexCollection) -> Message:
    raw = _converted(C.create_index_request, request)
    return _operation_reply(actions.create_index(toc, name=_name(request), raw=raw, wait=request.wait))


def _delete_index(toc: TableOfContents, request: pb.DeleteFieldIndexCollection) -> Message:
    result = actions.delete_index(toc, name=_name(request), field_name=request.field_name, wait=request.wait)
    return _operation_reply(result)


def _update_batch(toc: TableOfContents, request: pb.UpdateBatchPoints) -> Message:
    raw = {"operations": [_converted(lambda op: C.dump(C.GrpcToRest.convert_points_update_operation(op)), operation)
                          for operation in request.operations]}
    results = actions.batch_update(toc, name=_name(request), raw=raw, wait=request.wait)
    return pb.UpdateBatchResponse(result=[C.update_result_reply(result) for result in results])


# ------------------------------------------------------------------- reads


def _retrieve(toc: TableOfContents, request: pb.GetPoints) -> Message:
    records = actions.retrieve(toc, name=_name(request), raw=_converted(C.retrieve_request, request),
                               consistency=_consistency(request))
    return pb.GetResponse(result=[C.record_reply(record) for record in records])


def _scroll(toc: TableOfContents, request: pb.ScrollPoints) -> Message:
    page = actions.scroll(toc, name=_name(request), raw=_converted(C.scroll_request, request),
                          consistency=_consistency(request))
    reply = pb.ScrollResponse(result=[C.record_reply(record) for record in page["points"]])
    if page["next_page_offset"] is not None:
        reply.next_page_offset.CopyFrom(C.RestToGrpc.convert_extended_point_id(page["next_page_offset"]))
    return reply


def _count(toc: TableOfContents, request: pb.CountPoints) -> Message:
    counted = actions.count(toc, name=_name(request), raw=_converted(C.count_request, request),
                            consistency=_consistency(request))
    return pb.CountResponse(result=pb.CountResult(count=counted["count"]))


def _scored(points: list[Any]) -> list[pb.ScoredPoint]:
    return [C.scored_point_reply(point) for point in points]


def _search(toc: TableOfContents, request: pb.SearchPoints) -> Message:
    points = actions.search(toc, name=_name(request), raw=_converted(C.search_request, request),
                            consistency=_consistency(request))
    return pb.SearchResponse(result=_scored(points))


def _search_batch(toc: TableOfContents, request: pb.SearchBatchPoints) -> Message:
    raw = {"searches": [_converted(C.search_request, search) for search in request.search_points]}
    answers = actions.search_batch(toc, name=_name(request), raw=raw, consistency=_consistency(request))
    return pb.SearchBatchResponse(result=[pb.BatchResult(result=_scored(points)) for points in answers])


def _query_batch(toc: TableOfContents, request: pb.QueryBatchPoints) -> Message:
    raw = {"searches": [_converted(C.query_request, query) for query in request.query_points]}
    answers = actions.query_batch(toc, name=_name(request), raw=raw, consistency=_consistency(request))
    return pb.QueryBatchResponse(result=[pb.BatchResult(result=_scored(answer["points"])) for answer in answers])


def _query_many(state: NodeState, items: list[pb.QueryPoints]) -> list[Message | BaseException]:
    """Single ``Query`` calls answered together (see ``Batcher``); each keeps its own errors."""
    outcomes: list[Message | BaseException | None] = [None] * len(items)
    converted: list[actions.QueryItem] = []
    positions: list[int] = []
    for position, request in enumerate(items):
        try:
            converted.append((_name(request), _converted(C.query_request, request), _consistency(request)))
            positions.append(position)
        except QclusterError as error:
            outcomes[position] = error
    answers = actions.query_many(state.ready_toc(), converted) if converted else []
    for position, answer in zip(positions, answers, strict=True):
        if isinstance(answer, BaseException):
            outcomes[position] = answer
        else:
            outcomes[position] = pb.QueryResponse(result=_scored(answer["points"]))
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


_POINTS: Final[dict[str, SyncRpc]] = {
    "Upsert": _writer("upsert", _upsert_raw),
    "Delete": _writer("delete", lambda request: C.selector(request.points)),
    "SetPayload": _writer("set_payload", C.set_payload_request),
    "OverwritePayload": _writer("overwrite_payload", C.set_payload_request),
    "DeletePayload": _writer("delete_payload", lambda request: {
        "keys": list(request.keys), **(C.selector(request.points_selector)
                                       if request.HasField("points_selector") else {})}),
    "ClearPayload": _writer("clear_payload", lambda request: C.selector(request.points)),
    "UpdateVectors": _writer("update_vectors", _update_vectors_raw),
    "DeleteVectors": _writer("delete_vectors", C.delete_vectors_request),
    "CreateFieldIndex": _create_index,
    "DeleteFieldIndex": _delete_index,
    "UpdateBatch": _update_batch,
    "Get": _retrieve,
    "Scroll": _scroll,
    "Count": _count,
    "Search": _search,
    "SearchBatch": _search_batch,
    "QueryBatch": _query_batch,
}


def _health(_toc: TableOfContents | None, _request: pb.HealthCheckRequest, *, commit: str) -> Message:
    return pb.HealthCheckReply(title="qcluster", version=qcluster.QDRANT_API_VERSION, commit=commit)


# ----------------------------------------------------------------- serving


def _method(dispatcher: Dispatcher, name: str, rpc: SyncRpc) -> Callable[..., Awaitable[Message]]:
    async def handle(_self: Any, request: Message, context: grpc.aio.ServicerContext) -> Message:
        return await dispatcher.serve(name, context, lambda: dispatcher.run_sync(rpc, request))

    return handle


def _unimplemented(service: str, name: str) -> Callable[..., Awaitable[Message]]:
    async def handle(_self: Any, _request: Message, context: grpc.aio.ServicerContext) -> Message:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{service}/{name} is not supported by qcluster")
        raise AssertionError("context.abort raises")

    return handle


def _rpc_names(base: type) -> list[str]:
    return [name for name in vars(base) if name[:1].isupper() and callable(vars(base)[name])]


def unimplemented_methods() -> dict[str, list[str]]:
    """Service -> methods of Qdrant's API that answer UNIMPLEMENTED (for the docs and tests)."""
    implemented = {"Collections": _COLLECTIONS, "Points": {**_POINTS, "Query": None}, "Qdrant": {"HealthCheck": None},
                   "Snapshots": {}}
    bases = {"Collections": pb.CollectionsServicer, "Points": pb.PointsServicer, "Qdrant": pb.QdrantServicer,
             "Snapshots": pb.SnapshotsServicer}
    return {service: sorted(set(_rpc_names(base)) - set(implemented[service])) for service, base in bases.items()}


def _servicer(base: type, service: str, methods: dict[str, Callable[..., Awaitable[Message]]]) -> Any:
    namespace = {name: methods.get(name) or _unimplemented(service, name) for name in _rpc_names(base)}
    assert set(methods) <= set(namespace), set(methods) - set(namespace)
    return type(f"Qcluster{base.__name__}", (base,), namespace)()


def add_services(server: grpc.aio.Server, dispatcher: Dispatcher) -> None:
    """Register Qdrant's four public services on ``server``."""
    state = dispatcher.state
    query_batcher: Batcher[pb.QueryPoints, Message] = Batcher(
        executor=state.executor, run_batch=functools.partial(_query_many, state))

    async def query(_self: Any, request: pb.QueryPoints, context: grpc.aio.ServicerContext) -> Message:
        async def work() -> Message:
            _name(request)
            state.ready_toc()
            return await query_batcher.submit(request)

        return await dispatcher.serve("Query", context, work)

    async def health(_self: Any, request: pb.HealthCheckRequest, context: grpc.aio.ServicerContext) -> Message:
        async def work() -> Message:
            return _health(None, request, commit=state.commit)

        return await dispatcher.serve("HealthCheck", context, work)

    collections = {name: _method(dispatcher, name, rpc) for name, rpc in _COLLECTIONS.items()}
    points = {name: _method(dispatcher, name, rpc) for name, rpc in _POINTS.items()}
    points["Query"] = query
    pb.add_CollectionsServicer_to_server(_servicer(pb.CollectionsServicer, "Collections", collections), server)
    pb.add_PointsServicer_to_server(_servicer(pb.PointsServicer, "Points", points), server)
    pb.add_SnapshotsServicer_to_server(_servicer(pb.SnapshotsServicer, "Snapshots", {}), server)
    pb.add_QdrantServicer_to_server(_servicer(pb.QdrantServicer, "Qdrant", {"HealthCheck": health}), server)
