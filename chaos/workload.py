"""The chaos workload, run inside the client namespace only::

    python -m chaos.workload setup --config RUN_DIR/config.json
    python -m chaos.workload run   --config RUN_DIR/config.json --duration S [--rate R] --history RUN_DIR/history.jsonl
    python -m chaos.workload final --config RUN_DIR/config.json --out RUN_DIR/final.json [--converge-timeout 60]

``run`` is an open loop: operation k is due at ``t0 + k / rate`` whatever
happened to the ones before, and its latency counts from then, so a stalled
cluster shows as latency rather than as fewer operations. At most
``--concurrency`` operations are in flight; one due past that is recorded as
``fail`` ``overloaded-client`` without being sent. Every request runs under
``--timeout`` (an ``info`` when it expires). 80 % reads (register reads,
gets of set ids, counts, filtered or exact searches) at default /
``primary`` / ``majority`` / ``all`` consistency, 20 % writes (inserts of
new set ids from 1000 up, register overwrites with increasing versions,
deletes of acknowledged set ids), round-robin over the nodes, over REST and
gRPC (``primary`` has no gRPC form: it goes over REST). A read that fails is
retried once at once on the next node, as a new op with ``retry_of``.

Registers are the points 1..8; one writer per key at a time, versions
strictly increasing; after an indeterminate write the key rests for one
timeout, so that write is unlikely to land after the next one. ``run`` stops
at ``--duration`` or as soon as ``RUN_DIR/stop`` exists.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import grpc
import httpx
from qdrant_client import grpc as qdrant_grpc

from chaos.checker import cluster_view, shard_digests
from chaos.history import WRITE_FUNCTIONS, HistoryWriter, Outcome

__all__ = ["Classified", "classify_grpc", "classify_http", "classify_transport", "main"]

COLLECTION_DEFAULT: Final = "chaos"
DIMENSION: Final = 8
REGISTER_KEYS: Final = tuple(range(1, 9))
SET_ID_FIRST: Final = 1000
LEVELS: Final = (None, "primary", "majority", "all")
SETUP_TIMEOUT_S: Final = 120.0
POLL_S: Final = 0.5
REQUEST_TIMEOUT_S: Final = 5.0
FINAL_ATTEMPTS: Final = 5
FINAL_RETRY_PAUSE_S: Final = 2.0
SCROLL_PAGE: Final = 1000
SCROLL_PAGES_MAX: Final = 10_000
STOP_CHECK_EVERY_S: Final = 0.5
DURATION_S_MAX: Final = 24 * 3600.0
_GRPC_LEVELS: Final = {"majority": qdrant_grpc.ReadConsistencyType.Majority,
                       "all": qdrant_grpc.ReadConsistencyType.All}
_GRPC_CHANNEL_OPTIONS: Final = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                                ("grpc.max_reconnect_backoff_ms", 1000)]
# Codes that mean the server refused the request before doing anything.
_GRPC_REFUSED: Final = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED})


# ------------------------------------------------------------ outcomes


@dataclass(frozen=True, slots=True)
class Classified:
    """How a request ended, in history terms."""

    outcome: Outcome
    error: str | None
    status: int | str | None


def classify_http(status: int, body: str, *, is_write: bool) -> Classified:
    """A REST answer: 200 ok; 4xx and 507 (the disk was full, nothing
    written) fail; another 5xx is info for a write (a failed write may stay
    applied on the primary) and fail for a read."""
    if status == 200:
        return Classified("ok", None, status)
    error = f"HTTP {status}: {body[:300]}"
    if status < 500 or status == 507 or not is_write:
        return Classified("fail", error, status)
    return Classified("info", error, status)


def classify_transport(exc: BaseException, *, is_write: bool) -> Classified:
    """A request without an answer: a timeout is info; a connection refused
    before sending fails; anything else (a reset after sending) is info for a
    write and fail for a read."""
    error = f"{type(exc).__name__}: {exc}"[:300]
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return Classified("fail", error, None)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return Classified("info", error, None)
    return Classified("info" if is_write else "fail", error, None)


def classify_grpc(code: grpc.StatusCode, details: str, *, is_write: bool) -> Classified:
    """A gRPC status, on the same rules as REST; UNAVAILABLE from a
    connection that never opened fails."""
    error = f"{code.name}: {details}"[:300]
    if code is grpc.StatusCode.OK:
        return Classified("ok", None, code.name)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return Classified("info", error, code.name)
    never_sent = code is grpc.StatusCode.UNAVAILABLE and "failed to connect" in details.lower()
    if code in _GRPC_REFUSED or never_sent or not is_write:
        return Classified("fail", error, code.name)
    return Classified("info", error, code.name)


# ----------------------------------------------------------- the nodes


@dataclass(frozen=True, slots=True)
class NodeAddress:
    node_id: int
    url: str
    grpc_target: str


def node_addresses(config: dict[str, Any]) -> list[NodeAddress]:
    """The nodes of ``config.json``; gRPC on the REST URL's host."""
    nodes = [NodeAddress(int(entry["id"]), str(entry["url"]).rstrip("/"),
                         f"{urlsplit(str(entry['url'])).hostname}:{int(entry['grpc_port'])}")
             for entry in config["nodes"]]
    assert nodes, "config.json lists no nodes"
    assert len({node.node_id for node in nodes}) == len(nodes), "duplicate node ids"
    return nodes


class RestError(Exception):
    """A REST answer other than 200."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


async def rest_call(client: httpx.AsyncClient, method: str, url: str, *, body: Any = None,
                    params: dict[str, str] | None = None) -> Any:
    """The ``result`` of an enveloped REST answer; RestError otherwise."""
    response = await client.request(method, url, json=body, params=params)
    if response.status_code != 200:
        raise RestError(response.status_code, response.text)
    return response.json().get("result")


# --------------------------------------------------------------- setup


async def _until(description: str, deadline: float, probe: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``probe`` until it holds; SystemExit at ``deadline`` (monotonic)."""
    last_error = "never true"
    while time.monotonic() < deadline:
        try:
            if await probe():
                return
            last_error = "not yet"
        except (httpx.HTTPError, RestError, KeyError, TypeError, ValueError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(POLL_S)
    raise SystemExit(f"chaos.workload: {description} not reached in time ({last_error})")


async def setup(config: dict[str, Any]) -> None:
    """Wait for every node, create the collection and its index, wait for every replica Active."""
    nodes = node_addresses(config)
    collection = str(config.get("collection", COLLECTION_DEFAULT))
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
        async def ready() -> bool:
            answers = [await client.get(f"{node.url}/readyz") for node in nodes]
            return all(answer.status_code == 200 for answer in answers)

        async def joined() -> bool:
            state = await rest_call(client, "GET", f"{nodes[0].url}/cluster")
            if state.get("status") != "enabled":
                return True
            liveness = [entry.get("liveness") for entry in state["qcluster"]["nodes"].values()]
            return len(liveness) == len(nodes) and all(value == "alive" for value in liveness)

        await _until("every node ready", deadline, ready)
        await _until("every node joined and alive", deadline, joined)
        await _until("the collection created", deadline, lambda: _create_collection(client, nodes[0], collection,
                                                                                      config))
        await _until("the payload index created", deadline, lambda: _create_index(client, nodes[0], collection))
        await _until("every replica active", deadline, lambda: _replicas_active(client, nodes, collection))
    print(json.dumps({"collection": collection, "ready": True}))


async def _create_collection(client: httpx.AsyncClient, node: NodeAddress, collection: str,
                             config: dict[str, Any]) -> bool:
    body = {"vectors": {"size": DIMENSION, "distance": "Cosine"},
            "shard_number": int(config.get("shard_number", 3)),
            "replication_factor": int(config.get("replication_factor", 2)),
            "write_consistency_factor": int(config.get("write_consistency_factor", 1))}
    try:
        await rest_call(client, "PUT", f"{node.url}/collections/{collection}", body=body)
    except RestError as exc:
        if exc.status != 409:  # 409: it exists already, from an earlier attempt
            raise
    return True


async def _create_index(client: httpx.AsyncClient, node: NodeAddress, collection: str) -> bool:
    await rest_call(client, "PUT", f"{node.url}/collections/{collection}/index", params={"wait": "true"},
                    body={"field_name": "kind", "field_schema": "keyword"})
    return True


async def _replicas_active(client: httpx.AsyncClient, nodes: list[NodeAddress], collection: str) -> bool:
    """Every node knows the collection and sees each shard with all its replicas active and in sync."""
    for node in nodes:
        answer = await rest_call(client, "GET", f"{node.url}/collections/{collection}/cluster")
        extra = answer.get("qcluster")
        if extra is None:  # a single node: its local shards are the whole collection
            if not all(shard["state"] == "Active" for shard in answer["local_shards"]):
                return False
            continue
        for shard in extra["shards"]:
            states = list(shard["replicas"].values())
            if len(states) != extra["replication_factor"] or any(state != "active" for state in states):
                return False
            if len(shard["in_sync"]) != len(states):
                return False
    return True


# ----------------------------------------------------------------- run


@dataclass(frozen=True, slots=True)
class Planned:
    """One operation before it is sent."""

    op_id: int
    function: str
    node: NodeAddress
    api: str
    consistency: str | None
    argument: Any
    scheduled: float
    retry_of: int | None = None


@dataclass(slots=True)
class WorkloadState:
    """What the generator knows; mutated on the event loop only, never across an await."""

    rng: random.Random
    next_set_id: int = SET_ID_FIRST
    next_version: dict[int, int] = field(default_factory=lambda: {key: 1 for key in REGISTER_KEYS})
    busy_keys: set[int] = field(default_factory=set)
    resting_until: dict[int, float] = field(default_factory=dict)
    acknowledged_ids: list[int] = field(default_factory=list)
    deleting: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class RunOptions:
    duration_s: float
    rate: float
    timeout_s: float
    concurrency: int
    stop_file: Path


class Workload:
    """The open loop of ``run``: plans operations, sends them, records them."""

    def __init__(self, *, nodes: list[NodeAddress], collection: str, options: RunOptions, seed: int,
                 history: HistoryWriter) -> None:
        assert options.rate > 0, options.rate
        assert 0 < options.duration_s <= DURATION_S_MAX, options.duration_s
        assert options.concurrency >= 1, options.concurrency
        self.nodes = nodes
        self.collection = collection
        self.options = options
        self.state = WorkloadState(rng=random.Random(seed))
        self.history = history
        self.processes: asyncio.Queue[int] = asyncio.Queue(maxsize=options.concurrency)
        for process in range(options.concurrency):
            self.processes.put_nowait(process)
        self.next_op_id = 0
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(options.timeout_s),
                                      limits=httpx.Limits(max_connections=options.concurrency))
        self.channels = {node.node_id: grpc.aio.insecure_channel(node.grpc_target, options=_GRPC_CHANNEL_OPTIONS)
                         for node in nodes}
        self.stubs = {node_id: qdrant_grpc.PointsStub(channel) for node_id, channel in self.channels.items()}

    async def close(self) -> None:
        await self.http.aclose()
        for channel in self.channels.values():
            await channel.close()

    async def run(self) -> int:
        """Send operations on schedule until the duration ends or the stop file appears; the op count."""
        started_wall, started = time.time(), time.monotonic()
        count_max = int(self.options.duration_s * self.options.rate)
        next_stop_check = started
        async with asyncio.TaskGroup() as tasks:
            for index in range(count_max):
                due = started + index / self.options.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if time.monotonic() >= next_stop_check:
                    if self.options.stop_file.exists():
                        break
                    next_stop_check = time.monotonic() + STOP_CHECK_EVERY_S
                planned = self._plan(index, started_wall + index / self.options.rate)
                if self.processes.empty():
                    self._record_overloaded(planned)
                    continue
                tasks.create_task(self._perform(planned, self.processes.get_nowait()))
        return self.next_op_id

    def _new_op_id(self) -> int:
        self.next_op_id += 1
        return self.next_op_id

    def _plan(self, index: int, scheduled: float) -> Planned:
        """The operation due at slot ``index`` (80 % reads, 20 % writes)."""
        rng, state = self.state.rng, self.state
        node = self.nodes[index % len(self.nodes)]
        roll = rng.random()
        function, argument = "read", rng.choice(REGISTER_KEYS)
        if roll < 0.10:
            function, argument = "add", None
        elif roll < 0.17:
            function, argument = "write", None
        elif roll < 0.20:
            function, argument = "delete", None
        elif roll < 0.40 and state.acknowledged_ids:
            function, argument = "get", rng.choice(state.acknowledged_ids)
        elif roll < 0.50:
            function, argument = rng.choice(("count", "search")), None
        function, argument = self._claim(function, argument, scheduled)
        consistency = None if function in WRITE_FUNCTIONS else rng.choice(LEVELS)
        api = "rest" if consistency == "primary" else rng.choice(("rest", "grpc"))
        return Planned(self._new_op_id(), function, node, api, consistency, argument, scheduled)

    def _claim(self, function: str, argument: Any, now: float) -> tuple[str, Any]:
        """Fix a write's target: a free register key with its next version, an
        acknowledged id to delete, or else a new set id."""
        state = self.state
        if function == "write":
            free = [key for key in REGISTER_KEYS
                    if key not in state.busy_keys and state.resting_until.get(key, 0.0) <= now]
            if free:
                key = state.rng.choice(free)
                state.busy_keys.add(key)
                state.next_version[key] += 1
                return "write", [key, state.next_version[key] - 1]
        if function == "delete":
            candidates = [point_id for point_id in state.acknowledged_ids[-200:] if point_id not in state.deleting]
            if candidates:
                point_id = state.rng.choice(candidates)
                state.deleting.add(point_id)
                return "delete", point_id
        if function in WRITE_FUNCTIONS:
            state.next_set_id += 1
            return "add", state.next_set_id - 1
        return function, argument

    def _record_overloaded(self, planned: Planned) -> None:
        now = time.time()
        self.history.invoke(process=-1, op_id=planned.op_id, function=planned.function, node=planned.node.node_id,
                            api=planned.api, consistency=planned.consistency, value=planned.argument,
                            invoked=now, scheduled=planned.scheduled)
        self.history.complete(process=-1, op_id=planned.op_id, function=planned.function, outcome="fail",
                              completed=now, error="overloaded-client")
        self._settled(planned, Classified("fail", "overloaded-client", None))

    async def _perform(self, planned: Planned, process: int) -> None:
        """Send one operation (and one retry of a failed read) as ``process``."""
        try:
            outcome = await self._send(planned, process)
            if outcome != "ok" and planned.function not in WRITE_FUNCTIONS:
                retry = Planned(self._new_op_id(), planned.function, self._next_node(planned.node), planned.api,
                                planned.consistency, planned.argument, time.time(), retry_of=planned.op_id)
                await self._send(retry, process)
        finally:
            self.processes.put_nowait(process)

    def _next_node(self, node: NodeAddress) -> NodeAddress:
        return self.nodes[(self.nodes.index(node) + 1) % len(self.nodes)]

    async def _send(self, planned: Planned, process: int) -> Outcome:
        """Record the invoke, send under the timeout, record the completion."""
        is_write = planned.function in WRITE_FUNCTIONS
        self.history.invoke(process=process, op_id=planned.op_id, function=planned.function,
                            node=planned.node.node_id, api=planned.api, consistency=planned.consistency,
                            value=planned.argument, invoked=time.time(), scheduled=planned.scheduled,
                            retry_of=planned.retry_of)
        value: Any = None
        try:
            async with asyncio.timeout(self.options.timeout_s):
                if planned.api == "rest":
                    value = await self._rest(planned)
                else:
                    value = await self._grpc(planned)
            classified = Classified("ok", None, 200 if planned.api == "rest" else "OK")
        except RestError as exc:
            classified = classify_http(exc.status, str(exc), is_write=is_write)
        except grpc.aio.AioRpcError as exc:
            classified = classify_grpc(exc.code(), exc.details() or "", is_write=is_write)
        except (TimeoutError, httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            classified = classify_transport(exc, is_write=is_write)
        self.history.complete(process=process, op_id=planned.op_id, function=planned.function,
                              outcome=classified.outcome, completed=time.time(),
                              value=value if classified.outcome == "ok" else None, error=classified.error,
                              status=classified.status)
        self._settled(planned, classified)
        return classified.outcome

    def _settled(self, planned: Planned, classified: Classified) -> None:
        """Update the generator's state after a write ended."""
        state = self.state
        if planned.function == "write":
            key = int(planned.argument[0])
            state.busy_keys.discard(key)
            if classified.outcome == "info":
                state.resting_until[key] = time.time() + self.options.timeout_s
        elif planned.function == "add" and classified.outcome == "ok":
            state.acknowledged_ids.append(int(planned.argument))
        elif planned.function == "delete" and classified.outcome == "fail":
            state.deleting.discard(int(planned.argument))

    def _vector(self) -> list[float]:
        return [self.state.rng.random() + 0.01 for _ in range(DIMENSION)]

    async def _rest(self, planned: Planned) -> Any:
        """Send ``planned`` over REST; its history value on success."""
        base = f"{planned.node.url}/collections/{self.collection}/points"
        params = {"consistency": planned.consistency} if planned.consistency else {}
        function, argument = planned.function, planned.argument
        if function in ("add", "write"):
            point_id, payload = _point(argument)
            body = {"points": [{"id": point_id, "vector": self._vector(), "payload": payload}]}
            await rest_call(self.http, "PUT", base, params={"wait": "true"}, body=body)
            return None
        if function == "delete":
            await rest_call(self.http, "POST", f"{base}/delete", params={"wait": "true"},
                            body={"points": [argument]})
            return None
        if function in ("read", "get"):
            records = await rest_call(self.http, "POST", base, params=params,
                                      body={"ids": [argument], "with_payload": True})
            return _read_value(function, argument, [(record["id"], record.get("payload") or {})
                                                    for record in records])
        if function == "count":
            answer = await rest_call(self.http, "POST", f"{base}/count", params=params,
                                     body={"filter": _SET_FILTER, "exact": True})
            return int(answer["count"])
        assert function == "search", function
        answer = await rest_call(self.http, "POST", f"{base}/query", params=params,
                                 body={"query": self._vector(), "filter": _SET_FILTER, "limit": 10,
                                       "params": {"exact": self.state.rng.random() < 0.5}})
        return len(answer["points"])

    async def _grpc(self, planned: Planned) -> Any:
        """Send ``planned`` over gRPC; its history value on success."""
        stub, q = self.stubs[planned.node.node_id], qdrant_grpc
        function, argument, name = planned.function, planned.argument, self.collection
        consistency = (q.ReadConsistency(type=_GRPC_LEVELS[planned.consistency])
                       if planned.consistency else None)
        if function in ("add", "write"):
            point_id, payload = _point(argument)
            point = q.PointStruct(id=q.PointId(num=point_id), vectors=q.Vectors(vector=q.Vector(data=self._vector())),
                                  payload={name_: _grpc_value(value) for name_, value in payload.items()})
            await stub.Upsert(q.UpsertPoints(collection_name=name, wait=True, points=[point]))
            return None
        if function == "delete":
            selector = q.PointsSelector(points=q.PointsIdsList(ids=[q.PointId(num=argument)]))
            await stub.Delete(q.DeletePoints(collection_name=name, wait=True, points=selector))
            return None
        if function in ("read", "get"):
            reply = await stub.Get(q.GetPoints(collection_name=name, ids=[q.PointId(num=argument)],
                                               with_payload=q.WithPayloadSelector(enable=True),
                                               read_consistency=consistency))
            return _read_value(function, argument, [(record.id.num, _version_payload(record.payload))
                                                    for record in reply.result])
        grpc_filter = q.Filter(must=[q.Condition(field=q.FieldCondition(key="kind", match=q.Match(keyword="set")))])
        if function == "count":
            counted = await stub.Count(q.CountPoints(collection_name=name, filter=grpc_filter, exact=True,
                                                     read_consistency=consistency))
            return int(counted.result.count)
        assert function == "search", function
        found = await stub.Search(q.SearchPoints(collection_name=name, vector=self._vector(), filter=grpc_filter,
                                                 limit=10, params=q.SearchParams(exact=self.state.rng.random() < 0.5),
                                                 read_consistency=consistency))
        return len(found.result)


_SET_FILTER: Final = {"must": [{"key": "kind", "match": {"value": "set"}}]}


def _point(argument: Any) -> tuple[int, dict[str, Any]]:
    """(point id, payload) of an add (a set id) or a write ([key, version])."""
    if isinstance(argument, list):
        key, version = argument
        return int(key), {"kind": "register", "key": int(key), "version": int(version)}
    return int(argument), {"kind": "set"}


def _grpc_value(value: Any) -> Any:
    if isinstance(value, str):
        return qdrant_grpc.Value(string_value=value)
    assert isinstance(value, int), value
    return qdrant_grpc.Value(integer_value=value)


def _version_payload(payload: Any) -> dict[str, Any]:
    """The ``version`` of a gRPC payload map, as a REST payload would hold it."""
    return {"version": payload["version"].integer_value} if "version" in payload else {}


def _read_value(function: str, argument: int, records: list[tuple[Any, dict[str, Any]]]) -> list[Any]:
    """The history value of a read ([key, version | null]) or a get ([id, found])."""
    matching = [payload for point_id, payload in records if point_id == argument]
    assert len(matching) <= 1, records
    if function == "get":
        return [argument, bool(matching)]
    version = matching[0].get("version") if matching else None
    return [argument, None if version is None else int(version)]


async def run(config: dict[str, Any], *, options: RunOptions, history_path: Path) -> None:
    """The ``run`` command: refuses an existing non-empty history (op ids would clash)."""
    if history_path.exists() and history_path.stat().st_size > 0:
        raise SystemExit(f"chaos.workload: {history_path} exists already; a run writes a fresh history")
    writer = HistoryWriter(history_path)
    workload = Workload(nodes=node_addresses(config), collection=str(config.get("collection", COLLECTION_DEFAULT)),
                        options=options, seed=int(config.get("seed", 0)), history=writer)
    try:
        count = await workload.run()
    finally:
        await workload.close()
        writer.close()
    print(json.dumps({"operations": count, "history": str(history_path)}))


# --------------------------------------------------------------- final


async def final(config: dict[str, Any], *, out: Path, converge_timeout_s: float) -> None:
    """The ``final`` command: wait for convergence, then read everything through every node."""
    nodes = node_addresses(config)
    collection = str(config.get("collection", COLLECTION_DEFAULT))
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
        started = time.monotonic()
        converged = await _converge(client, nodes, collection, started + converge_timeout_s)
        converged_after_s = time.monotonic() - started if converged else None
        replicas = await _answers(client, [(node, f"/collections/{collection}/cluster?digest=true")
                                           for node in nodes])
        states = await _answers(client, [(node, "/cluster") for node in nodes])
        reads = {str(node.node_id): await _final_read(client, node, collection) for node in nodes}
    document = {"nodes": reads, "replicas": replicas, "cluster_state": states, "converged_after_s": converged_after_s}
    out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps({"final": str(out), "converged_after_s": converged_after_s}))


async def _answers(client: httpx.AsyncClient, requests: list[tuple[NodeAddress, str]]) -> dict[str, Any]:
    """node id -> result of a GET, or {"error": ...}."""
    answers: dict[str, Any] = {}
    for node, path in requests:
        try:
            answers[str(node.node_id)] = await rest_call(client, "GET", f"{node.url}{path}")
        except (httpx.HTTPError, RestError, ValueError) as exc:
            answers[str(node.node_id)] = {"error": f"{type(exc).__name__}: {exc}"}
    return answers


async def _converge(client: httpx.AsyncClient, nodes: list[NodeAddress], collection: str, deadline: float) -> bool:
    """Whether, before ``deadline``, every replica of every shard was reported
    Active with one digest and all nodes' views of the cluster agreed."""
    while time.monotonic() < deadline:
        replicas = await _answers(client, [(node, f"/collections/{collection}/cluster?digest=true")
                                           for node in nodes])
        states = await _answers(client, [(node, "/cluster") for node in nodes])
        if _is_converged(replicas, states):
            return True
        await asyncio.sleep(POLL_S)
    return False


def _is_converged(replicas: dict[str, Any], states: dict[str, Any]) -> bool:
    if any("error" in answer for answer in [*replicas.values(), *states.values()]):
        return False
    views = [json.dumps(cluster_view(states[node], replicas[node]), sort_keys=True) for node in replicas]
    if len(set(views)) != 1:
        return False
    expected = {(shard["shard_id"], int(node)) for answer in replicas.values()
                for shard in (answer.get("qcluster") or {}).get("shards", []) for node in shard["replicas"]}
    digests = shard_digests(replicas)
    reported = {(shard, int(node)) for shard, entries in digests.items() for node in entries}
    agreed = all(len({entry["digest"] for entry in entries.values()}) == 1
                 and all(entry["state"] == "Active" for entry in entries.values()) for entries in digests.values())
    return agreed and expected <= reported


async def _final_read(client: httpx.AsyncClient, node: NodeAddress, collection: str) -> dict[str, Any]:
    """Every point id and register version through ``node`` at consistency=all (a few bounded tries)."""
    error = "not tried"
    for attempt in range(FINAL_ATTEMPTS):
        if attempt:
            await asyncio.sleep(FINAL_RETRY_PAUSE_S)
        try:
            return await _scroll_all(client, node, collection)
        except (httpx.HTTPError, RestError, KeyError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
    return {"ids": [], "registers": {}, "error": error}


async def _scroll_all(client: httpx.AsyncClient, node: NodeAddress, collection: str) -> dict[str, Any]:
    ids: list[int] = []
    registers: dict[str, int] = {}
    offset: Any = None
    for _ in range(SCROLL_PAGES_MAX):
        page = await rest_call(client, "POST", f"{node.url}/collections/{collection}/points/scroll",
                               params={"consistency": "all"},
                               body={"limit": SCROLL_PAGE, "offset": offset, "with_payload": True})
        for record in page["points"]:
            ids.append(record["id"])
            payload = record.get("payload") or {}
            if payload.get("kind") == "register":
                registers[str(payload["key"])] = int(payload["version"])
        offset = page.get("next_page_offset")
        if offset is None:
            return {"ids": ids, "registers": registers, "error": None}
    raise ValueError(f"more than {SCROLL_PAGES_MAX} scroll pages")


# ----------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chaos.workload", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("setup", "run", "final"):
        sub = commands.add_parser(name)
        sub.add_argument("--config", type=Path, required=True)
    run_parser = commands.choices["run"]
    run_parser.add_argument("--duration", type=float, required=True, help="seconds")
    run_parser.add_argument("--rate", type=float, default=40.0, help="operations per second")
    run_parser.add_argument("--history", type=Path, required=True)
    run_parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    run_parser.add_argument("--concurrency", type=int, default=256, help="operations in flight at most")
    final_parser = commands.choices["final"]
    final_parser.add_argument("--out", type=Path, required=True)
    final_parser.add_argument("--converge-timeout", type=float, default=60.0, help="seconds")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point; refuses to run outside a harness network namespace."""
    from chaos.netns import require_netns  # imported late: the checker's tests need no part of the environment

    require_netns()
    arguments = _parser().parse_args(argv)
    config = json.loads(arguments.config.read_text(encoding="utf-8"))
    if arguments.command == "setup":
        asyncio.run(setup(config))
    elif arguments.command == "run":
        options = RunOptions(duration_s=arguments.duration, rate=arguments.rate, timeout_s=arguments.timeout,
                             concurrency=arguments.concurrency, stop_file=arguments.config.parent / "stop")
        asyncio.run(run(config, options=options, history_path=arguments.history))
    else:
        asyncio.run(final(config, out=arguments.out, converge_timeout_s=arguments.converge_timeout))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1:])
