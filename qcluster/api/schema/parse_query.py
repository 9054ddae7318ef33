"""Read requests: retrieve, scroll, count, query (universal API) and the
legacy search. Query vectors are checked against the collection's config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from qcluster import limits
from qcluster.api.schema.parse import (
    check_keys,
    get_bool,
    get_float,
    get_int,
    get_list,
    get_object,
    get_str,
    join,
    json_type,
    optional_filter,
    payload_selector,
    point_id,
    point_ids,
    reject_unsupported,
    vector_selector,
)
from qcluster.api.schema.vectors import single_vector
from qcluster.errors import InvalidRequest, LimitExceeded
from qcluster.types import (
    DEFAULT_VECTOR,
    CollectionConfig,
    Direction,
    OrderBy,
    PayloadSelector,
    PointId,
    QueryRequest,
    SearchParams,
)

__all__ = [
    "CountSpec",
    "ParsedQuery",
    "RetrieveSpec",
    "ScrollSpec",
    "parse_count",
    "parse_query",
    "parse_query_batch",
    "parse_retrieve",
    "parse_scroll",
    "parse_search",
    "parse_search_batch",
]

# Query kinds of Qdrant's universal API that qcluster does not implement.
_UNSUPPORTED_QUERY_KINDS: Final = ("recommend", "discover", "context", "order_by", "fusion", "rrf", "sample",
                                   "formula", "mmr", "relevance_feedback")
_NO_VECTOR: Final = np.empty(0, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class RetrieveSpec:
    ids: tuple[PointId, ...]
    with_payload: PayloadSelector
    with_vector: bool | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ScrollSpec:
    filter: dict[str, Any] | None
    limit: int
    offset: PointId | None
    order_by: OrderBy | None
    with_payload: PayloadSelector
    with_vector: bool | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CountSpec:
    filter: dict[str, Any] | None
    exact: bool


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """A query whose vector is known, or must be looked up by point id first.

    ``lookup_id`` set: ``request.vector`` is a placeholder; the handler reads
    the point's vector named ``request.using`` and excludes the point itself
    from the results. ``is_scroll``: no query at all (Qdrant then returns
    points in id order, like a scroll).
    """

    request: QueryRequest
    lookup_id: PointId | None = None
    is_scroll: bool = False


def parse_retrieve(raw: dict[str, Any]) -> RetrieveSpec:
    check_keys(raw, ("ids", "with_payload", "with_vector", "shard_key"), path="")
    reject_unsupported(raw, ("shard_key",), path="")
    ids = get_list(raw, "ids", path="", required=True)
    return RetrieveSpec(
        ids=point_ids(ids, path="ids"),
        with_payload=payload_selector(raw.get("with_payload"), path="with_payload", default=True),
        with_vector=vector_selector(raw.get("with_vector"), path="with_vector", default=False),
    )


def _order_by(raw: Any, *, path: str) -> OrderBy | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return OrderBy(key=raw)
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: expected a key or an object, got {json_type(raw)}")
    check_keys(raw, ("key", "direction", "start_from"), path=path)
    key = get_str(raw, "key", path=path, required=True)
    assert key is not None
    direction_raw = get_str(raw, "direction", path=path) or Direction.ASC.value
    try:
        direction = Direction(direction_raw)
    except ValueError as exc:
        raise InvalidRequest(f"{path}.direction: expected asc or desc, got {direction_raw!r}") from exc
    if isinstance(raw.get("start_from"), str):
        raise InvalidRequest(f"{path}.start_from: datetime start_from is not supported by qcluster; use a number")
    return OrderBy(key=key, direction=direction, start_from=get_float(raw, "start_from", path=path))


def parse_scroll(raw: dict[str, Any]) -> ScrollSpec:
    check_keys(raw, ("filter", "limit", "offset", "order_by", "with_payload", "with_vector", "shard_key"), path="")
    reject_unsupported(raw, ("shard_key",), path="")
    limit = get_int(raw, "limit", path="", default=10, minimum=1, maximum=limits.SCROLL_LIMIT_MAX,
                    limit_name="SCROLL_LIMIT_MAX")
    assert limit is not None
    offset = None if raw.get("offset") is None else point_id(raw["offset"], path="offset")
    order_by = _order_by(raw.get("order_by"), path="order_by")
    if order_by is not None and offset is not None:
        raise InvalidRequest("offset: cannot be used together with order_by (use order_by.start_from)")
    return ScrollSpec(
        filter=optional_filter(raw, path=""),
        limit=limit,
        offset=offset,
        order_by=order_by,
        with_payload=payload_selector(raw.get("with_payload"), path="with_payload", default=True),
        with_vector=vector_selector(raw.get("with_vector"), path="with_vector", default=False),
    )


def parse_count(raw: dict[str, Any]) -> CountSpec:
    check_keys(raw, ("filter", "exact", "shard_key"), path="")
    reject_unsupported(raw, ("shard_key",), path="")
    return CountSpec(filter=optional_filter(raw, path=""), exact=get_bool(raw, "exact", path="", default=True))


def _search_params(raw: dict[str, Any], *, path: str) -> SearchParams:
    params = get_object(raw, "params", path=path)
    if params is None:
        return SearchParams()
    params_path = join(path, "params")
    check_keys(params, ("hnsw_ef", "exact", "quantization", "indexed_only", "acorn", "idf"), path=params_path)
    # Quantization and ACORN knobs are accepted and ignored: qcluster has no
    # quantized search yet, so they cannot change a result.
    return SearchParams(
        hnsw_ef=get_int(params, "hnsw_ef", path=params_path, default=None, minimum=1,
                        maximum=limits.HNSW_EF_MAX, limit_name="HNSW_EF_MAX"),
        exact=get_bool(params, "exact", path=params_path, default=False),
        indexed_only=get_bool(params, "indexed_only", path=params_path, default=False),
    )


def _limit_and_offset(raw: dict[str, Any], *, path: str) -> tuple[int, int]:
    limit = get_int(raw, "limit", path=path, default=10, minimum=1, maximum=limits.TOP_K_MAX,
                    limit_name="TOP_K_MAX")
    offset = get_int(raw, "offset", path=path, default=0, minimum=0, maximum=limits.OFFSET_MAX,
                     limit_name="OFFSET_MAX")
    assert limit is not None
    assert offset is not None
    if limit + offset > limits.OFFSET_MAX:
        raise LimitExceeded(f"{join(path, 'offset')}: offset + limit exceeds {limits.OFFSET_MAX} (OFFSET_MAX)")
    return limit, offset


def _common_request(raw: dict[str, Any], *, path: str, using: str, vector: np.ndarray) -> QueryRequest:
    limit, offset = _limit_and_offset(raw, path=path)
    return QueryRequest(
        vector=vector,
        using=using,
        filter=optional_filter(raw, path=path),
        limit=limit,
        offset=offset,
        score_threshold=get_float(raw, "score_threshold", path=path),
        with_payload=payload_selector(raw.get("with_payload"), path=join(path, "with_payload"), default=False),
        with_vector=vector_selector(raw.get("with_vector"), path=join(path, "with_vector"), default=False),
        params=_search_params(raw, path=path),
    )


def _query_input(value: Any, *, path: str) -> tuple[Any, PointId | None, str]:
    """Split a ``query`` value into (raw vector, None, path) or (None, point id, path)."""
    if isinstance(value, list):
        return value, None, path
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return None, point_id(value, path=path), path
    if isinstance(value, dict):
        if "nearest" in value:
            check_keys(value, ("nearest", "mmr"), path=path)
            reject_unsupported(value, ("mmr",), path=path)
            return _query_input(value["nearest"], path=f"{path}.nearest")
        if "indices" in value or "values" in value:
            raise InvalidRequest(f"{path}: sparse vectors are not supported by qcluster")
        for kind in _UNSUPPORTED_QUERY_KINDS:
            if kind in value:
                raise InvalidRequest(f"{path}.{kind}: this query type is not supported by qcluster (use nearest)")
    raise InvalidRequest(f"{path}: expected a vector, a point id or {{\"nearest\": ...}}")


def parse_query(raw: Any, *, config: CollectionConfig, path: str = "") -> ParsedQuery:
    """One QueryRequest of the universal query API."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path or 'body'}: expected an object, got {json_type(raw)}")
    check_keys(raw, ("query", "using", "filter", "params", "score_threshold", "limit", "offset", "with_vector",
                     "with_payload", "prefetch", "lookup_from", "shard_key"), path=path)
    reject_unsupported(raw, ("prefetch", "lookup_from", "shard_key"), path=path)
    using = get_str(raw, "using", path=path) or DEFAULT_VECTOR
    if raw.get("query") is None:
        return ParsedQuery(request=_common_request(raw, path=path, using=using, vector=_NO_VECTOR), is_scroll=True)
    dim = config.vector_params(using, path=join(path, "using")).size
    vector_raw, lookup_id, vector_path = _query_input(raw["query"], path=join(path, "query"))
    if lookup_id is not None:
        return ParsedQuery(request=_common_request(raw, path=path, using=using, vector=_NO_VECTOR),
                           lookup_id=lookup_id)
    vector = single_vector(vector_raw, dim=dim, path=vector_path)
    return ParsedQuery(request=_common_request(raw, path=path, using=using, vector=vector))


def _batch_items(raw: dict[str, Any]) -> list[Any]:
    check_keys(raw, ("searches",), path="")
    searches = get_list(raw, "searches", path="", required=True)
    assert searches is not None
    if len(searches) > limits.QUERY_BATCH_MAX:
        raise LimitExceeded(
            f"searches: {len(searches)} searches exceeds the maximum of {limits.QUERY_BATCH_MAX} (QUERY_BATCH_MAX)"
        )
    return searches


def parse_query_batch(raw: dict[str, Any], *, config: CollectionConfig) -> list[ParsedQuery]:
    return [parse_query(item, config=config, path=f"searches[{index}]") for index, item in enumerate(_batch_items(raw))]


def parse_search(raw: Any, *, config: CollectionConfig, path: str = "") -> QueryRequest:
    """A legacy SearchRequest: ``vector`` is a bare vector or ``{"name", "vector"}``."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path or 'body'}: expected an object, got {json_type(raw)}")
    check_keys(raw, ("vector", "filter", "params", "limit", "offset", "with_payload", "with_vector",
                     "score_threshold", "shard_key"), path=path)
    reject_unsupported(raw, ("shard_key",), path=path)
    vector_raw = raw.get("vector")
    vector_path = join(path, "vector")
    using = DEFAULT_VECTOR
    if isinstance(vector_raw, dict):
        check_keys(vector_raw, ("name", "vector"), path=vector_path)
        using = get_str(vector_raw, "name", path=vector_path, required=True) or DEFAULT_VECTOR
        vector_raw = vector_raw.get("vector")
        vector_path = join(vector_path, "vector")
    if vector_raw is None:
        raise InvalidRequest(f"{vector_path}: missing required field")
    dim = config.vector_params(using, path=join(path, "vector")).size
    vector = single_vector(vector_raw, dim=dim, path=vector_path)
    return _common_request(raw, path=path, using=using, vector=vector)


def parse_search_batch(raw: dict[str, Any], *, config: CollectionConfig) -> list[QueryRequest]:
    return [parse_search(item, config=config, path=f"searches[{index}]") for index, item in enumerate(_batch_items(raw))]
