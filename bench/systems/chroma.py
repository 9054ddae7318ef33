"""ChromaDB embedded (``PersistentClient``): its HNSW (hnswlib) with
``max_neighbors`` 16, ``ef_construction`` 100; ``ef_search`` is a collection
setting, changed with ``collection.modify`` (and a reopen of the client, see
``set_knob``) before each sweep point."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import chromadb
import numpy as np
from chromadb.api.client import SharedSystemClient

from bench.systems.base import System
from bench.workload import FilterSpec

COLLECTION = "bench"


class Chroma(System):
    name = "chromadb"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = self.workdir / "chroma"
        self.client = chromadb.PersistentClient(path=str(self.path))
        self.ef: int | None = None

    def versions(self) -> dict[str, str]:
        return {"chromadb": chromadb.__version__}

    def data_path(self) -> Any:
        return self.path

    def ingest(self) -> dict[str, Any]:
        space = "cosine" if self.dataset.metric == "cosine" else "l2"
        self.ef = self.config.default_ef
        self.collection = self.client.create_collection(
            COLLECTION, embedding_function=None,
            configuration={"hnsw": {"space": space, "max_neighbors": 16,  # type: ignore[arg-type, typeddict-item]
                                    "ef_construction": 100, "ef_search": self.ef}})
        metadatas = [{key: value for key, value in row.items() if value is not None and key != "id"}
                     for row in self.dataset.payloads]
        ids = [str(i) for i in range(self.dataset.n)]
        started = time.perf_counter()
        for start, stop in self.batches():
            self.collection.add(ids=ids[start:stop], embeddings=self.dataset.base[start:stop],
                                metadatas=metadatas[start:stop])  # type: ignore[arg-type]
        uploaded = time.perf_counter()
        self.collection.query(query_embeddings=self.dataset.queries[:1], n_results=10, include=[])
        indexed = time.perf_counter()
        self.notes.append("add() indexes synchronously; 'indexed after' includes one first query; "
                          "metadata keys with null values are dropped (chroma rejects None)")
        return {"upload_s": uploaded - started, "indexed_s": indexed - started}

    def set_knob(self, value: int) -> None:
        """``modify`` stores the new ef_search, but the HNSW index already loaded
        keeps the old one (checked with chromadb 1.5.9): reopen the client."""
        if value != self.ef:
            self.collection.modify(configuration={"hnsw": {"ef_search": value}})
            SharedSystemClient.clear_system_cache()
            self.client = chromadb.PersistentClient(path=str(self.path))
            self.collection = self.client.get_collection(COLLECTION, embedding_function=None)
            self.collection.query(query_embeddings=self.dataset.queries[:1], n_results=10, include=[])
            self.ef = value

    def native_filter(self, spec: FilterSpec | None) -> Any:
        if spec is None:
            return None
        if spec.kind == "name_any":
            return {"name": {"$in": list(spec.names)}}
        parts = []
        if spec.gte is not None:
            parts.append({"year": {"$gte": spec.gte}})
        if spec.lte is not None:
            parts.append({"year": {"$lte": spec.lte}})
        return parts[0] if len(parts) == 1 else {"$and": parts}

    def search(self, query: np.ndarray, ef: int, flt: Any) -> Sequence[int]:
        return self.search_many(query[None, :], ef, flt)[0]

    def search_many(self, queries: np.ndarray, ef: int, flt: Any) -> list[Sequence[int]]:
        answer = self.collection.query(query_embeddings=queries, n_results=10, where=flt, include=[])
        return [[int(i) for i in ids] for ids in answer["ids"]]


SYSTEM = Chroma
