"""Cluster mode on one node: where the pure cluster state meets local storage
and the network (docs/architecture.md §9).

- ``proposer``: proposes commands through Raft, retrying an unknown outcome
  with the same request id.
- ``membership``: ``replication.Membership`` over the cluster state.
- ``local``: this node's replicas in its table of contents (lookup, snapshot install).
- ``reconciler``: makes local storage hold exactly the replicas the state places here.
- ``router``: writes to each shard's primary, reads from one readable replica
  per shard, top-k merged; the sync ``catalog`` facade the API calls.
- ``recovery``: a primary brings a DEAD / new replica back in sync.
- ``controller``: the Raft leader promotes primaries and re-creates lost replicas.

Raft is reached only through callables (state, propose), so this layer does
not import ``consensus``.
"""
