"""Checks an operation against a collection's configuration before anything is written.

Everything a request can get wrong about vectors is caught here, so a WAL
record is only ever written for an operation that applies cleanly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qcluster.engine import vector_index
from qcluster.errors import InvalidRequest
from qcluster.operations import PointsBatch
from qcluster.types import DEFAULT_VECTOR, CollectionConfig, Distance

__all__ = ["prepare_points", "vector_path"]


def vector_path(*, row: int, name: str) -> str:
    """The JSON path of one point's vector, as users wrote it."""
    if name == DEFAULT_VECTOR:
        return f"points[{row}].vector"
    return f"points[{row}].vector.{name}"


def _check_column(name: str, matrix: np.ndarray, present: np.ndarray | None, *, config: CollectionConfig) -> None:
    params = config.vector_params(name, path=vector_path(row=0, name=name).replace("[0]", "[*]"))
    if matrix.shape[1] != params.size:
        rows = np.arange(matrix.shape[0]) if present is None else np.flatnonzero(present)
        row = int(rows[0]) if rows.size else 0
        raise InvalidRequest(
            f"{vector_path(row=row, name=name)}: expected dimension {params.size}, got {matrix.shape[1]}"
        )
    finite = np.isfinite(matrix).all(axis=1)
    if present is not None:
        finite |= ~present
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InvalidRequest(f"{vector_path(row=row, name=name)}: values must be finite numbers (no NaN or inf)")


def _last_occurrences(ids: tuple[Any, ...]) -> list[int] | None:
    """Row numbers that keep the last occurrence of each id, or None when ids are unique."""
    if len(set(ids)) == len(ids):
        return None
    last = {point_id: row for row, point_id in enumerate(ids)}
    return sorted(last.values())


def prepare_points(batch: PointsBatch, *, config: CollectionConfig, is_upsert: bool) -> PointsBatch:
    """Validate vectors and return the batch as stored: Cosine rows normalised,
    duplicate ids collapsed to their last occurrence (Qdrant's "last wins")."""
    for name, matrix in batch.vectors.items():
        _check_column(name, matrix, batch.present[name], config=config)
    if is_upsert and not config.is_named_vectors:
        mask = batch.present.get(DEFAULT_VECTOR, np.zeros(len(batch.ids), dtype=bool))
        if mask is not None and not mask.all():
            row = int(np.flatnonzero(~mask)[0])
            raise InvalidRequest(f"points[{row}].vector: a vector is required for this collection")
    vectors = {}
    for name, matrix in batch.vectors.items():
        if config.vectors[name].distance == Distance.COSINE:
            matrix = vector_index.normalize_rows(matrix)
        vectors[name] = matrix
    keep = _last_occurrences(batch.ids)
    if keep is None:
        return PointsBatch(ids=batch.ids, vectors=vectors, present=dict(batch.present), payloads=batch.payloads)
    rows = np.asarray(keep, dtype=np.int64)
    return PointsBatch(
        ids=tuple(batch.ids[row] for row in keep),
        vectors={name: matrix[rows] for name, matrix in vectors.items()},
        present={name: None if mask is None else mask[rows] for name, mask in batch.present.items()},
        payloads=tuple(batch.payloads[row] for row in keep),
    )
