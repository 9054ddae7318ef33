"""qcluster over its own gRPC extension ``qcluster.proto.v1.DensePoints``
(proto/qcluster/proto/v1/dense.proto): vectors travel as raw float32 matrices.

The same server, collection, payload indexes and ``indexing_threshold``
sequence as bench/systems/qcluster.py (inherited); only the transport
differs: points go through the SDK's ``qcluster.client.Client.upload``
(1 000 points per ``Upsert``, ``wait=True``, ``UPLOAD_PARALLEL`` in flight),
searches through the separate-process grpc.aio client of bench/grpc_client.py.
"""

from __future__ import annotations

from typing import Any, Final

import grpc
from qcluster.client import Client

from bench.systems.qcluster import COLLECTION, Qcluster

# Upserts in flight during ingest. Measured with Client.upload on this
# harness's server (2 cores, client and server on one machine): parallel=2
# uploaded 5 000 pypi points at 55-62 k pts/s vs 23-57 k with 1, and 100 000
# at 76-126 k vs 53-72 k. With 2 in flight the server may apply two batches
# out of id order, which changes the HNSW graph slightly (see ORDER_NOTE).
UPLOAD_PARALLEL: Final = 2
ORDER_NOTE: Final = (
    f"upload parallel={UPLOAD_PARALLEL}: batches may be applied out of id order, so the HNSW graph (built in "
    "insertion order) can differ from the REST system's and recall at low ef can differ slightly "
    "(on --quick: 0.875 instead of 0.895 at ef 16 in some runs; the same as REST with parallel=1)")


class QclusterGrpc(Qcluster):
    name = "qcluster-grpc"
    load_client = "bench.grpc_client"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Built (imports included) before ingest's clock starts; its channel connects on the first Upsert.
        try:
            self.sdk = Client(self.url, grpc_port=self.grpc_port, timeout=600.0)
        except BaseException:
            super().close()  # the server is already running
            raise

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "grpcio": grpc.__version__}

    def close(self) -> None:
        try:
            self.sdk.close()
        finally:
            super().close()

    def _upload(self) -> dict[str, Any]:
        result = self.sdk.upload(COLLECTION, self.dataset.base, ids=range(self.dataset.n),
                                 payloads=self.dataset.payloads, batch_size=self.config.ingest_batch,
                                 parallel=UPLOAD_PARALLEL, wait=True)
        if UPLOAD_PARALLEL > 1:
            self.notes.append(ORDER_NOTE)
        if result.points != self.dataset.n:
            raise RuntimeError(f"upload wrote {result.points} of {self.dataset.n} points")
        return {"upload_parallel": UPLOAD_PARALLEL, "upload_batches": result.batches,
                "upload_retries": result.retries}

    def load_client_args(self) -> list[str]:
        return [f"127.0.0.1:{self.grpc_port}", COLLECTION]


SYSTEM = QclusterGrpc
