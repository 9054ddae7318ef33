"""The public gRPC API: Qdrant's services (wire definitions from
qdrant-client's generated modules) and qcluster's own extensions."""

from qcluster.api.grpc.server import start_grpc_server

__all__ = ["start_grpc_server"]
