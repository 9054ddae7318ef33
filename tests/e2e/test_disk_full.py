"""A full disk under a real node: writes are refused with a clear, retryable
507 while it lasts, and none acknowledged before, during or after it is lost
across kill -9 and restart.

The data directory is a small tmpfs of its own; a filler file eats the space
and is removed to give it back.
"""

from __future__ import annotations

import pathlib

import httpx
import numpy as np
import pytest

from qcluster.testing import tmpfs
from tests.e2e.conftest import Node

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(tmpfs.skip_reason() is not None, reason=str(tmpfs.skip_reason()))]

DIM = 32
BATCH = 50
BATCHES_MAX = 400


def _upsert(client: httpx.Client, first_id: int, rng: np.random.Generator) -> httpx.Response:
    vectors = rng.normal(size=(BATCH, DIM)).astype(np.float32).round(4)
    points = [{"id": first_id + n, "vector": vector.tolist(), "payload": {"n": first_id + n, "pad": "x" * 200}}
              for n, vector in enumerate(vectors)]
    return client.put("/collections/full/points", params={"wait": "true"}, json={"points": points})


def test_a_full_disk_refuses_writes_and_loses_none(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(7)
    with tmpfs.mounted_tmpfs(tmp_path / "disk", size_kib=48 * 1024) as disk:
        node = Node(data_dir=disk / "data", log_path=tmp_path / "node.log")
        node.start()
        try:
            with httpx.Client(base_url=node.url, timeout=30.0) as client:
                created = client.put("/collections/full", json={"vectors": {"size": DIM, "distance": "Dot"}})
                assert created.status_code == 200, created.text
                tmpfs.fill(disk / "filler", max_bytes=(48 - 6) * 1024 * 1024)
                acknowledged: set[int] = set()
                refusals: list[httpx.Response] = []
                acknowledged_after_space_back = 0
                for batch in range(BATCHES_MAX):
                    response = _upsert(client, batch * BATCH, rng)
                    if response.status_code == 200:
                        acknowledged.update(range(batch * BATCH, (batch + 1) * BATCH))
                        acknowledged_after_space_back += len(refusals) >= 5
                        if acknowledged_after_space_back == 20:
                            break
                    elif len(refusals) < 5:
                        refusals.append(response)
                        if len(refusals) == 5:
                            (disk / "filler").unlink()  # space comes back
                    else:
                        raise AssertionError(f"refused with space back: {response.text}")
                assert len(refusals) == 5, "the disk never filled"
                for refusal in refusals:
                    assert refusal.status_code == 507, refusal.text
                    assert "no space left" in refusal.json()["status"]["error"]
                assert acknowledged_after_space_back == 20, "writes did not resume once space was back"
                assert client.get("/").status_code == 200, "the node keeps serving"
            node.kill()
            node.start()
            with httpx.Client(base_url=node.url, timeout=30.0) as client:
                found: set[int] = set()
                offset = None
                for _ in range(1000):
                    body = {"limit": 1000, "with_payload": False, "with_vector": False}
                    if offset is not None:
                        body["offset"] = offset
                    page = client.post("/collections/full/points/scroll", json=body).json()["result"]
                    found.update(point["id"] for point in page["points"])
                    offset = page["next_page_offset"]
                    if offset is None:
                        break
            assert acknowledged <= found, f"{len(acknowledged - found)} acknowledged points lost"
        finally:
            node.kill()
