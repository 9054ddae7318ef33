"""The gRPC server of one node (grpc.aio, on the node's event loop)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import grpc

from qcluster.api.grpc.dense import add_dense_service
from qcluster.api.grpc.dispatch import Dispatcher
from qcluster.api.grpc.services import add_services
from qcluster.api.state import NodeState

__all__ = ["start_grpc_server"]

# Keepalive pings from clients are allowed down to this interval.
_MIN_PING_INTERVAL_MS: Final = 10_000


async def start_grpc_server(state: NodeState, *, host: str, port: int,
                            internal_services: Callable[[grpc.aio.Server], None] | None = None,
                            ) -> tuple[grpc.aio.Server, int]:
    """Start serving on ``host:port`` (0: any free port); returns the server
    and the bound port. Messages are bounded like REST bodies.
    ``internal_services`` registers cluster mode's node-to-node services
    (which check the cluster secret themselves) on the same server."""
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", state.body_bytes_max),
        ("grpc.max_send_message_length", state.body_bytes_max),
        ("grpc.http2.min_ping_interval_without_data_ms", _MIN_PING_INTERVAL_MS),
        ("grpc.so_reuseport", 0),
    ])
    dispatcher = Dispatcher(state)
    add_services(server, dispatcher)
    add_dense_service(server, dispatcher)
    if internal_services is not None:
        internal_services(server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # grpcio's "Failed to bind to address"
        raise OSError(f"cannot listen for gRPC on {host}:{port}: {exc}") from exc
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    await server.start()
    return server, bound
