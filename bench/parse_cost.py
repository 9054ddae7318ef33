"""How much does request parsing cost: qdrant-client's pydantic models vs qcluster's parsers?

The issue asked whether validating requests with ``qdrant_client.http.models``
would beat hand-written parsing. This measures both on the two hot paths
(upsert of 1 000 points x 384-d with payloads; a filtered query) on real
dataset rows. Run: ``.venv/bin/python bench/parse_cost.py``.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import orjson
from qdrant_client.http import models

from qcluster.api.schema.parse_points import parse_upsert
from qcluster.api.schema.parse_query import parse_query
from qcluster.types import CollectionConfig, Distance, VectorParams

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "pypi-minilm-100k"
REPEATS = 20


def _best_ms(function, repeats: int = REPEATS) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return 1000 * min(timings)


def main() -> None:
    base = np.load(DATASET / "base.f16.npy")[:1000].astype(np.float32)
    with gzip.open(DATASET / "base.jsonl.gz", "rt") as handle:
        payloads = [json.loads(next(handle)) for _ in range(1000)]
    upsert = orjson.dumps(
        {"points": [{"id": i, "vector": base[i].tolist(), "payload": payloads[i]} for i in range(1000)]}
    )
    query = orjson.dumps(
        {"query": base[0].tolist(), "limit": 10, "with_payload": True,
         "filter": {"must": [{"key": "year", "range": {"gte": 2020}}]}}
    )
    config = CollectionConfig(vectors={"": VectorParams(size=384, distance=Distance.COSINE)})
    rows = [
        ("upsert 1000 x 384", "orjson.loads only", _best_ms(lambda: orjson.loads(upsert))),
        ("upsert 1000 x 384", "orjson + qcluster parse_upsert", _best_ms(lambda: parse_upsert(orjson.loads(upsert), config=config))),
        ("upsert 1000 x 384", "orjson + pydantic PointsList", _best_ms(lambda: models.PointsList.model_validate(orjson.loads(upsert)))),
        ("query 384-d + filter", "orjson + qcluster parse_query", _best_ms(lambda: parse_query(orjson.loads(query), config=config), 2000)),
        ("query 384-d + filter", "orjson + pydantic QueryRequest", _best_ms(lambda: models.QueryRequest.model_validate(orjson.loads(query)), 2000)),
    ]
    print(f"{'path':24} {'method':34} {'best of runs (ms)':>18}")
    for path, method, milliseconds in rows:
        print(f"{path:24} {method:34} {milliseconds:18.3f}")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
