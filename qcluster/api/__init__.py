"""The public interfaces of a node: REST (``rest``) and gRPC (``grpc``), sharing
the Qdrant data model (``schema``) and the per-call logic (``actions``).

Only this package knows HTTP and gRPC status codes; the one table that maps
``QclusterError`` classes to them is ``error_mapping``.
"""

__all__: list[str] = []
