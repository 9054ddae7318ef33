"""Per segment and query: exact scan of candidates, filtered HNSW, or plain HNSW.

The filter is evaluated to an exact boolean mask from the payload indexes
(unindexed conditions fall back to reading payloads), so the planner knows
the true number of candidates rather than an estimate:

- no HNSW index on the segment (appendable or small), or ``exact``: score
  every candidate exactly;
- a filter leaves fewer candidates than ``full_scan_threshold`` (kilobytes of
  vectors, Qdrant's unit): score them exactly — this is both faster and exact;
- a filter seen before on this segment version whose candidates' vectors are
  (or may be) kept side by side in the scan cache (``scan_cache``), and
  scanning them costs less than the filtered HNSW search would: score them
  exactly, from the cached copy;
- otherwise HNSW with the candidate mask as an ID selector. A selective mask
  raises ``ef`` in proportion to the share it removes, so filtered recall
  stays that of unfiltered search.
"""

from __future__ import annotations

import enum
from typing import Final

import numpy as np

from qcluster.engine import scan_cache, vector_index
from qcluster.engine.filters import Filter
from qcluster.engine.segment import Segment
from qcluster.limits import HNSW_EF_MAX
from qcluster.types import Distance, HnswConfig, SearchParams

__all__ = ["Plan", "choose_plan", "filtered_ef_boost", "search_segment"]

_KILOBYTE: Final = 1024
# A filtered HNSW search multiplies ef by (rows / candidates) ** _BOOST_EXPONENT,
# at most _BOOST_MAX. Measured on pypi-minilm-100k (M=16, efConstruction 100,
# ef 64, all 1 000 queries; three builds gave the same recalls): unfiltered
# recall@10 is 0.954; with a filter, 0.95 needs ef x1.25 at 50 % selectivity
# (x1.5: 0.957), x3 at 10 % of names (0.956) but x5.5 at 10 % by year
# (2013-2018: x5 0.946, x6 0.956) - a year range is correlated with the
# vectors, so its neighbours lie further away in the graph. ^0.8 gives x6.2 at
# 10 % and x1.7 at 50 %. Below full_scan_threshold the exact path takes over.
_BOOST_EXPONENT: Final = 0.8
_BOOST_MAX: Final = 10.0
# A filtered HNSW search at ef costs about as much as an exact scan of
# 2 * ef * m contiguous candidate rows. Measured on pypi-minilm-100k (384-d,
# M 16, one query, one thread as the node runs BLAS): filtered HNSW takes
# 3.4-3.8 us per unit of ef at 5-50 % selectivity (ef 403 at 10 %: 1.36 ms);
# a BLAS scan of a contiguous copy takes 0.078 us per row while the copy is
# in the CPU cache and 0.154 us after the cache was flushed (10 000 rows:
# 0.78 / 1.54 ms): 46 / 23 rows per unit of ef at m 16, ~32 between the two.
# So a 10 % filter (ef 64 boosted to 403: up to 12 900 rows) is scanned and
# a 20 % one (ef 231: 7 400 rows < 20 000) goes through HNSW. A batch of
# queries scans the copy once (64 queries over 10 000 rows: 0.125 ms each).
_SCAN_ROWS_PER_EF_AND_M: Final = 2


def filtered_ef_boost(*, rows: int, candidates: int) -> float:
    """How much to raise ef when only ``candidates`` of ``rows`` may be returned."""
    assert 0 < candidates <= rows
    return min(_BOOST_MAX, (rows / candidates) ** _BOOST_EXPONENT)


class Plan(enum.StrEnum):
    SKIP = "skip"  # nothing to search (no candidates, or indexed_only on a large plain segment)
    EXACT = "exact"
    HNSW = "hnsw"
    HNSW_FILTERED = "hnsw_filtered"


def _full_scan_rows(hnsw: HnswConfig, dim: int) -> int:
    return max(1, hnsw.full_scan_threshold * _KILOBYTE // (dim * 4))


def _filtered_ef(*, segment: Segment, candidates: int, params: SearchParams, hnsw: HnswConfig) -> int:
    ef = params.hnsw_ef if params.hnsw_ef is not None else hnsw.ef_construct
    return min(HNSW_EF_MAX, int(ef * filtered_ef_boost(rows=segment.count, candidates=candidates)))


def choose_plan(
    *, segment: Segment, name: str, candidates: int, is_filtered: bool, params: SearchParams, hnsw: HnswConfig,
    scan_ready: bool = False,
) -> Plan:
    """Pure decision, from the candidate count; see the module docstring.
    ``scan_ready``: the filter's candidate rows are in the scan cache or may be put there."""
    assert candidates >= 0
    if candidates == 0:
        return Plan.SKIP
    full_scan_rows = _full_scan_rows(hnsw, segment.vectors[name].dim)
    if name not in segment.hnsw:
        if params.indexed_only and segment.count > full_scan_rows and not params.exact:
            return Plan.SKIP
        return Plan.EXACT
    if params.exact:
        return Plan.EXACT
    if is_filtered and candidates < full_scan_rows:
        return Plan.EXACT
    if candidates < segment.count:
        if is_filtered and scan_ready:
            ef = _filtered_ef(segment=segment, candidates=candidates, params=params, hnsw=hnsw)
            if candidates <= _SCAN_ROWS_PER_EF_AND_M * ef * hnsw.m:
                return Plan.EXACT
        return Plan.HNSW_FILTERED
    return Plan.HNSW


def search_segment(
    *,
    segment: Segment,
    name: str,
    distance: Distance,
    queries: np.ndarray,
    k: int,
    filter: Filter | None,
    params: SearchParams,
    hnsw: HnswConfig,
) -> vector_index.TopK:
    """Top-k rows of one segment for each query (queries already normalised for Cosine)."""
    assert queries.ndim == 2 and k > 0
    repeated = False
    if filter is None:
        allowed, candidates = segment.searchable(name)
    else:
        allowed, candidates, repeated = segment.searchable_filtered(name, filter)
    # The candidates' rows are worth keeping side by side once the filter repeats.
    scan_ready = repeated and scan_cache.fits(candidates * segment.vectors[name].dim * 4)
    plan = choose_plan(
        segment=segment, name=name, candidates=candidates, is_filtered=filter is not None, params=params, hnsw=hnsw,
        scan_ready=scan_ready,
    )
    match plan:
        case Plan.SKIP:
            return vector_index.TopK.empty(queries.shape[0])
        case Plan.EXACT:
            offsets, rows = segment.scan_candidates(name, filter, allowed, keep=scan_ready)
            return vector_index.exact_top_k(distance=distance, rows=rows, candidates=offsets, queries=queries, k=k)
        case Plan.HNSW | Plan.HNSW_FILTERED:
            if plan == Plan.HNSW:
                ef = params.hnsw_ef if params.hnsw_ef is not None else hnsw.ef_construct
            else:
                ef = _filtered_ef(segment=segment, candidates=candidates, params=params, hnsw=hnsw)
            return vector_index.hnsw_top_k(
                distance=distance,
                index=segment.hnsw[name],
                queries=queries,
                k=k,
                ef=ef,
                allowed=None if plan == Plan.HNSW else allowed,
            )
