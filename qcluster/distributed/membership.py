"""``replication.Membership`` over the cluster state and Raft."""

from __future__ import annotations

from qcluster.cluster.commands import RemoveFromInSync
from qcluster.cluster.state import ResultCode
from qcluster.distributed.proposer import Proposer, new_request_id
from qcluster.replication.messages import ShardKey, ShardView

__all__ = ["ClusterMembership"]


class ClusterMembership:
    def __init__(self, proposer: Proposer) -> None:
        self._proposer = proposer

    def view(self, shard: ShardKey) -> ShardView | None:
        state = self._proposer.state()
        found = state.shard(shard.collection, shard.shard_id)
        if found is None:
            return None
        return ShardView(primary=found.primary, primary_term=found.primary_term, in_sync=found.in_sync,
                         write_consistency_factor=state.collections[shard.collection].write_consistency_factor)

    async def fence(self, shard: ShardKey, node_id: int, *, primary_term: int) -> bool:
        result = await self._proposer.propose(RemoveFromInSync(
            request_id=new_request_id("fence"), collection=shard.collection, shard_id=shard.shard_id,
            node_id=node_id, expected_primary_term=primary_term))
        if result.code is ResultCode.OK:
            return True
        if result.code is ResultCode.ILLEGAL_TRANSITION:
            # Not ACTIVE any more: it is out of the in-sync set already.
            found = self._proposer.state().shard(shard.collection, shard.shard_id)
            return found is not None and node_id not in found.in_sync
        return False
