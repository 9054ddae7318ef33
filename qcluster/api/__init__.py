"""The public interfaces of a node: REST (``rest``), later gRPC.

Only this package knows HTTP and gRPC status codes; the one table that maps
``QclusterError`` classes to them is ``error_mapping``.
"""

__all__: list[str] = []
