"""What a Raft node needs to know: its identity, its peers, its secret, its
directory, and every timing pysyncobj uses — passed to pysyncobj explicitly,
never left to its defaults, which were measured to be wrong for us
(design.md §7: a 5 s connection retry delays elections; a 30 s leader
fallback lets an isolated leader believe it leads for 30 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from qcluster.cluster.state import NodeId
from qcluster.config import ConfigError
from qcluster.types import UINT64_MAX

__all__ = ["RaftSettings", "parse_address"]

_PORT_MAX: Final = 65_535


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftSettings:
    """One Raft member's settings. Node identity is ``node_id``; pysyncobj
    knows members only by ``p2p_address``, so a node restarted with the same
    id and data dir must keep its p2p address (the ClusterState's ``AddNode``
    records the id -> address mapping the other layers use)."""

    node_id: NodeId
    # host:port this member is known by to its peers, and binds (bindAddress):
    # the cluster-internal interface only, never a wildcard by accident.
    p2p_address: str
    # The other members of the static initial cluster (or, for a node that
    # joins, the current members). Empty for a cluster of one.
    peer_addresses: tuple[str, ...]
    # pysyncobj's password: every message is encrypted and authenticated with
    # it. Required always: pysyncobj unpickles whatever reaches its port
    # before authenticating it unless a password is set, so an open Raft port
    # runs a stranger's code — in a one-member cluster too.
    cluster_secret: str
    # The journal and the full dump live in data_dir/raft/.
    data_dir: Path
    # A follower that hears no leader for a random time in this range starts
    # an election (pysyncobj's raftMinTimeout / raftMaxTimeout).
    election_timeout_min_s: float = 0.4
    election_timeout_max_s: float = 1.4
    # The leader's heartbeat (appendEntriesPeriod); below a third of the minimum election timeout.
    heartbeat_period_s: float = 0.1
    # A connection silent this long is dropped; at least the maximum election timeout.
    connection_timeout_s: float = 3.5
    # Pause between reconnection attempts to a peer (pysyncobj's default of 5 s
    # delays the first election by ~5 s when nodes start apart).
    connection_retry_s: float = 0.5
    # A leader that hears from no majority for this long steps down. It is
    # NOT a lease: for up to this long two nodes may both believe they lead.
    leader_fallback_timeout_s: float = 3.0
    # Compact the log (write the full dump, drop older entries) past this many
    # entries, or after this long with new entries.
    log_compaction_min_entries: int = 5_000
    log_compaction_min_interval_s: float = 300.0
    # Binding the port is retried this many times, this far apart, then start fails.
    bind_attempts_max: int = 10
    bind_retry_s: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.node_id <= UINT64_MAX:
            raise ConfigError(f"raft: node id {self.node_id} is not an unsigned 64-bit integer")
        if not self.cluster_secret:
            raise ConfigError("raft: a cluster secret is required (pysyncobj unpickles unauthenticated bytes)")
        parse_address(self.p2p_address)
        for peer in self.peer_addresses:
            parse_address(peer)
        if self.p2p_address in self.peer_addresses:
            raise ConfigError(f"raft: {self.p2p_address} is this node's own address, not a peer")
        if len(set(self.peer_addresses)) != len(self.peer_addresses):
            raise ConfigError(f"raft: peer addresses repeat: {list(self.peer_addresses)}")
        self._check_timings()

    def _check_timings(self) -> None:
        # pysyncobj asserts the same relationships (SyncObjConf.validate); a
        # ConfigError names the setting instead of an AssertionError deep in it.
        if not 0 < self.heartbeat_period_s * 3 < self.election_timeout_min_s < self.election_timeout_max_s:
            raise ConfigError(
                "raft: need 0 < 3 × heartbeat_period_s < election_timeout_min_s < election_timeout_max_s"
            )
        if self.connection_timeout_s < self.election_timeout_max_s:
            raise ConfigError("raft: connection_timeout_s must be at least election_timeout_max_s")
        if self.leader_fallback_timeout_s <= self.heartbeat_period_s:
            raise ConfigError("raft: leader_fallback_timeout_s must exceed heartbeat_period_s")
        if self.connection_retry_s < 0 or self.bind_retry_s <= 0 or self.bind_attempts_max < 1:
            raise ConfigError("raft: connection_retry_s >= 0, bind_retry_s > 0 and bind_attempts_max >= 1")
        if self.log_compaction_min_entries < 2 or self.log_compaction_min_interval_s <= 0:
            raise ConfigError("raft: log_compaction_min_entries >= 2 and log_compaction_min_interval_s > 0")


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` -> (host, port); ``ConfigError`` otherwise."""
    host, separator, port = address.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) <= _PORT_MAX:
        raise ConfigError(f"raft: {address!r} is not host:port")
    return host, int(port)
