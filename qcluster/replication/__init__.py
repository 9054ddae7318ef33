"""Per-shard replication of point writes (PacificA, as in Elasticsearch).

``primary.PrimaryWriter`` sequences a write on the shard's primary, logs and
applies it locally, sends the WAL record to every in-sync replica and
acknowledges only when each of them has it or has been removed from the
in-sync set through Raft. ``replica.ReplicaEndpoint`` applies those records
on a replica strictly in sequence, refusing a deposed primary. Neither knows
gRPC or Raft: they talk through the ``Membership`` and ``Peers`` protocols
that the transport and consensus layers implement.
"""
