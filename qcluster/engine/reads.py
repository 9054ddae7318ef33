"""Read operations of a LocalShard: search, retrieve, scroll, count, statistics.

Every function here runs under the shard's read lock (taken by LocalShard).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from qcluster.engine import planner, vector_index
from qcluster.engine.filter_cache import filter_key, parsed_filter
from qcluster.engine._payload_values import parse_datetime_us
from qcluster.engine.filters import get_values
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
    ScoredColumns,
    ScoredPoint,
    point_id_sort_key,
)

if TYPE_CHECKING:
    from qcluster.engine.shard import LocalShard

__all__ = ["count", "retrieve", "scroll", "search_batch", "search_columns", "search_key"]

WithVector = bool | tuple[str, ...]
_RANGE_TYPES = (PayloadSchemaType.INTEGER, PayloadSchemaType.FLOAT, PayloadSchemaType.DATETIME)


def _vectors_of(segment: Segment, offset: int, with_vector: WithVector) -> dict[str, np.ndarray] | None:
    if with_vector is False:
        return None
    vectors = segment.row_vectors(offset)
    if with_vector is True:
        return vectors
    return {name: value for name, value in vectors.items() if name in with_vector}


def search_key(request: QueryRequest) -> bytes:
    """Equal for requests that differ only in their vector (and in what their
    answers carry): those are searched as one FAISS batch."""
    return orjson.dumps(
        [request.using, request.limit + request.offset, request.params.hnsw_ef,
         request.params.exact, request.params.indexed_only],
    ) + (b"" if request.filter is None else filter_key(request.filter))


def search_batch(shard: LocalShard, requests: list[QueryRequest]) -> list[list[ScoredPoint]]:
    """Top (offset + limit) points per request, best first, before offset is applied.

    The caller (collection) merges shards, then applies offset and limit.
    """
    results: list[list[ScoredPoint]] = [[] for _ in requests]
    groups: dict[bytes, list[int]] = defaultdict(list)
    for position, request in enumerate(requests):
        groups[search_key(request)].append(position)
    for positions in groups.values():
        group = [requests[position] for position in positions]
        searched = _search(shard, group[0], np.stack([request.vector for request in group]))
        if searched is None:
            continue
        hits, distance = searched
        for position, points in zip(positions, _points(shard.segments(), hits, group, distance=distance), strict=True):
            results[position] = points
    return results


def search_columns(shard: LocalShard, request: QueryRequest, queries: np.ndarray) -> ScoredColumns:
    """The top ``limit`` of each row of ``queries`` with the parameters of
    ``request``, as columns: no object per hit. For plain answers only (no
    payload, no vectors, no offset)."""
    assert request.offset == 0 and not request.with_payload.enabled and not request.with_vector
    rows = queries.shape[0]
    searched = _search(shard, request, queries)
    if searched is None:
        return ScoredColumns(counts=np.zeros(rows, np.uint32), ids=[], scores=np.zeros(0, np.float32),
                             versions=np.zeros(0, np.int64), payloads=None)
    hits, distance = searched
    segments = shard.segments()
    valid = np.arange(hits.keys.shape[1]) < hits.counts[:, None]
    if request.score_threshold is not None:
        valid &= hits.keys >= (request.score_threshold if distance.higher_is_better else -request.score_threshold)
    sign = np.float32(1.0 if distance.higher_is_better else -1.0)
    return ScoredColumns(counts=valid.sum(axis=1).astype(np.uint32), ids=_ids(segments, hits, valid),
                         scores=(hits.keys[valid] * sign).astype(np.float32),
                         versions=_versions(segments, hits)[valid], payloads=None)


def _search(shard: LocalShard, request: QueryRequest, queries: np.ndarray) -> tuple[_Hits, Distance] | None:
    """The shard's top (offset + limit) hits of every row of ``queries``
    under the parameters of ``request``; None when nothing is to be searched."""
    params = shard.config.vector_params(request.using, path="using")
    k = request.limit + request.offset
    segments = shard.segments()
    if k == 0 or not segments:
        return None
    queries = queries.astype(np.float32, copy=False)
    if params.distance == Distance.COSINE:
        queries = vector_index.normalize_rows(queries)
    parsed = parsed_filter(request.filter)  # once: every segment takes the same
    tops = [
        planner.search_segment(
            segment=segment,
            name=request.using,
            distance=params.distance,
            queries=queries,
            k=k,
            filter=parsed,
            params=request.params,
            hnsw=shard.config.hnsw_for(request.using),
        )
        for segment in segments
    ]
    return _merge_segments(tops, k=k), params.distance


class _Hits:
    """A shard's top k of a batch of queries, merged over its segments, as
    matrices (row-major, padding after ``counts[row]``)."""

    __slots__ = ("counts", "keys", "offsets", "segment_of")

    def __init__(self, *, keys: np.ndarray, offsets: np.ndarray, segment_of: np.ndarray | int,
                 counts: np.ndarray) -> None:
        self.keys = keys
        self.offsets = offsets
        self.segment_of = segment_of  # per hit, or for all hits: index into the shard's segments
        self.counts = counts


def _merge_segments(tops: list[vector_index.TopK], *, k: int) -> _Hits:
    """The k best hits per query over all segments. A point is live in one
    segment only, so this is a pure merge: ties keep segment order, then rank."""
    assert tops
    with_hits = [index for index, top in enumerate(tops) if top.counts.any()]
    if len(with_hits) <= 1:
        index = with_hits[0] if with_hits else 0
        top = tops[index]
        return _Hits(keys=top.keys, offsets=top.offsets, segment_of=index, counts=top.counts)
    chosen = [tops[index] for index in with_hits]
    keys = np.concatenate([top.keys for top in chosen], axis=1)
    offsets = np.concatenate([top.offsets for top in chosen], axis=1)
    segment_of = np.concatenate([np.full(top.keys.shape, index, dtype=np.int64)
                                 for index, top in zip(with_hits, chosen, strict=True)], axis=1)
    order = np.argsort(-keys, axis=1, kind="stable")[:, :k]  # padding keys are -inf: last
    counts = np.minimum(np.sum([top.counts for top in chosen], axis=0), k)
    return _Hits(keys=np.take_along_axis(keys, order, axis=1), offsets=np.take_along_axis(offsets, order, axis=1),
                 segment_of=np.take_along_axis(segment_of, order, axis=1), counts=counts)


def _ids(segments: list[Segment], hits: _Hits, valid: np.ndarray) -> list[PointId] | np.ndarray:
    """The ids of the ``valid`` hits, in order: a uint64 array gathered from
    the segments' ``id_array`` when they all have one, else a list."""
    offsets = hits.offsets[valid]
    if isinstance(hits.segment_of, int):
        segment = segments[hits.segment_of]
        if segment.id_array is not None:
            return segment.id_array[offsets]
        return [segment.ids[offset] for offset in offsets.tolist()]
    segment_of = hits.segment_of[valid]
    used = np.unique(segment_of).tolist()
    if all(segments[index].id_array is not None for index in used):
        ids = np.zeros(offsets.shape[0], dtype=np.uint64)
        for index in used:
            chosen = segment_of == index
            ids[chosen] = segments[index].id_array[offsets[chosen]]  # type: ignore[index]
        return ids
    return [segments[index].ids[offset] for index, offset in zip(segment_of.tolist(), offsets.tolist(), strict=True)]


def _versions(segments: list[Segment], hits: _Hits) -> np.ndarray:
    """The version of every hit, as a matrix shaped like ``hits.offsets``
    (padding entries read row 0 of a segment and mean nothing)."""
    safe_offsets = np.maximum(hits.offsets, 0)
    if isinstance(hits.segment_of, int):
        return segments[hits.segment_of].versions[safe_offsets]
    versions = np.zeros(hits.offsets.shape, dtype=np.int64)
    for index, segment in enumerate(segments):
        chosen = hits.segment_of == index
        versions[chosen] = segment.versions[safe_offsets[chosen]]
    return versions


def _points(segments: list[Segment], hits: _Hits, requests: list[QueryRequest], *,
            distance: Distance) -> list[list[ScoredPoint]]:
    """ScoredPoints per request (row of ``hits``), with what each request asks
    for. Column work happens once for the whole batch; what is left per hit
    is building its ScoredPoint."""
    sign = 1.0 if distance.higher_is_better else -1.0
    rows = hits.offsets.shape[0]
    versions = _versions(segments, hits)
    all_keys = hits.keys.tolist()
    all_scores = (hits.keys * sign).tolist()
    all_offsets = hits.offsets.tolist()
    all_versions = versions.tolist()
    all_segments = None if isinstance(hits.segment_of, int) else hits.segment_of.tolist()
    results = []
    for row in range(rows):
        request = requests[row]
        found = int(hits.counts[row])
        if request.score_threshold is not None:
            threshold_key = request.score_threshold if distance.higher_is_better else -request.score_threshold
            found = sum(1 for key in all_keys[row][:found] if key >= threshold_key)  # keys sorted best first
        offsets = all_offsets[row][:found]
        scores = all_scores[row][:found]
        row_versions = all_versions[row][:found]
        in_segments = [segments[index] for index in all_segments[row][:found]] if all_segments is not None \
            else [segments[hits.segment_of]] * found  # type: ignore[index]
        if not request.with_payload.enabled and not request.with_vector:
            results.append([
                ScoredPoint(segment.ids[offset], score, version)
                for segment, offset, score, version in zip(in_segments, offsets, scores, row_versions, strict=True)
            ])
            continue
        results.append([
            ScoredPoint(
                id=segment.ids[offset],
                score=score,
                version=version,
                payload=select_payload(segment.payloads[offset], request.with_payload),
                vectors=_vectors_of(segment, offset, request.with_vector),
            )
            for segment, offset, score, version in zip(in_segments, offsets, scores, row_versions, strict=True)
        ])
    return results


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
                version=int(segment.versions[offset]),
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
            version=int(segment.versions[row]),
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
            version=int(segment.versions[row]),
        )
        for number, _key, segment, row in entries[:limit]
    ]
