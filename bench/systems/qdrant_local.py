"""qdrant-client's local mode, ``QdrantClient(path=...)``: a pure-Python
embedded store with NO index — every search is brute force over numpy, and
``hnsw_ef`` / ``hnsw_config`` are accepted and ignored. Shown as the
"Qdrant API without a server" baseline."""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from bench.systems.base import System
from bench.workload import FilterSpec

COLLECTION = "bench"


class QdrantLocal(System):
    name = "qdrant-local"
    sweeps = False
    max_points = 200_000
    max_points_reason = ("brute force in pure Python; qdrant-client itself warns above 20 000 points in "
                         "local mode, and 1M points would take most of an hour to upload")
    # Measured on 100k points: a 1 000-name match-any took 16 s per query.
    filter_names_max = 1_000
    is_thread_safe = False
    unsafe_reason = ("local mode is not thread-safe: 8 threads sharing one client returned corrupted "
                     "answers (overflow warnings, recall 0.11 on 100k points), so no concurrent figure")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = self.workdir / "qdrant-local"
        self.client = QdrantClient(path=str(self.path))

    def versions(self) -> dict[str, str]:
        return {"qdrant-client": version("qdrant-client")}

    def data_path(self) -> Any:
        return self.path

    def close(self) -> None:
        self.client.close()

    def ingest(self) -> dict[str, Any]:
        distance = models.Distance.COSINE if self.dataset.metric == "cosine" else models.Distance.EUCLID
        self.client.create_collection(
            COLLECTION, vectors_config=models.VectorParams(size=self.dataset.dim, distance=distance),
            hnsw_config=models.HnswConfigDiff(m=16, ef_construct=100))
        self.client.create_payload_index(COLLECTION, "year", models.PayloadSchemaType.INTEGER)
        self.client.create_payload_index(COLLECTION, "name", models.PayloadSchemaType.KEYWORD)
        started = time.perf_counter()
        for start, stop in self.batches():
            self.client.upsert(COLLECTION, points=models.Batch(
                ids=list(range(start, stop)), vectors=self.dataset.base[start:stop].tolist(),
                payloads=self.dataset.payloads[start:stop]), wait=True)
        elapsed = time.perf_counter() - started
        self.notes.append("local mode: no index, brute-force search; payload indexes are no-ops")
        return {"upload_s": elapsed, "indexed_s": elapsed}

    def native_filter(self, spec: FilterSpec | None) -> Any:
        if spec is None:
            return None
        if spec.kind == "year_range":
            condition = models.FieldCondition(key="year", range=models.Range(gte=spec.gte, lte=spec.lte))
        else:
            condition = models.FieldCondition(key="name", match=models.MatchAny(any=list(spec.names)))
        return models.Filter(must=[condition])

    def search(self, query: np.ndarray, ef: int, flt: Any) -> Sequence[int]:
        answer = self.client.query_points(COLLECTION, query=query.tolist(), limit=10, query_filter=flt,
                                          search_params=models.SearchParams(hnsw_ef=ef))
        return [int(point.id) for point in answer.points]

    def search_many(self, queries: np.ndarray, ef: int, flt: Any) -> list[Sequence[int]]:
        requests = [models.QueryRequest(query=query.tolist(), limit=10, filter=flt,
                                        params=models.SearchParams(hnsw_ef=ef)) for query in queries]
        answers = self.client.query_batch_points(COLLECTION, requests=requests)
        return [[int(point.id) for point in answer.points] for answer in answers]


SYSTEM = QdrantLocal
