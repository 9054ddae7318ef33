"""One gRPC channel per peer node, shared by every stub of a service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Generic, TypeVar

import grpc

from qcluster.errors import BrokenPeer, DeadlineExceeded, QclusterError, ShardUnavailable

__all__ = ["StubPool", "peer_error"]

Stub = TypeVar("Stub")

# gRPC's reconnect backoff (1 s growing to 120 s by default) would leave a
# channel to a peer that was down for a while waiting seconds after the peer
# is back, and calls made ``wait_for_ready`` waited out their deadline: after
# a restart, a replica's recovery failed its first try on every chaos round.
# Peers are few and on a LAN: try again every second at most.
_CHANNEL_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


class StubPool(Generic[Stub]):
    def __init__(self, make_stub: Callable[[grpc.aio.Channel], Stub], *,
                 addresses: Callable[[int], str | None]) -> None:
        self._make_stub = make_stub
        self._addresses = addresses
        self._stubs: dict[str, Stub] = {}
        self._channels: list[grpc.aio.Channel] = []

    def stub(self, node_id: int) -> Stub:
        """The stub for ``node_id``'s current address (a new channel the first time)."""
        address = self._addresses(node_id)
        if address is None:
            raise BrokenPeer(f"node {node_id} has no known address")
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
            self._channels.append(channel)
            stub = self._stubs[address] = self._make_stub(channel)
        return stub

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels.clear()
        self._stubs.clear()


def peer_error(node_id: int, error: grpc.aio.AioRpcError, *, deadline_s: float) -> QclusterError:
    """A failed internal call as qcluster's error: the deadline, a shard the
    peer does not hold (or could not serve: try another replica), or a broken peer."""
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"node {node_id} did not answer within {deadline_s} s")
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
        return ShardUnavailable(f"node {node_id}: {error.details()}")
    return BrokenPeer(f"node {node_id}: {code.name}: {error.details()}")
