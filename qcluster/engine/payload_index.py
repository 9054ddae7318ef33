"""Payload field indexes of one segment, and exact filter evaluation with them.

``FieldIndex`` (in ``_field_index``) indexes one key; ``evaluate_filter``
turns a parsed filter into a boolean mask over a segment's rows, using the
indexes where they answer exactly and the naive evaluator elsewhere.

The plan, per filter level: conditions an index (or the id map) answers are
computed first as whole-segment masks and ANDed; the remaining conditions are
then checked payload by payload only at rows still possible. ``should``,
``must_not`` and ``min_should`` likewise shrink the set of rows still
undecided before touching payloads. The result equals
``filters.matches(filter, view.payload(i), view.point_id(i), ...)`` for every
live row ``i``; see ``evaluate_filter`` for the one caveat on dead rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from qcluster.engine._field_index import FieldIndex, is_uuid_text
from qcluster.engine._filter_ast import (
    Condition,
    DatetimeRange,
    FieldMatch,
    Filter,
    HasId,
    NumberRange,
)
from qcluster.engine._payload_values import TextIndexParams
from qcluster.engine.filters import TextIndexing, check_condition
from qcluster.types import PointId

__all__ = ["FieldIndex", "SegmentView", "evaluate_filter", "is_uuid_text", "text_indexing_of"]


class SegmentView(Protocol):
    """What filter evaluation needs from a segment (the segment implements it)."""

    @property
    def count(self) -> int:
        """Rows 0..count-1, dead ones included."""
        ...

    def payload(self, offset: int) -> dict[str, Any] | None: ...

    def point_id(self, offset: int) -> PointId: ...

    def offset_of(self, point_id: PointId) -> int | None:
        """The live row of ``point_id``, or None."""
        ...

    def field_index(self, key: str) -> FieldIndex | None: ...

    def text_index_keys(self) -> frozenset[str]: ...


def text_indexing_of(view: SegmentView) -> TextIndexing:
    """The full-text keys of ``view`` with their tokenizer options."""
    keys = view.text_index_keys()
    params: dict[str, TextIndexParams] = {}
    for key in keys:
        index = view.field_index(key)
        if index is not None and index.text_params is not None:
            params[key] = index.text_params
    return TextIndexing(keys=keys, params=params)


def evaluate_filter(filter: Filter, view: SegmentView) -> np.ndarray:
    """Boolean mask (length ``view.count``) of the rows satisfying ``filter``.

    Equal, row by row, to ``filters.matches(filter, view.payload(i),
    view.point_id(i), text_index_keys=..., text_index_params=...)`` with the
    view's text indexes, for every row ``i`` that is live. ``has_id`` is
    answered through ``view.offset_of`` (live rows only), so on a dead row
    whose id was rewritten elsewhere it may differ; callers AND the result
    with their live mask anyway.
    """
    assert isinstance(filter, Filter)
    count = view.count
    planner = _Planner(view, count, text_indexing_of(view))
    result = planner.filter_mask(filter, np.ones(count, dtype=bool))
    assert result.dtype == np.bool_
    assert result.shape == (count,)
    return result


class _Planner:
    """Evaluates one filter against one view; lives for one ``evaluate_filter`` call."""

    def __init__(self, view: SegmentView, count: int, indexing: TextIndexing) -> None:
        assert count >= 0
        self._view = view
        self._count = count
        self._indexing = indexing

    def filter_mask(self, filter: Filter, candidates: np.ndarray) -> np.ndarray:
        """Rows of ``candidates`` satisfying ``filter`` (False outside ``candidates``)."""
        result = candidates.copy()
        if filter.must is not None:
            result = self._all_mask(filter.must, result)
        if filter.must_not is not None:
            for condition in self._indexed_first(filter.must_not):
                if not result.any():
                    break
                result &= ~self._condition_mask(condition, result)
        if filter.should is not None and result.any():
            result &= self._any_mask(filter.should, result)
        if filter.min_should is not None and result.any():
            min_should = filter.min_should
            result &= self._at_least_mask(min_should.conditions, min_should.min_count, result)
        assert not np.any(result & ~candidates), "a filter only narrows its candidates"
        return result

    def _all_mask(self, conditions: Sequence[Condition], candidates: np.ndarray) -> np.ndarray:
        result = candidates.copy()
        unindexed: list[Condition] = []
        for condition in conditions:
            indexed = self._indexed_mask(condition)
            if indexed is None:
                unindexed.append(condition)
            else:
                result &= indexed
        for condition in unindexed:
            if not result.any():
                break
            result &= self._condition_mask(condition, result)
        return result

    def _any_mask(self, conditions: Sequence[Condition], candidates: np.ndarray) -> np.ndarray:
        """Rows of ``candidates`` satisfying at least one condition."""
        found = np.zeros(self._count, dtype=bool)
        undecided = candidates.copy()
        for condition in self._indexed_first(conditions):
            if not undecided.any():
                break
            hit = self._condition_mask(condition, undecided)
            found |= hit
            undecided &= ~hit
        return found & candidates

    def _at_least_mask(self, conditions: Sequence[Condition], min_count: int, candidates: np.ndarray) -> np.ndarray:
        """Rows of ``candidates`` satisfying at least ``min_count`` conditions."""
        assert min_count >= 1
        satisfied = np.zeros(self._count, dtype=np.int32)
        for condition in self._indexed_first(conditions):
            undecided = candidates & (satisfied < min_count)
            if not undecided.any():
                break
            satisfied += self._condition_mask(condition, undecided)
        return candidates & (satisfied >= min_count)

    def _indexed_first(self, conditions: Sequence[Condition]) -> list[Condition]:
        """Conditions answered by an index first: they are cheap and shrink the rest."""
        return sorted(conditions, key=lambda condition: not self._is_indexed(condition))

    def _is_indexed(self, condition: Condition) -> bool:
        if isinstance(condition, HasId):
            return True
        if isinstance(condition, (FieldMatch, NumberRange, DatetimeRange)):
            return self._view.field_index(condition.key) is not None
        return False

    def _indexed_mask(self, condition: Condition) -> np.ndarray | None:
        """A whole-view mask from an index or the id map, or None."""
        if isinstance(condition, HasId):
            return self._has_id_mask(condition)
        if isinstance(condition, (FieldMatch, NumberRange, DatetimeRange)):
            index = self._view.field_index(condition.key)
            if index is not None:
                return index.mask(condition, self._count)
        return None

    def _has_id_mask(self, condition: HasId) -> np.ndarray:
        result = np.zeros(self._count, dtype=bool)
        for point_id in condition.ids:
            offset = self._view.offset_of(point_id)
            if offset is not None:
                assert 0 <= offset < self._count, f"offset {offset} of {point_id!r} is outside the view"
                result[offset] = True
        return result

    def _condition_mask(self, condition: Condition, candidates: np.ndarray) -> np.ndarray:
        """Rows of ``candidates`` satisfying ``condition`` (False outside them)."""
        indexed = self._indexed_mask(condition)
        if indexed is not None:
            return indexed & candidates
        if isinstance(condition, Filter):
            return self.filter_mask(condition, candidates)
        assert not isinstance(condition, HasId), "has_id is always answered by the id map"
        result = np.zeros(self._count, dtype=bool)
        view = self._view
        indexing = self._indexing
        for offset in np.flatnonzero(candidates).tolist():
            # has_id never gets here, so the point id is not needed.
            result[offset] = check_condition(condition, view.payload(offset), None, indexing)
        return result
