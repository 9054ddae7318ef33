"""Cluster endpoints. ``GET /cluster`` reports the node's Raft member in
cluster mode; the per-collection endpoints describe the collection's shards
(every shard local and Active on a single node). What each does is in
``qcluster.api.actions``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from qcluster.api import actions
from qcluster.api.rest._request import bool_query_param, run_storage, run_with_body, state_of, timeout_param
from qcluster.api.rest._route import Route
from qcluster.api.schema.parse import check_collection_name

__all__ = ["ROUTES"]


def _name(request: web.Request) -> str:
    return check_collection_name(request.match_info["collection_name"])


async def cluster_status(request: web.Request) -> Any:
    """Qdrant's shape: ``{"status": "disabled"}`` on a single node; in cluster
    mode ``peer_id``, ``peers``, ``raft_info`` ... from the node's Raft member."""
    provider = state_of(request).cluster_status
    return {"status": "disabled"} if provider is None else provider()


async def collection_cluster_info(request: web.Request) -> Any:
    return await run_storage(request, actions.collection_cluster_info, name=_name(request),
                             digest=bool_query_param(request, "digest", default=False))


async def update_collection_cluster(request: web.Request) -> Any:
    name = _name(request)
    timeout_param(request)
    return await run_with_body(request, actions.update_cluster_setup, name=name)


async def create_shard_key(request: web.Request) -> Any:
    name = _name(request)
    timeout_param(request)
    return await run_with_body(request, actions.create_shard_key, name=name)


async def delete_shard_key(request: web.Request) -> Any:
    name = _name(request)
    timeout_param(request)
    return await run_with_body(request, actions.delete_shard_key, name=name)


_C = "/collections/{collection_name}"

ROUTES = (
    Route("GET", "/cluster", cluster_status, "cluster_status", "Cluster status: Raft members and leader (disabled on a single node)",
          result_schema="ClusterStatus"),
    Route("GET", f"{_C}/cluster", collection_cluster_info, "collection_cluster_info",
          "Shards of a collection: local and remote replicas with their states; in cluster mode also the "
          "primary, its term and the in-sync set (``digest=true``: each local replica's content digest)",
          result_schema="CollectionClusterInfo", query_params=("digest",)),
    Route("POST", f"{_C}/cluster", update_collection_cluster, "update_collection_cluster",
          "Move, replicate or drop shards (409: cluster mode is not enabled)",
          request_schema="ClusterOperations", result_schema="Bool", query_params=("timeout",)),
    Route("PUT", f"{_C}/shards", create_shard_key, "create_shard_key",
          "Create a shard key of a collection with custom sharding (cluster mode)",
          request_schema="CreateShardingKey", result_schema="Bool", query_params=("timeout",)),
    Route("POST", f"{_C}/shards/delete", delete_shard_key, "delete_shard_key",
          "Delete a shard key and the points in its shards (cluster mode)",
          request_schema="DropShardingKey", result_schema="Bool", query_params=("timeout",)),
)
