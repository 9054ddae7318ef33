"""Consensus: the ClusterState replicated by Raft (pysyncobj), bridged to asyncio.

The only package that imports pysyncobj. ``RaftNode`` is the interface to the group:
``propose`` a command and await its committed ``Result``; read ``state()``;
``subscribe`` to changes; ask ``leader()`` / ``is_leader()`` (a hint, never a
lease). ``raft_node.py`` explains what pysyncobj does and how it is held.
A node that was not in the initial peer list joins through a member
(``join.py``: ``discover_members``, then ``RaftNode.start``, then
``request_membership``).
"""

from qcluster.consensus.join import ClusterMembers, JoinSettings, discover_members, request_membership
from qcluster.consensus.raft_node import RaftNode, RaftStatus
from qcluster.consensus.settings import RaftSettings
from qcluster.consensus.state_codec import decode_state, encode_state

__all__ = [
    "ClusterMembers",
    "JoinSettings",
    "RaftNode",
    "RaftSettings",
    "RaftStatus",
    "decode_state",
    "discover_members",
    "encode_state",
    "request_membership",
]
