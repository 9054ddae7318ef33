"""Exact top-k, recall@k and latency summaries (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

K = 10


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int, metric: str,
                candidates: np.ndarray | None = None, chunk: int = 64) -> np.ndarray:
    """Exact top-k ids (rows of ``base``) per query, optionally among ``candidates``
    (sorted row numbers); -1 pads when fewer than k rows exist. Cosine data is
    ranked by inner product (vectors are normalised), l2 by squared distance."""
    rows = np.arange(base.shape[0]) if candidates is None else candidates
    sub = base[rows]
    out = np.full((queries.shape[0], k), -1, dtype=np.int64)
    if sub.shape[0] == 0:
        return out
    take = min(k, sub.shape[0])
    sub_norms = (sub * sub).sum(axis=1) if metric == "l2" else None
    for start in range(0, queries.shape[0], chunk):
        block = queries[start:start + chunk]
        scores = block @ sub.T
        if metric == "l2":
            assert sub_norms is not None
            scores = 2.0 * scores - sub_norms[None, :]  # higher is better: -|x|^2 + 2 q.x
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
        out[start:start + block.shape[0], :take] = rows[np.take_along_axis(part, order, axis=1)]
    return out


def recall_at_k(found: Sequence[Any], truth: np.ndarray, k: int = K) -> float | None:
    """Mean |found[:k] ∩ truth[:k]| / min(k, |truth|) over the answered queries
    (``None`` entries are unanswered and skipped)."""
    total = 0.0
    answered = 0
    for ids, expected in zip(found, truth, strict=False):
        if ids is None:
            continue
        wanted = {int(x) for x in expected[:k] if x >= 0}
        if not wanted:
            continue
        got = {int(x) for x in list(ids)[:k]}
        total += len(got & wanted) / len(wanted)
        answered += 1
    return total / answered if answered else None


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    if len(latencies_ms) == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    values = np.asarray(latencies_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "mean_ms": float(values.mean())}


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) clock ticks of the whole machine so far, from the first
    line of /proc/stat; (0, 0) where there is none. Steal is the time the
    hypervisor ran someone else while this VM's vCPUs had work."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time stolen between two ``cpu_ticks``, in %."""
    total = after[1] - before[1]
    return 0.0 if total <= 0 else round(100.0 * (after[0] - before[0]) / total, 1)
