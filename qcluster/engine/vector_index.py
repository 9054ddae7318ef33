"""Distances, exact scoring and FAISS HNSW indexes for one segment's vectors.

Scores follow Qdrant's conventions: Cosine and Dot return the inner product
(vectors of a Cosine collection are stored normalised), higher is better;
Euclid returns the Euclidean distance and Manhattan the L1 distance, lower is
better. Internally results are ranked by a *rank key* that is always "higher
is better" (the score, or minus the distance), so merging never needs to know
the metric.

Threading: FAISS releases the GIL during ``search`` and ``add``; an index is
immutable once built, so concurrent searches are safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import faiss
import numpy as np

from qcluster.types import Distance

__all__ = [
    "BuildCancelled",
    "TopK",
    "stored_vectors",
    "build_hnsw",
    "exact_top_k",
    "hnsw_top_k",
    "normalize_rows",
    "rank_keys_to_scores",
    "read_index",
    "write_index",
]

# Rows scored per block by the Manhattan path, which cannot use a matrix product.
_MANHATTAN_BLOCK_ROWS: Final = 4096
# Extra candidates re-scored exactly after the fast Euclid ranking, to absorb
# the rounding of the |q|^2 + |x|^2 - 2 q.x expansion.
_EUCLID_REFINE_EXTRA: Final = 16
# Rows added to an HNSW index between two cancellation checks (~3 s of work at 384-d on 2
# cores). Larger chunks build a better graph: FAISS inserts the upper-level nodes of a
# chunk first, and 4 096-row chunks measurably lowered recall on 1M points.
_BUILD_CHUNK_ROWS: Final = 32_768


@dataclass(frozen=True, slots=True)
class TopK:
    """The top hits of a batch of queries as matrices, so that callers work on
    whole batches instead of one small array per query.

    Row ``r`` has ``counts[r]`` hits: rank keys ``keys[r, :counts[r]]`` (higher
    is better, best first) at segment offsets ``offsets[r, :counts[r]]``; the
    rest of the row is padding (key -inf, offset -1). Iterating yields
    ``(keys, offsets)`` per row.
    """

    keys: np.ndarray  # (rows, k) float32
    offsets: np.ndarray  # (rows, k) int64
    counts: np.ndarray  # (rows,) int64

    @classmethod
    def empty(cls, rows: int) -> TopK:
        return cls(keys=np.empty((rows, 0), np.float32), offsets=np.empty((rows, 0), np.int64),
                   counts=np.zeros(rows, np.int64))

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> TopK:
        keys = np.full((len(rows), k), -np.inf, dtype=np.float32)
        offsets = np.full((len(rows), k), -1, dtype=np.int64)
        counts = np.zeros(len(rows), dtype=np.int64)
        for row, (row_keys, row_offsets) in enumerate(rows):
            found = row_keys.shape[0]
            assert found <= k and row_offsets.shape[0] == found
            keys[row, :found] = row_keys
            offsets[row, :found] = row_offsets
            counts[row] = found
        return cls(keys=keys, offsets=offsets, counts=counts)

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for row, found in enumerate(self.counts.tolist()):
            yield self.keys[row, :found], self.offsets[row, :found]


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    assert matrix.ndim == 2
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result = (matrix / norms).astype(np.float32, copy=False)
    assert result.shape == matrix.shape
    return result


def _metric(distance: Distance) -> int:
    match distance:
        case Distance.COSINE | Distance.DOT:
            return faiss.METRIC_INNER_PRODUCT
        case Distance.EUCLID:
            return faiss.METRIC_L2
        case Distance.MANHATTAN:
            return faiss.METRIC_L1


def rank_keys_to_scores(distance: Distance, keys: np.ndarray) -> np.ndarray:
    """Turn rank keys (higher is better) back into Qdrant scores."""
    if distance.higher_is_better:
        return keys
    return -keys


def _exact_rank_keys(distance: Distance, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Exact rank keys of ``rows`` against one query, computed directly."""
    match distance:
        case Distance.COSINE | Distance.DOT:
            return rows @ query
        case Distance.EUCLID:
            diff = rows - query
            return -np.sqrt(np.einsum("ij,ij->i", diff, diff))
        case Distance.MANHATTAN:
            keys = np.empty(rows.shape[0], dtype=np.float32)
            for start in range(0, rows.shape[0], _MANHATTAN_BLOCK_ROWS):
                block = rows[start : start + _MANHATTAN_BLOCK_ROWS]
                keys[start : start + block.shape[0]] = -np.abs(block - query).sum(axis=1)
            return keys


def _fast_rank_keys(distance: Distance, rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Rank keys for many queries at once; exact for IP, approximate for Euclid."""
    match distance:
        case Distance.COSINE | Distance.DOT:
            return queries @ rows.T
        case Distance.EUCLID:
            row_norms = np.einsum("ij,ij->i", rows, rows)
            query_norms = np.einsum("ij,ij->i", queries, queries)
            squared = query_norms[:, None] + row_norms[None, :] - 2.0 * (queries @ rows.T)
            return -squared
        case Distance.MANHATTAN:
            return np.stack([_exact_rank_keys(distance, rows, query) for query in queries])


def _top_indices(keys: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest keys, best first."""
    if k >= keys.shape[0]:
        return np.argsort(-keys, kind="stable")
    part = np.argpartition(-keys, k - 1)[:k]
    return part[np.argsort(-keys[part], kind="stable")]


def exact_top_k(
    *, distance: Distance, rows: np.ndarray, candidates: np.ndarray, queries: np.ndarray, k: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact top-k among ``candidates`` (row offsets) for each query;
    ``rows[i]`` is the vector of ``candidates[i]`` (``Segment.scan_candidates``).

    Returns, per query, (rank keys best first, offsets). Scores of Euclid and
    Manhattan are computed directly (not through the expansion), so they equal
    a plain numpy computation.
    """
    assert queries.ndim == 2 and k > 0
    assert candidates.ndim == 1 and rows.shape[0] == candidates.shape[0]
    if candidates.shape[0] == 0:
        return TopK.empty(queries.shape[0])
    fast = _fast_rank_keys(distance, rows, queries)
    results = []
    for query_index, query in enumerate(queries):
        if distance == Distance.EUCLID:
            shortlist = _top_indices(fast[query_index], k + _EUCLID_REFINE_EXTRA)
            keys = _exact_rank_keys(distance, rows[shortlist], query)
            order = _top_indices(keys, k)
            results.append((keys[order].astype(np.float32), candidates[shortlist[order]]))
        else:
            order = _top_indices(fast[query_index], k)
            results.append((fast[query_index][order].astype(np.float32), candidates[order]))
    return TopK.from_rows(results, k)


class BuildCancelled(Exception):
    """An index build was asked to stop (shutdown, or the collection was deleted)."""


def build_hnsw(
    *,
    distance: Distance,
    parts: Sequence[np.ndarray],
    m: int,
    ef_construct: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> faiss.Index:
    """An HNSW index over the rows of ``parts`` in order (the i-th row overall gets label i).

    Taking the parts separately avoids concatenating them first: FAISS copies
    the rows into its own storage anyway. Rows are added in chunks (FAISS
    parallelises each chunk with OpenMP), and ``should_stop`` is asked between
    chunks, so a shutdown never waits for a whole build. Raises BuildCancelled
    when it answers True.
    """
    assert parts and m > 0
    index = faiss.IndexHNSWFlat(int(parts[0].shape[1]), int(m), _metric(distance))
    index.hnsw.efConstruction = int(ef_construct)
    _add_in_chunks(index, parts, should_stop)
    return index


def extend_hnsw(index: faiss.Index, *, parts: Sequence[np.ndarray], should_stop: Callable[[], bool]) -> faiss.Index:
    """A copy of ``index`` with the rows of ``parts`` added after its own (the
    i-th new row gets label ``index.ntotal + i``), in chunks as ``build_hnsw``.

    FAISS inserts into an HNSW graph one row at a time either way, so the
    graph is the one a build over all the rows in that order would give; the
    rows already in ``index`` are not inserted again. ``index`` itself is not
    changed (readers keep searching it meanwhile).
    """
    extended = faiss.clone_index(index)
    _add_in_chunks(extended, parts, should_stop)
    return extended


def _add_in_chunks(index: faiss.Index, parts: Sequence[np.ndarray], should_stop: Callable[[], bool]) -> None:
    """Add the rows of ``parts`` in order, ``_BUILD_CHUNK_ROWS`` at a time,
    asking ``should_stop`` before each chunk (BuildCancelled when it answers True)."""
    total = int(index.ntotal)
    for matrix in parts:
        assert matrix.dtype == np.float32 and matrix.ndim == 2 and matrix.shape[1] == index.d
        for start in range(0, matrix.shape[0], _BUILD_CHUNK_ROWS):
            if should_stop():
                raise BuildCancelled("index build cancelled")
            index.add(np.ascontiguousarray(matrix[start : start + _BUILD_CHUNK_ROWS]))
        total += matrix.shape[0]
    assert index.ntotal == total


def hnsw_top_k(
    *,
    distance: Distance,
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    ef: int,
    allowed: np.ndarray | None,
) -> TopK:
    """Approximate top-k through HNSW; ``allowed`` is a bool mask over labels or None."""
    assert k > 0 and ef > 0
    params = faiss.SearchParametersHNSW()
    params.efSearch = int(max(ef, k))
    # The selector points into ``bits`` and SWIG keeps no reference to either:
    # both locals must outlive the search call.
    bits = None
    selector = None
    if allowed is not None:
        assert allowed.shape[0] == index.ntotal
        bits = np.packbits(allowed, bitorder="little")
        selector = faiss.IDSelectorBitmap(int(allowed.shape[0]), faiss.swig_ptr(bits))
        params.sel = selector
    distances, labels = index.search(np.ascontiguousarray(queries, dtype=np.float32), int(k), params=params)
    del selector, bits
    match distance:
        case Distance.COSINE | Distance.DOT:
            keys = distances
        case Distance.EUCLID:
            keys = -np.sqrt(np.maximum(distances, 0.0))
        case Distance.MANHATTAN:
            keys = -distances
    found = labels >= 0
    if not found.all():
        # FAISS pads a row that has fewer than k hits with label -1 (at its end:
        # results come sorted); put the padding at the end of every row anyway.
        order = np.argsort(~found, axis=1, kind="stable")
        labels = np.take_along_axis(labels, order, axis=1)
        keys = np.take_along_axis(keys, order, axis=1)
        found = labels >= 0
        keys = np.where(found, keys, -np.inf)
    return TopK(keys=keys.astype(np.float32, copy=False), offsets=labels.astype(np.int64, copy=False),
                counts=found.sum(axis=1))


def stored_vectors(index: faiss.Index) -> np.ndarray:
    """The vectors an HNSW-Flat index stores, as a read-only numpy view (no copy).

    An indexed column keeps its vectors only here, not twice. The view is
    valid while ``index`` lives: the segment holds both.
    """
    rows, dim = int(index.ntotal), int(index.d)
    if rows == 0:
        return np.zeros((0, dim), dtype=np.float32)
    storage = faiss.downcast_index(index.storage)
    view = faiss.rev_swig_ptr(storage.get_xb(), rows * dim).reshape(rows, dim)
    view.flags.writeable = False
    assert view.dtype == np.float32
    return view


def write_index(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def read_index(path: Path, *, mmap: bool) -> faiss.Index:
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    return faiss.read_index(str(path), flags)
