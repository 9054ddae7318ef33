"""Milvus Lite (``pymilvus.MilvusClient("<dir>/milvus.db")``, which runs a
local milvus-lite server process): HNSW M 16, efConstruction 100, created
after the upload (then ``load_collection``); ``ef`` per search."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

from bench.systems.base import System
from bench.workload import FilterSpec

COLLECTION = "bench"


class MilvusLite(System):
    name = "milvus-lite"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = self.workdir / "milvus"
        self.path.mkdir(parents=True, exist_ok=True)
        self.client = MilvusClient(str(self.path / "milvus.db"))
        self.metric = "COSINE" if self.dataset.metric == "cosine" else "L2"

    def versions(self) -> dict[str, str]:
        return {"pymilvus": version("pymilvus"), "milvus-lite": version("milvus-lite")}

    def data_path(self) -> Any:
        return self.path

    def close(self) -> None:
        self.client.close()

    def ingest(self) -> dict[str, Any]:
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dataset.dim)
        schema.add_field("year", DataType.INT64)
        schema.add_field("name", DataType.VARCHAR, max_length=1024)
        self.client.create_collection(COLLECTION, schema=schema)
        rows = [{**{key: value for key, value in payload.items() if value is not None},
                 "id": i, "vector": self.dataset.base[i]} for i, payload in enumerate(self.dataset.payloads)]
        started = time.perf_counter()
        for start, stop in self.batches():
            self.client.insert(COLLECTION, rows[start:stop])
        uploaded = time.perf_counter()
        self.client.flush(COLLECTION)
        params = self.client.prepare_index_params()
        params.add_index(field_name="vector", index_type="HNSW", metric_type=self.metric,
                         params={"M": 16, "efConstruction": 100})
        params.add_index(field_name="year", index_type="INVERTED")
        params.add_index(field_name="name", index_type="INVERTED")
        self.client.create_index(COLLECTION, params)
        self.client.load_collection(COLLECTION)
        indexed = time.perf_counter()
        described = self.client.describe_index(COLLECTION, "vector")
        self.notes.append(f"vector index as described by the server: {described.get('index_type')} "
                          f"{described.get('indexed_rows')}/{described.get('total_rows')} rows; "
                          "index s = flush + create_index + load_collection")
        return {"upload_s": uploaded - started, "indexed_s": indexed - started}

    def native_filter(self, spec: FilterSpec | None) -> Any:
        if spec is None:
            return None
        if spec.kind == "name_any":
            # milvus-lite rejects filter templating ("name in {names}"): a literal list
            return ("name in " + json.dumps(list(spec.names)), {})
        parts = []
        if spec.gte is not None:
            parts.append(f"year >= {spec.gte}")
        if spec.lte is not None:
            parts.append(f"year <= {spec.lte}")
        return (" and ".join(parts), {})

    def search(self, query: np.ndarray, ef: int, flt: Any) -> Sequence[int]:
        return self.search_many(query[None, :], ef, flt)[0]

    def search_many(self, queries: np.ndarray, ef: int, flt: Any) -> list[Sequence[int]]:
        extra: dict[str, Any] = {}
        if flt is not None:
            extra = {"filter": flt[0]}
        answer = self.client.search(COLLECTION, data=list(queries), limit=10, output_fields=["id"],
                                    search_params={"metric_type": self.metric, "params": {"ef": max(ef, 10)}},
                                    **extra)
        return [[int(hit["id"]) for hit in hits] for hits in answer]


SYSTEM = MilvusLite
