"""Raw FAISS in-process: ``IndexHNSWFlat(M=16)``, efConstruction 100, inner
product on normalised vectors (or L2). The physical limit for a FAISS-based
server. Filters use ``IDSelectorBitmap`` through ``SearchParametersHNSW``.
OpenMP runs with every core for the build and for batches, and with one
thread for one-query calls (8 client threads each get one core's worth)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from bench.systems.base import System
from bench.workload import FilterSpec


class FaissHnsw(System):
    name = "faiss"

    def versions(self) -> dict[str, str]:
        return {"faiss-cpu": faiss.__version__}

    def ingest(self) -> dict[str, Any]:
        metric = faiss.METRIC_INNER_PRODUCT if self.dataset.metric == "cosine" else faiss.METRIC_L2
        started = time.perf_counter()
        base = self.dataset.base
        if self.dataset.metric == "cosine":
            base = base / np.linalg.norm(base, axis=1, keepdims=True)
        index = faiss.IndexHNSWFlat(self.dataset.dim, 16, metric)
        index.hnsw.efConstruction = 100
        index.add(np.ascontiguousarray(base, dtype=np.float32))
        elapsed = time.perf_counter() - started
        self.index: Any = index
        faiss.write_index(index, str(self.workdir / "hnsw.faiss"))  # only to report a size on disk
        self.notes.append("add() builds the graph, so acknowledged = indexed; disk = write_index size")
        return {"upload_s": elapsed, "indexed_s": elapsed}

    def native_filter(self, spec: FilterSpec | None) -> Any:
        if spec is None:
            return None
        mask = spec.mask(self.dataset.years, self.dataset.names)
        bits = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(mask.shape[0], faiss.swig_ptr(bits))
        return (selector, bits)  # keep the bitmap alive with the selector

    def _params(self, ef: int, flt: Any) -> Any:
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # SWIG, no stubs
        params.efSearch = ef
        if flt is not None:
            params.sel = flt[0]
        return params

    def search(self, query: np.ndarray, ef: int, flt: Any) -> Sequence[int]:
        _distances, ids = self.index.search(query[None, :], 10, params=self._params(ef, flt))
        return ids[0]

    def search_many(self, queries: np.ndarray, ef: int, flt: Any) -> list[Sequence[int]]:
        _distances, ids = self.index.search(np.ascontiguousarray(queries), 10, params=self._params(ef, flt))
        return list(ids)

    def run_load(self, *, mode: str, **kwargs: Any) -> Any:
        faiss.omp_set_num_threads(self._cores if mode == "batched" else 1)
        try:
            return super().run_load(mode=mode, **kwargs)
        finally:
            faiss.omp_set_num_threads(self._cores)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cores = faiss.omp_get_max_threads()


SYSTEM = FaissHnsw
