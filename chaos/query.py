"""A look at the cluster from inside the client namespace (stdlib only).

    python -m chaos.query ready URL...
        {"URL": {"ready": bool, "status": int | null, "error": str | null}, ...}
    python -m chaos.query cluster [--collection chaos] URL...
        {"URL": {"peer_id": int, "leader": int | null, "has_quorum": bool,
                 "shards": [{"shard_id", "primary", "in_sync", "replicas"}] | null,
                 "error": str | null}, ...}

The orchestrator runs it through ``ip netns exec qc<id>-c``; it refuses to
run in the host namespace (``require_netns``). Each request has a timeout.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Final

from chaos.netns import require_netns

__all__ = ["main"]

REQUEST_TIMEOUT_S: Final = 3.0
URL_COUNT_MAX: Final = 16


def _get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET; HTTP errors are answers, not exceptions."""
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def ready(url: str) -> dict[str, Any]:
    """Whether ``url``'s /readyz answers 200."""
    try:
        status, _ = _get(f"{url}/readyz")
    except (OSError, ValueError) as exc:
        return {"ready": False, "status": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"ready": status == 200, "status": status, "error": None}


def _result(body: bytes) -> Any:
    """The ``result`` of an enveloped answer (the whole body if not enveloped)."""
    document = json.loads(body)
    return document.get("result", document) if isinstance(document, dict) else document


def cluster(url: str, collection: str) -> dict[str, Any]:
    """This node's view: its id, the Raft leader and the collection's shards."""
    view: dict[str, Any] = {"peer_id": None, "leader": None, "has_quorum": False, "shards": None, "error": None}
    try:
        status, body = _get(f"{url}/cluster")
        if status != 200:
            view["error"] = f"GET /cluster answered {status}"
            return view
        state = _result(body)
        view["peer_id"] = state.get("peer_id")
        view["leader"] = state.get("raft_info", {}).get("leader")
        view["has_quorum"] = bool(state.get("qcluster", {}).get("has_quorum"))
        status, body = _get(f"{url}/collections/{collection}/cluster")
        if status == 200:
            shards = _result(body).get("qcluster", {}).get("shards", [])
            view["shards"] = [{key: shard.get(key) for key in ("shard_id", "primary", "in_sync", "replicas")}
                              for shard in shards]
    except (OSError, ValueError, AttributeError) as exc:
        view["error"] = f"{type(exc).__name__}: {exc}"
    return view


def main(argv: list[str] | None = None) -> int:
    require_netns()
    parser = argparse.ArgumentParser(prog="python -m chaos.query", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["ready", "cluster"])
    parser.add_argument("--collection", default="chaos")
    parser.add_argument("urls", nargs="+", metavar="URL")
    args = parser.parse_args(argv)
    if len(args.urls) > URL_COUNT_MAX:
        parser.error(f"at most {URL_COUNT_MAX} URLs")
    if args.what == "ready":
        answers = {url: ready(url) for url in args.urls}
    else:
        answers = {url: cluster(url, args.collection) for url in args.urls}
    json.dump(answers, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
