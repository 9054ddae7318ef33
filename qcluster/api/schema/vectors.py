"""Dense vectors from JSON to float32 matrices, column-wise and without
per-float Python loops on the success path.

One ``np.asarray`` converts a whole column (every row of one vector name);
the slow per-row inspection runs only to explain a failure precisely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from qcluster import limits
from qcluster.api.schema.parse import json_type
from qcluster.errors import InvalidRequest

__all__ = ["check_dense_matrix", "single_vector", "vector_matrix"]

RowPath = Callable[[int], str]


def _explain_row(row: Any, *, dim: int, path: str) -> str | None:
    """Why one raw vector is not ``dim`` finite numbers, or None if it looks fine."""
    if isinstance(row, dict):
        if "indices" in row or "values" in row:
            return f"{path}: sparse vectors are not supported by qcluster"
        return f"{path}: expected an array of numbers, got object"
    if not isinstance(row, list):
        return f"{path}: expected an array of numbers, got {json_type(row)}"
    if any(isinstance(item, list) for item in row):
        return f"{path}: multivectors are not supported by qcluster"
    for index, item in enumerate(row):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return f"{path}[{index}]: expected a number, got {json_type(item)}"
    if len(row) != dim:
        return f"{path}: expected {dim} dimensions, got {len(row)}"
    return None


def _raise_first_bad_row(rows: list[Any], *, dim: int, row_path: RowPath) -> None:
    for index, row in enumerate(rows):
        message = _explain_row(row, dim=dim, path=row_path(index))
        if message is not None:
            raise InvalidRequest(message)
    raise InvalidRequest(f"{row_path(0)}: vectors must be arrays of numbers representable as float32")


def _check_finite(matrix32: np.ndarray, *, row_path: RowPath) -> None:
    finite_rows = np.isfinite(matrix32).all(axis=1)
    if not bool(finite_rows.all()):
        first = int(np.argmin(finite_rows))
        raise InvalidRequest(
            f"{row_path(first)}: contains a non-finite value (NaN, infinity, or outside the float32 range)"
        )


def check_dense_matrix(matrix: np.ndarray, *, dim: int, rows: int, path: str) -> np.ndarray:
    """A float32 matrix that arrived as raw bytes (qcluster's dense gRPC
    extension): the same checks as ``vector_matrix`` with the same messages."""
    assert matrix.dtype == np.float32 and matrix.ndim == 2, (matrix.dtype, matrix.shape)
    if matrix.shape[0] != rows:
        raise InvalidRequest(f"{path}: has {matrix.shape[0]} vectors for {rows} ids")
    if matrix.shape[1] != dim:
        raise InvalidRequest(f"{path}: expected {dim} dimensions, got {matrix.shape[1]}")
    _check_finite(matrix, row_path=lambda index: f"{path}[{index}]")
    return np.ascontiguousarray(matrix)


def vector_matrix(rows: list[Any], *, dim: int, row_path: RowPath) -> np.ndarray:
    """A C-contiguous float32 matrix ``(len(rows), dim)`` of finite values.

    Raises InvalidRequest naming the first offending row, e.g.
    ``points[3].vector: expected 384 dimensions, got 3``.
    """
    assert 0 < dim <= limits.VECTOR_DIM_MAX, dim
    if not rows:
        return np.empty((0, dim), dtype=np.float32)
    try:
        matrix = np.asarray(rows)
    except (ValueError, TypeError, OverflowError):
        matrix = None
    if matrix is None or matrix.ndim != 2 or matrix.dtype.kind not in "iuf" or matrix.shape[1] != dim:
        _raise_first_bad_row(rows, dim=dim, row_path=row_path)
        raise AssertionError("unreachable: _raise_first_bad_row always raises")
    with np.errstate(over="ignore", invalid="ignore"):
        # Values beyond the float32 range become inf here and are rejected below.
        matrix32 = np.ascontiguousarray(matrix, dtype=np.float32)
    _check_finite(matrix32, row_path=row_path)
    assert matrix32.shape == (len(rows), dim)
    return matrix32


def single_vector(raw: Any, *, dim: int, path: str) -> np.ndarray:
    """One query vector as a float32 array of shape ``(dim,)``."""
    return vector_matrix([raw], dim=dim, row_path=lambda _index: path)[0]
