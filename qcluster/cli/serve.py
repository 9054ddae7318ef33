"""``qcluster serve --data-dir DIR --host HOST --http-port N --grpc-port N [--config FILE]``.

Logs are structured: one JSON object per line on stderr (``log.format: text``
gives plain lines for people).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import pathlib
import sys
from typing import Any, Final

from qcluster.config import ConfigError, Settings, load_settings, log_level_number

__all__ = ["add_parser", "run"]

_RESERVED_RECORD_KEYS: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, the ``extra`` fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED_RECORD_KEYS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level_number(settings))


def add_parser(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run a node")
    serve.add_argument("--config", type=pathlib.Path, default=None, help="YAML config file")
    serve.add_argument("--data-dir", default=None, help="storage directory (storage.data_dir)")
    serve.add_argument("--host", default=None, help="address to bind (service.host)")
    serve.add_argument("--http-port", type=int, default=None, help="REST port (service.http_port)")
    serve.add_argument("--grpc-port", type=int, default=None, help="gRPC port (service.grpc_port)")
    serve.add_argument("--log-level", default=None, help="log.level")
    cluster = serve.add_argument_group("cluster mode (on with --node-id)")
    cluster.add_argument("--node-id", type=int, default=None, help="this node's id, an unsigned integer (cluster.node_id)")
    cluster.add_argument("--p2p-host", default=None,
                         help="address peers reach this node's Raft port at (cluster.p2p_host; default --host)")
    cluster.add_argument("--p2p-port", type=int, default=None, help="Raft port (cluster.p2p_port, default 6335)")
    cluster.add_argument("--peers", default=None,
                         help="members of the initial cluster, HOST:P2P,HOST:P2P (this node's own address may be "
                              "listed too, so every member can share one list) (cluster.peers)")
    cluster.add_argument("--join", default=None, metavar="HOST:P2P",
                         help="join a running cluster through this member's p2p (Raft) address: the node asks it "
                              "for the members and to be added; --peers, if given, are asked when it does not "
                              "answer (cluster.join)")
    cluster.add_argument("--cluster-secret", default=None,
                         help="shared secret, required (cluster.secret); write --cluster-secret=S if S begins with -")
    serve.set_defaults(run=run)


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        "service": {"host": args.host, "http_port": args.http_port, "grpc_port": args.grpc_port},
        "storage": {"data_dir": args.data_dir},
        "log": {"level": args.log_level},
        "cluster": {"node_id": args.node_id, "p2p_host": args.p2p_host, "p2p_port": args.p2p_port,
                    "peers": args.peers, "join": args.join, "secret": args.cluster_secret},
    }
    return load_settings(config_file=args.config, environ=os.environ, overrides=overrides)


def run(args: argparse.Namespace) -> int:
    try:
        settings = _settings_from(args)
    except ConfigError as exc:
        print(f"qcluster: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    # libgomp reads this once, when FAISS loads it, so it is set before the
    # node's imports. PASSIVE: an OpenMP thread that has finished its share of
    # a FAISS call sleeps instead of spinning for the next one. The storage
    # threads, the event loop and (on a small machine) the clients need that
    # core: 8 REST clients on 2 cores, one query batch at a time, answered as
    # many queries with about 0.55 instead of 0.8-1.0 ms of server CPU each.
    # An explicit OMP_WAIT_POLICY in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "faiss" in sys.modules:
        logging.getLogger(__name__).warning("FAISS was loaded before OMP_WAIT_POLICY was set; it has no effect")
    from qcluster.node import serve  # noqa: PLC0415 - keep `--help` fast and free of aiohttp

    return serve(settings)
