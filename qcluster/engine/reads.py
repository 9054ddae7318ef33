"""Read operations of a LocalShard: search, retrieve, scroll, count, statistics.

Every function here runs under the shard's read lock (taken by LocalShard).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from qcluster.engine import planner, vector_index
from qcluster.engine.filter_cache import parsed_filter
from qcluster.engine._payload_values import parse_datetime_us
from qcluster.engine.filters import get_values
from qcluster.engine.merge import merge_top_k
from qcluster.engine.payload_index import evaluate_filter
from qcluster.engine.payload_ops import select_payload
from qcluster.engine.segment import Segment
from qcluster.errors import InvalidRequest
from qcluster.types import (
    Distance,
    Direction,
    OrderBy,
    PayloadSchemaType,
    PayloadSelector,
    PointId,
    QueryRequest,
    Record,
    ScoredPoint,
    point_id_sort_key,
)

if TYPE_CHECKING:
    from qcluster.engine.shard import LocalShard

__all__ = ["count", "retrieve", "scroll", "search_batch"]

WithVector = bool | tuple[str, ...]
_RANGE_TYPES = (PayloadSchemaType.INTEGER, PayloadSchemaType.FLOAT, PayloadSchemaType.DATETIME)


def _vectors_of(segment: Segment, offset: int, with_vector: WithVector) -> dict[str, np.ndarray] | None:
    if with_vector is False:
        return None
    vectors = segment.row_vectors(offset)
    if with_vector is True:
        return vectors
    return {name: value for name, value in vectors.items() if name in with_vector}


def _group_key(request: QueryRequest) -> bytes:
    """Requests that share everything but the vector are searched as one FAISS batch."""
    return orjson.dumps(
        [request.using, request.filter, request.limit + request.offset, request.params.hnsw_ef,
         request.params.exact, request.params.indexed_only],
        option=orjson.OPT_SORT_KEYS,
    )


def search_batch(shard: LocalShard, requests: list[QueryRequest]) -> list[list[ScoredPoint]]:
    """Top (offset + limit) points per request, best first, before offset is applied.

    The caller (collection) merges shards, then applies offset and limit.
    """
    results: list[list[ScoredPoint]] = [[] for _ in requests]
    groups: dict[bytes, list[int]] = defaultdict(list)
    for position, request in enumerate(requests):
        groups[_group_key(request)].append(position)
    for positions in groups.values():
        first = requests[positions[0]]
        params = shard.config.vector_params(first.using, path="using")
        queries = np.stack([requests[position].vector for position in positions]).astype(np.float32)
        if params.distance == Distance.COSINE:
            queries = vector_index.normalize_rows(queries)
        k = first.limit + first.offset
        if k == 0:
            continue
        per_segment = [
            planner.search_segment(
                segment=segment,
                name=first.using,
                distance=params.distance,
                queries=queries,
                k=k,
                filter=parsed_filter(first.filter),
                params=first.params,
                hnsw=shard.config.hnsw_for(first.using),
            )
            for segment in shard.segments()
        ]
        for row, position in enumerate(positions):
            results[position] = _collect(
                shard, requests[position], per_segment, row=row, k=k, distance=params.distance
            )
    return results


def _collect(
    shard: LocalShard,
    request: QueryRequest,
    per_segment: list[list[planner.SegmentHits]],
    *,
    row: int,
    k: int,
    distance: Distance,
) -> list[ScoredPoint]:
    found = [
        (segment, hits_per_query[row])
        for segment, hits_per_query in zip(shard.segments(), per_segment, strict=True)
        if hits_per_query[row].offsets.shape[0]
    ]
    threshold_key = None
    if request.score_threshold is not None:
        threshold_key = request.score_threshold if distance.higher_is_better else -request.score_threshold
    sign = 1.0 if distance.higher_is_better else -1.0
    if len(found) == 1 and not request.with_payload.enabled and not request.with_vector:
        # The common "ids and scores only" answer from one segment: no merge,
        # and column operations instead of a Python loop per hit.
        segment, hits = found[0]
        keys = hits.keys[:k]
        if threshold_key is not None:
            keys = keys[: int(np.count_nonzero(keys >= threshold_key))]  # keys are sorted best first
        offsets = hits.offsets[: keys.shape[0]]
        ids = segment.ids
        return [
            ScoredPoint(id=ids[offset], score=score, version=version)
            for offset, score, version in zip(
                offsets.tolist(), (keys * sign).tolist(), segment.versions[offsets].tolist(), strict=True
            )
        ]
    merged: list[tuple[float, PointId, tuple[Segment, int]]]
    if len(found) == 1:
        # A point is live in one segment only, so a single segment needs no merge.
        segment, hits = found[0]
        offsets = hits.offsets[:k].tolist()
        merged = [
            (key, segment.ids[offset], (segment, offset))
            for key, offset in zip(hits.keys[:k].tolist(), offsets, strict=True)
        ]
    else:
        parts = [
            [
                (key, segment.ids[offset], (segment, offset))
                for key, offset in zip(hits.keys.tolist(), hits.offsets.tolist(), strict=True)
            ]
            for segment, hits in found
        ]
        merged = merge_top_k(parts, k=k)
    points = []
    for key, point_id, (segment, offset) in merged:
        if threshold_key is not None and key < threshold_key:
            break
        score = sign * key
        points.append(
            ScoredPoint(
                id=point_id,
                score=score,
                version=int(segment.versions[offset]),
                payload=select_payload(segment.payloads[offset], request.with_payload),
                vectors=_vectors_of(segment, offset, request.with_vector),
            )
        )
    return points


def retrieve(
    shard: LocalShard, ids: list[PointId], *, with_payload: PayloadSelector, with_vector: WithVector
) -> list[Record]:
    records = []
    for point_id in dict.fromkeys(ids):
        found = shard.locate(point_id)
        if found is None:
            continue
        segment, offset = found
        records.append(
            Record(
                id=point_id,
                payload=select_payload(segment.payloads[offset], with_payload),
                vectors=_vectors_of(segment, offset, with_vector),
            )
        )
    return records


def _matching(shard: LocalShard, filter: dict[str, Any] | None) -> list[tuple[Segment, np.ndarray]]:
    """Per segment, the offsets of live rows matching the filter."""
    parsed = parsed_filter(filter)
    chosen = []
    for segment in shard.segments():
        mask = segment.live_mask()
        if parsed is not None:
            mask = mask & evaluate_filter(parsed, segment)
        chosen.append((segment, np.flatnonzero(mask)))
    return chosen


def count(shard: LocalShard, *, filter: dict[str, Any] | None) -> int:
    if filter is None:
        return sum(segment.live_count() for segment in shard.segments())
    return sum(int(offsets.shape[0]) for _segment, offsets in _matching(shard, filter))


def scroll(
    shard: LocalShard,
    *,
    filter: dict[str, Any] | None,
    limit: int,
    offset: PointId | None,
    order_by: OrderBy | None,
    with_payload: PayloadSelector,
    with_vector: WithVector,
) -> tuple[list[Record], PointId | None]:
    """One page by id order (with next_page_offset), or by a payload value."""
    assert limit > 0
    if order_by is not None:
        return _scroll_ordered(shard, filter, limit, order_by, with_payload, with_vector), None
    entries = []
    start_key = None if offset is None else point_id_sort_key(offset)
    for segment, offsets in _matching(shard, filter):
        for row in offsets:
            sort_key = point_id_sort_key(segment.ids[row])
            if start_key is None or sort_key >= start_key:
                entries.append((sort_key, segment, int(row)))
    entries.sort(key=lambda entry: entry[0])
    page = entries[: limit + 1]
    next_offset = page[limit][1].ids[page[limit][2]] if len(page) > limit else None
    records = [
        Record(
            id=segment.ids[row],
            payload=select_payload(segment.payloads[row], with_payload),
            vectors=_vectors_of(segment, row, with_vector),
        )
        for _key, segment, row in page[:limit]
    ]
    return records, next_offset


def _order_value(value: Any, schema_type: PayloadSchemaType) -> float | None:
    if schema_type == PayloadSchemaType.DATETIME:
        if not isinstance(value, str):
            return None
        micros = parse_datetime_us(value)
        return None if micros is None else micros / 1e6
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _scroll_ordered(
    shard: LocalShard,
    filter: dict[str, Any] | None,
    limit: int,
    order_by: OrderBy,
    with_payload: PayloadSelector,
    with_vector: WithVector,
) -> list[Record]:
    schema = shard.field_schemas.get(order_by.key)
    if schema is None or schema.type not in _RANGE_TYPES:
        raise InvalidRequest(
            f"order_by.key: no range index (integer, float or datetime) on field {order_by.key!r}; create one first"
        )
    entries = []
    for segment, offsets in _matching(shard, filter):
        for row in offsets:
            for value in get_values(segment.payloads[row], order_by.key):
                number = _order_value(value, schema.type)
                if number is None:
                    continue
                if order_by.start_from is not None:
                    if order_by.direction == Direction.ASC and number < order_by.start_from:
                        continue
                    if order_by.direction == Direction.DESC and number > order_by.start_from:
                        continue
                entries.append((number, point_id_sort_key(segment.ids[row]), segment, int(row)))
    entries.sort(key=lambda entry: (entry[0], entry[1]), reverse=order_by.direction == Direction.DESC)
    return [
        Record(
            id=segment.ids[row],
            payload=select_payload(segment.payloads[row], with_payload),
            vectors=_vectors_of(segment, row, with_vector),
            order_value=number,
        )
        for number, _key, segment, row in entries[:limit]
    ]
