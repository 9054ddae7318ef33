"""qcluster's Python SDK, for applications that start with numpy.

    from qcluster.client import Client
    with Client("http://localhost:6333") as client:
        client.upload("docs", vectors, payloads=payloads, progress=True)
        hits = client.query("docs", queries, limit=10)   # hits.ids, hits.scores: (n, 10) arrays

Bulk upload and query use qcluster's dense gRPC extension (raw float32);
everything else is ``client.qdrant``, a ``qdrant_client.QdrantClient`` on
the same node. Errors are qcluster's (``qcluster.errors``): the server's gRPC
status mapped back onto the same tree.
"""

from qcluster.client._dense import QueryResult, UploadResult
from qcluster.client.aio import AsyncClient
from qcluster.client.sync import Client

__all__ = ["AsyncClient", "Client", "QueryResult", "UploadResult"]
