"""``qcluster collections list|info|create|delete``, ``qcluster query`` and
``qcluster cluster status``: a quick look, for people (tables) and scripts
(``--json``)."""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

import numpy as np
from qdrant_client import models

from qcluster.cli._common import UsageError, add_client_args, command, connect, emit, table
from qcluster.errors import NotFound

__all__ = ["add_parsers"]

_DISTANCES = {distance.value.lower(): distance for distance in models.Distance}


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", exclude_none=True) if hasattr(model, "model_dump") else model


def add_parsers(commands: Any) -> None:
    collections = commands.add_parser("collections", help="list, inspect, create or delete collections")
    actions = collections.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="names and point counts")
    add_client_args(listing)
    listing.set_defaults(run=collections_list)
    info = actions.add_parser("info", help="status, counts, vectors and payload indexes of one collection")
    info.add_argument("name")
    add_client_args(info)
    info.set_defaults(run=collections_info)
    create = actions.add_parser("create", help="create a collection with one unnamed vector")
    create.add_argument("name")
    create.add_argument("--size", type=int, required=True, help="vector dimensions")
    create.add_argument("--distance", default="Cosine", help="Cosine, Dot, Euclid or Manhattan")
    create.add_argument("--shards", type=int, default=None, help="shard_number")
    create.add_argument("--on-disk", action="store_true", help="keep vectors on disk (memmap)")
    add_client_args(create)
    create.set_defaults(run=collections_create)
    delete = actions.add_parser("delete", help="delete a collection and its data")
    delete.add_argument("name")
    add_client_args(delete)
    delete.set_defaults(run=collections_delete)

    query = commands.add_parser("query", help="nearest neighbours of one vector, for a quick look")
    query.add_argument("--collection", required=True)
    target = query.add_mutually_exclusive_group(required=True)
    target.add_argument("--vector", help="a JSON array of numbers")
    target.add_argument("--vector-file", type=pathlib.Path, help=".npy file; see --row")
    target.add_argument("--id", help="use the stored vector of this point id")
    query.add_argument("--row", type=int, default=0, help="with --vector-file: which row (default 0)")
    query.add_argument("--using", default=None, help="named vector to search")
    query.add_argument("--limit", type=int, default=10)
    query.add_argument("--filter", default=None, help="a Qdrant filter as JSON")
    query.add_argument("--ef", type=int, default=None, help="hnsw_ef")
    query.add_argument("--exact", action="store_true", help="exact search (no index)")
    query.add_argument("--with-payload", action="store_true")
    add_client_args(query)
    query.set_defaults(run=run_query)

    cluster = commands.add_parser("cluster", help="cluster state")
    cluster_actions = cluster.add_subparsers(dest="action", required=True)
    status = cluster_actions.add_parser("status", help="nodes, shards, replicas and their states")
    add_client_args(status)
    status.set_defaults(run=cluster_status)


@command
def collections_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        names = sorted(item.name for item in client.qdrant.get_collections().collections)
        rows = [{"name": name, "points": client.count(name)} for name in names]
    emit(args, rows, table(("collection", "points"), [(row["name"], row["points"]) for row in rows])
         if rows else "no collections")
    return 0


@command
def collections_info(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.qdrant.get_collection(args.name)
    data = _dump(info)
    vectors = data["config"]["params"]["vectors"]
    named = {"": vectors} if "size" in vectors else vectors
    lines = [f"collection {args.name}: {data['status']}, {data.get('points_count', 0)} points, "
             f"{data.get('indexed_vectors_count', 0)} indexed vectors, {data.get('segments_count', 0)} segments",
             table(("vector", "size", "distance", "on_disk"),
                   [(name or "<unnamed>", params["size"], params["distance"], params.get("on_disk", False))
                    for name, params in named.items()])]
    schema = data.get("payload_schema") or {}
    if schema:
        lines.append(table(("payload index", "type", "points"),
                           [(key, value.get("data_type"), value.get("points")) for key, value in schema.items()]))
    emit(args, data, "\n".join(lines))
    return 0


@command
def collections_create(args: argparse.Namespace) -> int:
    distance = _DISTANCES.get(args.distance.lower())
    if distance is None:
        raise UsageError(f"--distance: expected one of Cosine, Dot, Euclid, Manhattan, got {args.distance!r}")
    with connect(args) as client:
        client.qdrant.create_collection(args.name, shard_number=args.shards, vectors_config=models.VectorParams(
            size=args.size, distance=distance, on_disk=args.on_disk or None))
    emit(args, {"created": args.name}, f"created collection {args.name}")
    return 0


@command
def collections_delete(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if not client.qdrant.collection_exists(args.name):
            raise NotFound(f"Collection `{args.name}` doesn't exist!")
        client.qdrant.delete_collection(args.name)
    emit(args, {"deleted": args.name}, f"deleted collection {args.name}")
    return 0


def _query_input(args: argparse.Namespace) -> Any:
    if args.vector is not None:
        try:
            vector = json.loads(args.vector)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--vector: not a JSON array: {exc.msg}") from exc
        if not isinstance(vector, list):
            raise UsageError("--vector: expected a JSON array of numbers")
        return vector
    if args.vector_file is not None:
        try:
            matrix = np.load(args.vector_file, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise UsageError(f"--vector-file: cannot read {args.vector_file} as .npy: {exc}") from exc
        if matrix.ndim != 2 or not 0 <= args.row < matrix.shape[0]:
            raise UsageError(f"--row: {args.row} is not a row of {args.vector_file} {matrix.shape}")
        return np.asarray(matrix[args.row], dtype=np.float32).tolist()
    return int(args.id) if args.id.isdigit() else args.id


@command
def run_query(args: argparse.Namespace) -> int:
    query_filter = None
    if args.filter is not None:
        try:
            query_filter = models.Filter.model_validate(json.loads(args.filter))
        except (json.JSONDecodeError, ValueError) as exc:
            raise UsageError(f"--filter: not a Qdrant filter: {exc}") from exc
    params = models.SearchParams(hnsw_ef=args.ef, exact=args.exact)
    with connect(args) as client:
        hits = client.qdrant.query_points(args.collection, query=_query_input(args), using=args.using,
                                          limit=args.limit, query_filter=query_filter, search_params=params,
                                          with_payload=args.with_payload).points
    rows = [{"id": hit.id, "score": hit.score, "payload": hit.payload} for hit in hits]
    shown = [(row["id"], f"{row['score']:.4f}", json.dumps(row["payload"])[:100] if args.with_payload else "")
             for row in rows]
    emit(args, rows, table(("id", "score", "payload") if args.with_payload else ("id", "score"),
                           shown if args.with_payload else [row[:2] for row in shown]) if rows else "no results")
    return 0


@command
def cluster_status(args: argparse.Namespace) -> int:
    with connect(args) as client:
        status = client.cluster_status()
        names = sorted(item.name for item in client.qdrant.get_collections().collections)
        placements = {name: _dump(client.shard_placement(name)) for name in names}
    lines = []
    if status.get("status") == "disabled":
        lines.append(f"cluster mode: disabled (single node at {args.url})")
    else:
        raft = status.get("raft_info", {})
        lines.append(f"this node: peer {status.get('peer_id')}; raft leader {raft.get('leader')}, "
                     f"term {raft.get('term')}, role {raft.get('role')}")
        nodes = status.get("qcluster", {}).get("nodes", {})
        lines.append(table(("peer", "raft", "rest", "grpc", "liveness", "role"), sorted(
            (int(peer), info.get("uri"), nodes.get(peer, {}).get("http"), nodes.get(peer, {}).get("grpc"),
             nodes.get(peer, {}).get("liveness"), "leader" if str(raft.get("leader")) == peer else "")
            for peer, info in status.get("peers", {}).items())))
    rows = []
    for name, placement in placements.items():
        for shard in placement.get("local_shards", []):
            rows.append((name, shard["shard_id"], placement.get("peer_id"), shard.get("state"),
                         shard.get("points_count")))
        for shard in placement.get("remote_shards", []):
            rows.append((name, shard["shard_id"], shard.get("peer_id"), shard.get("state"), ""))
    lines.append(table(("collection", "shard", "peer", "state", "points"), sorted(rows, key=str)) if rows
                 else "no collections")
    emit(args, {"cluster": status, "collections": placements}, "\n".join(lines))
    return 0
