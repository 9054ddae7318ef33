"""Consensus: the ClusterState replicated by Raft (pysyncobj), bridged to asyncio.

The only package that imports pysyncobj. ``RaftNode`` is the whole interface:
``propose`` a command and await its committed ``Result``; read ``state()``;
``subscribe`` to changes; ask ``leader()`` / ``is_leader()`` (a hint, never a
lease). ``raft_node.py`` explains what pysyncobj does and how it is held.
"""

from qcluster.consensus.raft_node import RaftNode, RaftStatus
from qcluster.consensus.settings import RaftSettings
from qcluster.consensus.state_codec import decode_state, encode_state

__all__ = ["RaftNode", "RaftSettings", "RaftStatus", "decode_state", "encode_state"]
