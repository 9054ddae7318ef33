"""One module per system; imported lazily so a peer that is not installed only
fails its own worker."""

from __future__ import annotations

import importlib
from typing import Final

from bench.systems.base import System

MODULES: Final = {
    "faiss": "bench.systems.faiss_hnsw",
    "qcluster": "bench.systems.qcluster",
    "qcluster-grpc": "bench.systems.qcluster_grpc",
    "qcluster-cluster": "bench.systems.qcluster_cluster",
    "qdrant-local": "bench.systems.qdrant_local",
    "chromadb": "bench.systems.chroma",
    "milvus-lite": "bench.systems.milvus_lite",
    "lancedb": "bench.systems.lance",
}
ALL: Final = tuple(MODULES)


def system_class(name: str) -> type[System]:
    module = importlib.import_module(MODULES[name])
    cls: type[System] = module.SYSTEM
    return cls
