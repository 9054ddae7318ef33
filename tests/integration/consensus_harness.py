"""A Raft member in its own process, driven over stdin/stdout by
``test_consensus.py``. Holds no tests: it is named ``test_consensus_*`` only
because the consensus tests own that name; pytest imports it and finds none.

Run as a script::

    python consensus_harness.py --node-id 1 --address 127.0.0.1:7001 \
        --peers 127.0.0.1:7002,127.0.0.1:7003 --secret S --data-dir DIR

It prints one JSON line ``{"event": "ready", ...}`` once the Raft port is
bound, then answers each JSON request line on stdin with one JSON line:

- ``{"op": "status"}`` -> RaftStatus fields, ``digest`` (sha256 of the encoded
  state) and ``leader_node_id``
- ``{"op": "propose", "data_hex": "..", "timeout_s": t}`` -> the Result
  (``code``, ``version``) and ``latency_ms``, or ``{"error": class, "message"}``
- ``{"op": "propose_as_leader", "data_hex": "..", "timeout_s": t}`` -> likewise,
  through ``RaftNode.propose_as_leader`` (the data must be a command)
- ``{"op": "wait_version", "version": v, "timeout_s": t}``
- ``{"op": "compact"}``, ``{"op": "add_member" | "remove_member", "address": a, "timeout_s": t}``
- ``{"op": "quit"}`` -> closes the node and exits.

Bounded: it exits at end of input (its test died) or after ``--lifetime-s``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from qcluster.cluster.commands import decode
from qcluster.consensus import RaftNode, RaftSettings, encode_state
from qcluster.errors import QclusterError

_CLOSE_TIMEOUT_S = 3.0
_REQUESTS_QUEUED_MAX = 64


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--node-id", type=int, required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--peers", default="")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--compaction-entries", type=int, default=5_000)
    parser.add_argument("--lifetime-s", type=float, default=120.0)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = RaftSettings(
        node_id=arguments.node_id,
        p2p_address=arguments.address,
        peer_addresses=tuple(peer for peer in arguments.peers.split(",") if peer),
        cluster_secret=arguments.secret,
        data_dir=arguments.data_dir,
        log_compaction_min_entries=arguments.compaction_entries,
    )
    asyncio.run(_serve(settings, lifetime_s=arguments.lifetime_s))


async def _serve(settings: RaftSettings, *, lifetime_s: float) -> None:
    loop = asyncio.get_running_loop()
    requests: asyncio.Queue[str | None] = asyncio.Queue(maxsize=_REQUESTS_QUEUED_MAX)

    def read_stdin() -> None:
        # A daemon thread: a blocked readline must not keep the process alive.
        for line in sys.stdin:
            asyncio.run_coroutine_threadsafe(requests.put(line), loop).result()
        asyncio.run_coroutine_threadsafe(requests.put(None), loop).result()

    started = time.monotonic()
    node = RaftNode(settings)
    await node.start()
    _reply({"event": "ready", "start_s": time.monotonic() - started})
    threading.Thread(target=read_stdin, daemon=True).start()
    try:
        async with asyncio.timeout(lifetime_s):
            while (line := await requests.get()) is not None:
                request = json.loads(line)
                if request["op"] == "quit":
                    break
                _reply({"id": request.get("id"), **await _answer(node, request)})
    except TimeoutError:
        print(f"harness lifetime of {lifetime_s} s is over", file=sys.stderr)
    finally:
        await node.close(timeout_s=_CLOSE_TIMEOUT_S)
    _reply({"event": "closed"})


async def _answer(node: RaftNode, request: dict[str, Any]) -> dict[str, Any]:
    try:
        match request["op"]:
            case "status":
                state = node.state()
                return {
                    **asdict(node.status()),
                    "digest": hashlib.sha256(encode_state(state)).hexdigest(),
                    "leader_node_id": node.leader_node_id(),
                    "leads_quorum": node.leads_quorum(),
                    "node_ids": sorted(state.nodes),
                }
            case "propose":
                started = time.monotonic()
                result = await node.propose_encoded(bytes.fromhex(request["data_hex"]), timeout_s=request["timeout_s"])
                latency_ms = (time.monotonic() - started) * 1000
                return {"code": result.code.value, "message": result.message, "version": result.version,
                        "latency_ms": latency_ms}
            case "propose_as_leader":
                result = await node.propose_as_leader(decode(bytes.fromhex(request["data_hex"])),
                                                      timeout_s=request["timeout_s"])
                return {"code": result.code.value, "message": result.message, "version": result.version}
            case "wait_version":
                state = await node.wait_for_version(request["version"], timeout_s=request["timeout_s"])
                return {"version": state.version}
            case "compact":
                node.force_log_compaction()
                return {}
            case "add_member":
                await node.add_member(request["address"], timeout_s=request["timeout_s"])
                return {}
            case "remove_member":
                await node.remove_member(request["address"], timeout_s=request["timeout_s"])
                return {}
            case other:
                return {"error": "UnknownOp", "message": str(other)}
    except QclusterError as exc:
        return {"error": type(exc).__name__, "message": exc.message}


def _reply(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


if __name__ == "__main__":
    main()
