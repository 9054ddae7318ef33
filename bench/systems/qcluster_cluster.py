"""qcluster as a three-node cluster on this machine: three ``qcluster serve``
processes in cluster mode (Raft over loopback), one collection of
``SHARDS`` shards with ``REPLICATION_FACTOR`` replicas each, spread over the
nodes, as the production guide recommends (replication factor >= 2 on >= 3
nodes).

Everything else is the single-node REST system's (inherited): the same
creation body plus the shard settings, payload indexes, bulk-ingestion
sequence (every batch sent to node 1, which routes each point to its shard's
primary; a write is acknowledged once every in-sync replica has it), and the
same load client — whose connections are spread over the three nodes, as a
load balancer in front of them would (the 8 clients: 3, 3 and 2).

The three nodes share the machine's two cores, so these figures show what
sharding and replication cost on one box, not what three machines give.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Final

import httpx

from bench.systems.qcluster import COLLECTION, READY_TIMEOUT_S, Qcluster, _Server
from qcluster.testing.ports import free_port

NODES: Final = 3
SHARDS: Final = 3
REPLICATION_FACTOR: Final = 2


class QclusterCluster(Qcluster):
    name = "qcluster-cluster"

    def _start_servers(self) -> list[_Server]:
        p2p_ports = [free_port() for _ in range(NODES)]
        peers = ",".join(f"127.0.0.1:{port}" for port in p2p_ports)
        secret = secrets.token_hex(24)
        return [_Server(data_dir=self.workdir / f"node{index + 1}", log_path=self.workdir / f"node{index + 1}.log",
                        args=["--node-id", str(index + 1), "--p2p-port", str(p2p_ports[index]), "--peers", peers,
                              # "=" form: a secret beginning with "-" would otherwise read as an option.
                              f"--cluster-secret={secret}"])
                for index in range(NODES)]

    def _wait_formed(self) -> None:
        """Until every node sees all of them registered and alive (placement
        only uses registered nodes)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        views: list[Any] = []
        while time.monotonic() < deadline:
            try:
                views = [self.http.get(f"{server.url}/cluster", timeout=5).json()["result"]["qcluster"]["nodes"]
                         for server in self.servers]
            except (httpx.HTTPError, KeyError):
                views = []
            if views and all(len(view) == NODES and all(item["liveness"] == "alive" for item in view.values())
                             for view in views):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not form within {READY_TIMEOUT_S} s: {views}")

    def collection_params(self) -> dict[str, Any]:
        self.notes.append(f"{NODES} nodes on this machine, {SHARDS} shards x replication factor "
                          f"{REPLICATION_FACTOR}; writes to node 1, query connections spread over the nodes")
        return {"shard_number": SHARDS, "replication_factor": REPLICATION_FACTOR}

    def _index_progress(self) -> str | None:
        """Every node's local replicas green and fully indexed: the indexed
        vectors of all nodes add up to every point times the replication factor."""
        infos = [self._call_at(server.url, "GET", f"/collections/{COLLECTION}") for server in self.servers]
        if any(info["status"] == "red" for info in infos):
            raise RuntimeError(f"collection went red while indexing: {infos}")
        indexed = sum(info["indexed_vectors_count"] for info in infos)
        wanted = self.dataset.n * REPLICATION_FACTOR
        if all(info["status"] == "green" for info in infos) and indexed == wanted and all(
                info["points_count"] == self.dataset.n for info in infos):
            return None
        return f"{indexed}/{wanted} indexed, status {[info['status'] for info in infos]}"

    def load_client_args(self) -> list[str]:
        return [",".join(server.url for server in self.servers), COLLECTION]


SYSTEM = QclusterCluster
