"""The router: every node's way to the shards of a distributed collection.

Writes are split by hash slot and each part goes to its shard's primary —
this node's ``PrimaryWriter`` when it is the primary, else the primary's
node over the internal ``Shards/Write`` call. A part whose primary cannot be
reached (dead, being replaced) is retried against the primary the cluster
state names next, until the write deadline: a failover takes a few seconds
and the client's request simply waits through it.

Reads go to one readable replica per shard: ACTIVE replicas (the in-sync
set holds every acknowledged write) on live nodes, this node's first, the
others in turn; a replica that fails or misses its deadline is skipped for
the next, one that has not answered for a second gets a second replica
asked beside it (a hedge), and one the cluster state stops counting while it
is read (node marked dead, replica fenced) is given up at once. Results
merge exactly: top-k by score (offset and limit after the
merge), scroll pages by id, counts summed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

from qcluster import limits
from qcluster.cluster.commands import (
    AbortShardMove,
    AddReplica,
    CreateCollection,
    CreateShardKey,
    DeleteCollection,
    DeleteShardKey,
    DropReplica,
    SetAliases,
    StartShardMove,
    UpdateCollectionConfig,
)
from qcluster.cluster.placement import place_shards, plan_rebalance
from qcluster.cluster.state import (
    ClusterState,
    CollectionState,
    Liveness,
    ReplicaState,
    ResultCode,
    ShardingMethod,
    ShardState,
)
from qcluster.distributed.local import LocalReplicas
from qcluster.distributed.proposer import Proposer, new_request_id
from qcluster.distributed.recovery import TransferProgress
from qcluster.distributed.reconciler import Reconciler, decode_config, encode_config
from qcluster.distributed.resolve import resolve_count, resolve_records, resolve_scored, resolve_scroll_page
from qcluster.engine.merge import merge_scored
from qcluster.engine.shard import LocalShard
from qcluster.errors import (
    AlreadyExists,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    QclusterError,
    ShardUnavailable,
    StorageFull,
    TooFewInSync,
)
from qcluster.operations import Operation, UpsertPoints
from qcluster.replication.messages import ShardKey
from qcluster.replication.primary import PrimaryWriter
from qcluster.sharding import shard_of
from qcluster.storage.collection import ids_that_must_exist, merge_scroll_pages, split_operation
from qcluster.storage.config_codec import apply_patch
from qcluster.storage.interface import AliasAction
from qcluster.storage.toc import apply_alias_actions
from qcluster.transport.shards import GrpcShards
from qcluster.types import (
    CollectionConfig,
    CollectionPatch,
    OrderBy,
    PayloadSelector,
    PointId,
    QueryRequest,
    ReadConsistency,
    ReadConsistencyKind,
    Record,
    ScoredPoint,
)

__all__ = ["Router"]

T = TypeVar("T")
ShardKeyValue = int | str
ShardKeys = tuple[ShardKeyValue, ...] | None
RunBlocking = Callable[..., Awaitable[Any]]

_RETRY_PAUSE_S: Final = 0.25
# How often a write waiting on a remote primary checks that it still is one.
_PRIMARY_WATCH_S: Final = 0.1
# A read that must not go back in time waits this long at most for this
# node's view of the cluster to be current (a Raft election takes ~0.5-1.5 s).
_CURRENT_WAIT_S: Final = 2.0
_CURRENT_POLL_S: Final = 0.02
# A read whose replicas did not all answer is tried again this long at most
# (counted from the end of its first try).
_READ_FAILOVER_S: Final = 4.0
# A node whose replica failed a read is asked after the others for this long.
_SUSPECT_S: Final = 5.0
# A read that asks fewer replicas than it could asks one more when none
# answered for this long (a hedge: a stalled or cut-off replica costs this,
# not a whole internal deadline); and it looks this often whether the cluster
# state still counts the replicas it waits for.
_HEDGE_S: Final = 1.0
_READ_WATCH_S: Final = 0.05
_CREATE_TIMEOUT_S: Final = 15.0
_CAS_ATTEMPTS: Final = 10


class _TooFewAnswers(ShardUnavailable):
    """Fewer replicas of a shard answered a read than its consistency needs."""


class Router:
    def __init__(self, *, node_id: int, local: LocalReplicas, proposer: Proposer, writer: PrimaryWriter,
                 remote: GrpcShards, reconciler: Reconciler, run_blocking: RunBlocking,
                 write_timeout_s: float, transfers: Mapping[tuple[ShardKey, int], TransferProgress],
                 is_current: Callable[[], bool]) -> None:
        """``is_current()``: this node's view of the cluster is recent enough
        to pick the replicas of a read that must not go back in time."""
        self.node_id = node_id
        self._is_current = is_current
        self._suspected_until: dict[int, float] = {}  # node id -> monotonic time its last read failure ages out
        self._local = local
        self.proposer = proposer
        self._writer = writer
        self._remote = remote
        self._reconciler = reconciler
        self._run = run_blocking
        self._write_timeout_s = write_timeout_s
        self._transfers = transfers  # the recoveries this node runs as primary (read only here)
        self._turn = itertools.count()
        self._configs: dict[tuple[str, bytes], CollectionConfig] = {}

    # ------------------------------------------------------------ collections

    def state(self) -> ClusterState:
        return self.proposer.state()

    def collection_state(self, name: str) -> CollectionState:
        return self._shards(name)[1]

    def config(self, name: str) -> CollectionConfig:
        collection = self.collection_state(name)
        key = (name, collection.config)
        config = self._configs.get(key)
        if config is None:
            config = self._configs[key] = decode_config(collection)
        return config

    async def create_collection(self, name: str, config: CollectionConfig) -> None:
        state = self.state()
        if name in state.collections:
            raise AlreadyExists(f"Collection `{name}` already exists!")
        if name in state.aliases:
            raise AlreadyExists(f"`{name}` is an alias of collection `{state.aliases[name]}`")
        if config.write_consistency_factor > config.replication_factor:
            raise InvalidRequest(f"write_consistency_factor ({config.write_consistency_factor}) must not exceed "
                                 f"replication_factor ({config.replication_factor})")
        # Custom sharding: no shards until a shard key is created.
        placement = () if config.custom_sharding else place_shards(
            state, shard_count=config.shard_number, replication_factor=config.replication_factor,
            seed=zlib.crc32(name.encode()))
        result = await self.proposer.propose(CreateCollection(
            request_id=new_request_id("create-collection"), name=name, config=encode_config(config),
            shard_number=config.shard_number, replication_factor=config.replication_factor,
            write_consistency_factor=config.write_consistency_factor,
            sharding_method=ShardingMethod.CUSTOM if config.custom_sharding else ShardingMethod.AUTO,
            shard_keys=(), placement=placement))
        if not result.is_accepted:
            raise result.to_error()
        await self._reconciler.wait_for(result.version, timeout_s=_CREATE_TIMEOUT_S)

    async def delete_collection(self, name: str) -> bool:
        if name not in self.state().collections:
            return False
        result = await self.proposer.propose(DeleteCollection(request_id=new_request_id("delete-collection"),
                                                               name=name))
        if not result.is_accepted:
            if result.code.value == "not_found":
                return False
            raise result.to_error()
        await self._reconciler.wait_for(result.version, timeout_s=_CREATE_TIMEOUT_S)
        return True

    async def _propose_on_current(self, make: Callable[[ClusterState], Any | None], what: str) -> None:
        """Propose ``make(state)`` compare-and-set on the state's version, again
        on a newer state when another command came first (bounded). ``make``
        validates against that state and returns None when nothing changes."""
        for _ in range(_CAS_ATTEMPTS):
            state = self.state()
            command = make(state)
            if command is None:
                return
            result = await self.proposer.propose(command)
            if result.is_accepted:
                await self.proposer.wait_for_version(result.version, timeout_s=_CREATE_TIMEOUT_S)
                return
            if result.code is not ResultCode.STALE:
                raise result.to_error()
        raise PreconditionFailed(f"{what}: the cluster state kept changing; try again")

    async def update_collection(self, name: str, patch: CollectionPatch) -> None:
        """PATCH a collection: the new config goes through Raft; every node's
        reconciler gives its local replicas the new config."""
        def make(state: ClusterState) -> UpdateCollectionConfig:
            if name not in state.collections:
                raise NotFound(f"Collection `{name}` doesn't exist!")
            config = apply_patch(self.config(name), patch)
            if config.write_consistency_factor > config.replication_factor:
                raise InvalidRequest(f"params.write_consistency_factor ({config.write_consistency_factor}) must not "
                                     f"exceed replication_factor ({config.replication_factor})")
            return UpdateCollectionConfig(request_id=new_request_id("update-collection"), name=name,
                                          config=encode_config(config), replication_factor=config.replication_factor,
                                          write_consistency_factor=config.write_consistency_factor,
                                          expected_version=state.version)

        await self._propose_on_current(make, f"collection `{name}`")
        await self._reconciler.wait_for(self.state().version, timeout_s=_CREATE_TIMEOUT_S)

    async def update_aliases(self, actions: list[AliasAction]) -> None:
        """Alias actions, all or none, as one ``SetAliases`` through Raft."""
        def make(state: ClusterState) -> SetAliases | None:
            aliases = apply_alias_actions(state.aliases, actions, collections=state.collections)
            if aliases == dict(state.aliases):
                return None
            return SetAliases(request_id=new_request_id("aliases"), aliases=tuple(sorted(aliases.items())),
                              expected_version=state.version)

        await self._propose_on_current(make, "aliases")

    # ------------------------------------------------------------- shard keys

    async def create_shard_key(self, name: str, key: ShardKeyValue) -> None:
        """A custom-sharded collection's new shard key: ``shard_number``
        shards with ``replication_factor`` replicas each, placed like a new
        collection's."""
        collection = self.collection_state(name)
        if collection.sharding_method is not ShardingMethod.CUSTOM:
            raise InvalidRequest(f"shard_key: collection `{name}` does not use custom sharding")
        if key in collection.shard_keys:
            raise AlreadyExists(f"shard_key: collection `{name}` has shard key {key!r} already")
        placement = place_shards(self.state(), shard_count=collection.shard_number,
                                 replication_factor=collection.replication_factor,
                                 seed=zlib.crc32(f"{name}/{key}".encode()))
        result = await self.proposer.propose(CreateShardKey(request_id=new_request_id("create-shard-key"),
                                                            collection=name, shard_key=key, placement=placement))
        if not result.is_accepted:
            raise result.to_error()
        await self._reconciler.wait_for(result.version, timeout_s=_CREATE_TIMEOUT_S)

    async def delete_shard_key(self, name: str, key: ShardKeyValue) -> None:
        """Drop a shard key and every point in its shards."""
        collection = self.collection_state(name)
        if collection.sharding_method is not ShardingMethod.CUSTOM:
            raise InvalidRequest(f"shard_key: collection `{name}` does not use custom sharding")
        result = await self.proposer.propose(DeleteShardKey(request_id=new_request_id("delete-shard-key"),
                                                            collection=name, shard_key=key))
        if not result.is_accepted:
            if result.code is ResultCode.NOT_FOUND:
                raise NotFound(f"shard_key: collection `{name}` has no shard key {key!r}")
            raise result.to_error()
        await self._reconciler.wait_for(result.version, timeout_s=_CREATE_TIMEOUT_S)

    def _groups(self, collection: CollectionState, shard_keys: ShardKeys) -> list[list[int]]:
        """The shard ids a request reaches, one list per shard key it selects
        (every key when None), each in hash-slot order; with auto sharding,
        one list of every shard."""
        if collection.sharding_method is ShardingMethod.AUTO:
            if shard_keys is not None:
                raise InvalidRequest(f"shard_key: collection `{collection.name}` does not use custom sharding")
            return [sorted(collection.shards)]
        groups = []
        for key in collection.shard_keys if shard_keys is None else shard_keys:
            if key not in collection.shard_keys:
                raise NotFound(f"shard_key: collection `{collection.name}` has no shard key {key!r}")
            groups.append(sorted(shard_id for shard_id, shard in collection.shards.items()
                                 if shard.shard_key == key))
        return groups

    def _selected(self, collection: CollectionState, shard_keys: ShardKeys) -> list[tuple[int, ShardState]]:
        shard_ids = sorted({shard_id for group in self._groups(collection, shard_keys) for shard_id in group})
        return [(shard_id, collection.shards[shard_id]) for shard_id in shard_ids]

    # ----------------------------------------------------------------- writes

    async def primary_write(self, key: ShardKey, operation: Operation) -> int:
        """Apply ``operation`` as this node's primary of ``key`` (local callers and ``Shards/Write``)."""
        shard = self._local.lookup(key)
        if shard is None:
            raise ShardUnavailable(f"node {self.node_id} holds no replica of shard {key.shard_id} of "
                                   f"{key.collection!r}")
        return await self._writer.write(key, shard, operation)

    async def write(self, name: str, operation: Operation, *, shard_keys: ShardKeys = None) -> int:
        """Route every part of ``operation`` to its primary; the highest seq_no
        once all are acknowledged. With custom sharding each point goes to the
        shard its hash slot picks among the shards of each selected key; a
        write that adds or needs existing points must name its keys."""
        collection = self.collection_state(name)
        if (collection.sharding_method is ShardingMethod.CUSTOM and shard_keys is None
                and (isinstance(operation, UpsertPoints) or ids_that_must_exist(operation))):
            raise InvalidRequest(f"shard_key: required to add or change points of collection `{name}` (custom "
                                 "sharding)")
        groups = self._groups(collection, shard_keys)
        parts = split_operation(operation, shard_number=collection.shard_number)
        seq_nos = await asyncio.gather(*(self._write_part(ShardKey(name, group[index]), part)
                                         for group in groups for index, part in parts.items()))
        return max(seq_nos, default=0)

    async def _write_part(self, key: ShardKey, operation: Operation) -> int:
        deadline = time.monotonic() + self._write_timeout_s
        while True:
            shard = self.state().shard(key.collection, key.shard_id)
            if shard is None:
                raise NotFound(f"Collection `{key.collection}` doesn't exist!")
            try:
                if shard.primary == self.node_id:
                    return await self.primary_write(key, operation)
                return await self._unless_deposed(key, shard, self._remote.write(shard.primary, key, operation))
            except QclusterError as error:
                # A full disk on the primary lasts until an operator frees
                # space, too few in-sync replicas until a node comes back: the
                # client hears so at once (507 / 503), not at the deadline.
                if not error.retryable or isinstance(error, StorageFull | TooFewInSync) \
                        or time.monotonic() + _RETRY_PAUSE_S >= deadline:
                    raise
            await asyncio.sleep(_RETRY_PAUSE_S)

    async def _unless_deposed(self, key: ShardKey, shard: ShardState, call: Awaitable[int]) -> int:
        """Await ``call`` to ``shard``'s primary, or give it up as soon as the
        cluster state names another primary or a newer term: a write stuck on
        a stalled or cut-off primary moves to its successor at once instead of
        waiting out the call's deadline. Its outcome on the deposed primary is
        unknown, as after a timeout; that primary can no longer acknowledge it,
        and a retry of the same operation is idempotent."""
        task = asyncio.ensure_future(call)
        try:
            while True:  # bounded by the call's own deadline
                done, _pending = await asyncio.wait({task}, timeout=_PRIMARY_WATCH_S)
                if done:
                    return task.result()
                current = self.state().shard(key.collection, key.shard_id)
                if current is None or (current.primary, current.primary_term) != (shard.primary,
                                                                                  shard.primary_term):
                    raise ShardUnavailable(
                        f"shard {key.shard_id} of {key.collection!r}: node {shard.primary} stopped being its "
                        f"primary while a write waited on it; the write is retried on the new primary")
        finally:
            if not task.done():
                task.cancel()

    # ------------------------------------------------------------------ reads

    def _readers(self, state: ClusterState, shard: ShardState) -> list[int]:
        """Replicas to read ``shard`` from, in order: in sync and alive, this
        node first, then the others in turn — those that failed this node's
        reads in the last ``_SUSPECT_S`` after the rest (a node this one
        cannot reach but the leader can is still alive in the state, and each
        try of it costs a whole internal deadline)."""
        now = time.monotonic()
        active = [replica.node_id for replica in shard.replicas if replica.state is ReplicaState.ACTIVE]
        live = [node_id for node_id in active if _is_alive(state, node_id)]
        others = [node_id for node_id in live if node_id != self.node_id]
        if others:
            turn = next(self._turn) % len(others)
            others = others[turn:] + others[:turn]
            others.sort(key=lambda node_id: self._suspected_until.get(node_id, 0.0) > now)  # stable
        ordered = ([self.node_id] if self.node_id in live else []) + others
        return ordered + [node_id for node_id in active if node_id not in live]

    async def _read_one(self, node_id: int, key: ShardKey, local: Callable[[LocalShard], T],
                        remote: Callable[[int], Awaitable[T]]) -> T:
        if node_id == self.node_id:
            found = self._local.lookup(key)
            if found is None:
                raise ShardUnavailable("no local replica")
            return await self._run(local, found)
        return await remote(node_id)

    async def _read_agreed(self, key: ShardKey, shard: ShardState, state: ClusterState,
                           local: Callable[[LocalShard], T], remote: Callable[[int], Awaitable[T]],
                           consistency: ReadConsistency | None, resolve: Callable[[list[T], int], T]) -> T:
        """One shard's answer under a read ``consistency``: ask as many
        in-sync replicas as it says (another in turn for one that fails or
        misses its deadline), then keep what enough of them agree on
        (``resolve``). The default asks one replica, this node's first.

        When too few replicas answer — one on a node that just died or
        stalled, still in the in-sync set until the controller fences it —
        the read is tried again on the cluster state as it then is, for up to
        ``_READ_FAILOVER_S`` after the first try failed: a failover costs
        latency, not an error."""
        consistency = consistency or ReadConsistency()
        what = f"consistency {consistency.kind.value}" + (
            f" {consistency.factor}" if consistency.kind is ReadConsistencyKind.FACTOR else "")
        if not consistency.is_default and not await self._current_within(_CURRENT_WAIT_S):
            raise ShardUnavailable(f"{what}: this node's view of the cluster may be out of date (it has not heard "
                                   "from the Raft leader lately, or has not applied all it committed), so it "
                                   "cannot tell which replicas hold every acknowledged write; retry, or ask "
                                   "another node")
        deadline: float | None = None  # set by the first try that fails
        while True:
            try:
                return await self._read_agreed_once(key, shard, state, local, remote, consistency, resolve, what)
            except _TooFewAnswers:
                deadline = deadline or time.monotonic() + _READ_FAILOVER_S
                if time.monotonic() + _RETRY_PAUSE_S >= deadline:
                    raise
            await asyncio.sleep(_RETRY_PAUSE_S)
            state = self.state()
            found = state.shard(key.collection, key.shard_id)
            if found is None:
                raise NotFound(f"Collection `{key.collection}` doesn't exist!")
            shard = found

    async def _read_agreed_once(self, key: ShardKey, shard: ShardState, state: ClusterState,
                                local: Callable[[LocalShard], T], remote: Callable[[int], Awaitable[T]],
                                consistency: ReadConsistency, resolve: Callable[[list[T], int], T], what: str) -> T:
        """One try of ``_read_agreed`` on ``state``. Each reader is asked at
        most once: another in turn for one that fails; one more (a hedge)
        when none answered for ``_HEDGE_S`` and a reader is left; and a
        reader that the cluster state stops counting while it is asked (its
        node marked dead, its replica fenced, another primary promoted) is
        given up at once rather than at the end of its internal deadline."""
        if consistency.kind is ReadConsistencyKind.PRIMARY:
            readers = [shard.primary]
            asked, needed, required = 1, 1, 1
        else:
            readers = self._readers(state, shard)
            asked, needed, required = consistency.plan(len(readers))
            if asked > len(readers):
                raise ShardUnavailable(f"{what} asks {asked} in-sync replicas of shard {key.shard_id} of "
                                       f"{key.collection!r}; it has {len(readers)}")
        primary_read = consistency.kind is ReadConsistencyKind.PRIMARY
        answers: list[T] = []
        failures: list[str] = []
        remaining = list(readers)
        pending: dict[asyncio.Future[T], int] = {}
        last_asked = time.monotonic()

        def ask(count: int) -> None:
            nonlocal last_asked
            for node_id in remaining[:count]:
                pending[asyncio.ensure_future(self._read_one(node_id, key, local, remote))] = node_id
            del remaining[:count]
            last_asked = time.monotonic()

        ask(asked)
        try:
            while len(answers) < asked and pending:
                done, _ = await asyncio.wait(pending, timeout=_READ_WATCH_S, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    node_id = pending.pop(future)
                    error = future.exception()
                    if error is None:
                        answers.append(future.result())
                    elif isinstance(error, QclusterError) and (error.retryable or isinstance(error, ShardUnavailable)):
                        failures.append(f"node {node_id}: {error.message}")
                        if node_id != self.node_id:
                            self._suspected_until[node_id] = time.monotonic() + _SUSPECT_S
                        ask(1)
                    else:
                        raise error
                if done:
                    continue
                if remaining and time.monotonic() - last_asked >= _HEDGE_S:
                    ask(1)
                current = self.state()
                if current.version == state.version:
                    continue
                for future, node_id in list(pending.items()):
                    reason = _no_longer_readable(state, current, key, node_id, primary_read=primary_read)
                    if reason is not None:
                        future.cancel()
                        del pending[future]
                        failures.append(f"node {node_id}: {reason} while it was read")
        finally:
            for future in pending:
                future.cancel()
        if len(answers) < needed:
            raise _TooFewAnswers(f"{what}: {len(answers)} of the {needed} replicas of shard {key.shard_id} of "
                                   f"{key.collection!r} it needs answered "
                                   f"({'; '.join(failures) if failures else 'none is in sync'})")
        return answers[0] if len(answers) == 1 else resolve(answers, required)

    async def _current_within(self, timeout_s: float) -> bool:
        """Wait (bounded) until this node's view of the cluster is current: an
        election or a heartbeat in flight then costs a read latency, not a 503."""
        deadline = time.monotonic() + timeout_s
        while not self._is_current():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_CURRENT_POLL_S)
        return True

    def _shards(self, name: str) -> tuple[ClusterState, CollectionState]:
        state = self.state()
        collection = state.collections.get(name)
        if collection is None:
            raise NotFound(f"Collection `{name}` doesn't exist!")
        return state, collection

    async def search(self, name: str, requests: list[QueryRequest], *, consistency: ReadConsistency | None = None,
                     shard_keys: ShardKeys = None) -> list[list[ScoredPoint]]:
        state, collection = self._shards(name)
        selected = self._selected(collection, shard_keys)
        config = self.config(name)
        higher = [config.vectors[request.using].distance.higher_is_better for request in requests]

        def resolve(answers: list[list[list[ScoredPoint]]], required: int) -> list[list[ScoredPoint]]:
            return [resolve_scored([answer[position] for answer in answers], required=required,
                                   higher_is_better=higher[position]) for position in range(len(requests))]

        asked = requests
        if consistency is not None and not consistency.is_default:
            # Replicas that disagree drop points from each other's top k:
            # ask each for twice as many, so the agreed top k stays full
            # unless more than k disagreeing points rank above it.
            asked = [dataclasses.replace(request, limit=max(request.limit, min(
                2 * request.limit + request.offset, limits.TOP_K_MAX))) for request in requests]
        answers = await asyncio.gather(*(
            self._read_agreed(ShardKey(name, shard_id), shard, state,
                              lambda local: local.search_batch(asked),
                              lambda node_id, key=ShardKey(name, shard_id): self._remote.search(node_id, key, asked),
                              consistency, resolve)
            for shard_id, shard in selected))
        return [
            merge_scored([per_shard[position] for per_shard in answers], higher_is_better=higher[position],
                         offset=request.offset, limit=request.limit)
            for position, request in enumerate(requests)
        ]

    async def retrieve(self, name: str, ids: list[PointId], *, with_payload: PayloadSelector,
                       with_vector: bool | tuple[str, ...], consistency: ReadConsistency | None = None,
                       shard_keys: ShardKeys = None) -> list[Record]:
        state, collection = self._shards(name)
        groups = self._groups(collection, shard_keys)
        by_shard: dict[int, list[PointId]] = {}
        for point_id in dict.fromkeys(ids):
            index = shard_of(point_id, shard_number=collection.shard_number)
            for group in groups:
                by_shard.setdefault(group[index], []).append(point_id)

        async def one(shard_id: int, wanted: list[PointId]) -> list[Record]:
            key = ShardKey(name, shard_id)
            return await self._read_agreed(
                key, collection.shards[shard_id], state,
                lambda local: local.retrieve(wanted, with_payload=with_payload, with_vector=with_vector),
                lambda node_id: self._remote.retrieve(node_id, key, wanted, with_payload=with_payload,
                                                      with_vector=with_vector),
                consistency, lambda answers, required: resolve_records(answers, required=required))

        parts = await asyncio.gather(*(one(shard_id, wanted) for shard_id, wanted in by_shard.items()))
        found = {record.id: record for part in parts for record in part}
        return [found[point_id] for point_id in dict.fromkeys(ids) if point_id in found]

    async def scroll(self, name: str, *, filter: dict[str, Any] | None, limit: int, offset: PointId | None,
                     order_by: OrderBy | None, with_payload: PayloadSelector,
                     with_vector: bool | tuple[str, ...], consistency: ReadConsistency | None = None,
                     shard_keys: ShardKeys = None) -> tuple[list[Record], PointId | None]:
        state, collection = self._shards(name)
        selected = self._selected(collection, shard_keys)

        async def one(shard_id: int, shard: ShardState) -> tuple[list[Record], PointId | None]:
            key = ShardKey(name, shard_id)
            return await self._read_agreed(
                key, shard, state,
                lambda local: local.scroll(filter=filter, limit=limit, offset=offset, order_by=order_by,
                                           with_payload=with_payload, with_vector=with_vector),
                lambda node_id: self._remote.scroll(node_id, key, filter=filter, limit=limit, offset=offset,
                                                    order_by=order_by, with_payload=with_payload,
                                                    with_vector=with_vector),
                consistency, lambda pages, required: resolve_scroll_page(pages, required=required,
                                                                         order_by=order_by))

        pages = await asyncio.gather(*(one(shard_id, shard) for shard_id, shard in selected))
        return merge_scroll_pages(list(pages), limit=limit, order_by=order_by)

    async def count(self, name: str, *, filter: dict[str, Any] | None, consistency: ReadConsistency | None = None,
                    shard_keys: ShardKeys = None) -> int:
        state, collection = self._shards(name)
        selected = self._selected(collection, shard_keys)

        async def one(shard_id: int, shard: ShardState) -> int:
            key = ShardKey(name, shard_id)
            return await self._read_agreed(key, shard, state, lambda local: local.count(filter=filter),
                                           lambda node_id: self._remote.count(node_id, key, filter=filter),
                                           consistency, lambda counts, required: resolve_count(counts,
                                                                                               required=required))

        counts = await asyncio.gather(*(one(shard_id, shard) for shard_id, shard in selected))
        return sum(counts)


    # ----------------------------------------------------------- cluster info

    async def cluster_info(self, name: str, *, digest: bool) -> dict[str, Any]:
        """Qdrant's ``GET /collections/{c}/cluster`` body from this node's view,
        with what Qdrant does not show under ``qcluster``: per shard the
        primary, its term and the in-sync set; per local replica its last
        sequence number and (``digest``) its content digest."""
        state, collection = self._shards(name)
        local_shards: list[dict[str, Any]] = []
        remote_shards: list[dict[str, Any]] = []
        transfers: list[dict[str, Any]] = []
        shards: list[dict[str, Any]] = []
        for shard_id, shard in sorted(collection.shards.items()):
            shards.append({"shard_id": shard_id, "primary": shard.primary, "primary_term": shard.primary_term,
                           "in_sync": sorted(shard.in_sync),
                           "replicas": {str(replica.node_id): replica.state.value for replica in shard.replicas}})
            transfers += self._transfers_of(name, shard_id, shard)
            for replica in shard.replicas:
                shown = _QDRANT_STATES[replica.state]
                if replica.node_id != self.node_id:
                    remote_shards.append({"shard_id": shard_id, "shard_key": shard.shard_key,
                                          "peer_id": replica.node_id, "state": shown})
                    continue
                local = self._local.lookup(ShardKey(name, shard_id))
                entry: dict[str, Any] = {"shard_id": shard_id, "shard_key": shard.shard_key, "points_count": 0,
                                         "state": shown}
                if local is not None:
                    extra = await self._run(_describe_local, local, digest)
                    entry["points_count"] = extra.pop("points_count")
                    entry["qcluster"] = extra
                local_shards.append(entry)
        return {"peer_id": self.node_id, "shard_count": len(collection.shards), "local_shards": local_shards,
                "remote_shards": remote_shards, "shard_transfers": transfers,
                "qcluster": {"replication_factor": collection.replication_factor,
                             "write_consistency_factor": collection.write_consistency_factor,
                             "state_version": state.version, "shards": shards}}


    def _transfers_of(self, name: str, shard_id: int, shard: ShardState) -> list[dict[str, Any]]:
        """Qdrant's ``shard_transfers`` entries of one shard: a move, and every
        replica the primary is bringing in sync; with progress (``comment``
        and ``qcluster``) when this node is that primary."""
        targets = {replica.node_id for replica in shard.replicas
                   if replica.state in (ReplicaState.PARTIAL, ReplicaState.INITIALIZING)}
        if shard.move is not None:
            targets.add(shard.move.target)
        found: list[dict[str, Any]] = []
        for target in sorted(targets):
            is_move = shard.move is not None and shard.move.target == target
            entry: dict[str, Any] = {"shard_id": shard_id, "from": shard.move.source if is_move else shard.primary,
                                     "to": target, "sync": not is_move}
            progress = self._transfers.get((ShardKey(name, shard_id), target))
            if progress is not None:
                entry.update(method=progress.method, comment=progress.comment(), qcluster=progress.describe())
            found.append(entry)
        return found


_QDRANT_STATES: Final = {ReplicaState.ACTIVE: "Active", ReplicaState.DEAD: "Dead", ReplicaState.PARTIAL: "Partial",
                         ReplicaState.INITIALIZING: "Initializing"}


def _describe_local(shard: LocalShard, digest: bool) -> dict[str, Any]:
    described: dict[str, Any] = {"points_count": shard.count(filter=None), "last_seq": shard.last_seq,
                                 "last_term": shard.last_term}
    if digest:
        content = shard.content_digest()
        described["content_digest"] = content.digest
    return described


# ------------------------------------------------------------ cluster operations


def _uint(raw: dict[str, Any], key: str, *, operation: str) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"{operation}.{key}: expected an unsigned integer, got {value!r}")
    return value


async def run_cluster_operation(router: Router, name: str, operation: str, raw: dict[str, Any]) -> None:
    """Qdrant's ``POST /collections/{c}/cluster`` operations, as cluster
    commands; ``rebalance`` (qcluster's) starts the moves that even out the
    replicas per node. Moves and new replicas are filled by the primary's
    recovery; the controller finishes a move once its target is in sync."""
    collection = router.collection_state(name)
    commands: list[Any] = []
    if operation == "rebalance":
        state = router.state()
        planned = [move for move in plan_rebalance(state, move_count_max=len(collection.shards) * 4)
                   if move.collection == name]
        seen: set[int] = set()
        for move in planned:
            if move.shard_id in seen:
                continue  # one move per shard at a time; call rebalance again for the rest
            seen.add(move.shard_id)
            commands.append(StartShardMove(request_id=new_request_id("rebalance"), collection=name,
                                           shard_id=move.shard_id, source=move.source, target=move.target))
    else:
        shard_id = _uint(raw, "shard_id", operation=operation)
        shard = collection.shards.get(shard_id)
        if shard is None:
            raise NotFound(f"{operation}.shard_id: collection `{name}` has no shard {shard_id}")
        term = shard.primary_term
        match operation:
            case "move_shard" | "abort_transfer":
                kind = StartShardMove if operation == "move_shard" else AbortShardMove
                commands.append(kind(request_id=new_request_id(operation), collection=name, shard_id=shard_id,
                                     source=_uint(raw, "from_peer_id", operation=operation),
                                     target=_uint(raw, "to_peer_id", operation=operation),
                                     expected_primary_term=term))
            case "replicate_shard":
                commands.append(AddReplica(request_id=new_request_id(operation), collection=name, shard_id=shard_id,
                                           node_id=_uint(raw, "to_peer_id", operation=operation),
                                           expected_primary_term=term))
            case "drop_replica":
                commands.append(DropReplica(request_id=new_request_id(operation), collection=name, shard_id=shard_id,
                                            node_id=_uint(raw, "peer_id", operation=operation),
                                            expected_primary_term=term))
            case _:
                raise PreconditionFailed(f"{operation}: not supported in cluster mode yet")
    for command in commands:
        result = await router.proposer.propose(command)
        if not result.is_accepted:
            raise result.to_error()


def _no_longer_readable(planned: ClusterState, current: ClusterState, key: ShardKey, node_id: int, *,
                        primary_read: bool) -> str | None:
    """Why ``current`` no longer counts a replica that a read planned on
    ``planned`` is waiting for, or None. Only a change counts: a replica the
    plan already took as a last resort (in sync on a node marked dead) stays
    asked until it is fenced."""
    shard = current.shard(key.collection, key.shard_id)
    if shard is None:
        return "its shard is gone"
    if primary_read:
        return None if shard.primary == node_id else f"node {shard.primary} became the primary"
    before = planned.shard(key.collection, key.shard_id)
    if _is_active(before, node_id) and not _is_active(shard, node_id):
        return "its replica left the in-sync set"
    if _is_alive(planned, node_id) and not _is_alive(current, node_id):
        return "its node was marked dead"
    return None


def _is_active(shard: ShardState | None, node_id: int) -> bool:
    replica = None if shard is None else shard.replica(node_id)
    return replica is not None and replica.state is ReplicaState.ACTIVE


def _is_alive(state: ClusterState, node_id: int) -> bool:
    node = state.nodes.get(node_id)
    return node is not None and node.liveness is Liveness.ALIVE
