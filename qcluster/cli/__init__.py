"""The ``qcluster`` command.

    qcluster serve ...                      run a node
    qcluster import ...                     bulk-load .npy / .jsonl files, resumable
    qcluster collections list|info|create|delete
    qcluster query ...                      a quick look at nearest neighbours
    qcluster cluster status                 nodes, shards, replicas and their states
    qcluster dev-cluster --nodes 3          a local cluster on 127.0.0.1 to try
    qcluster chaos run|check|cleanup        fault-injection runs (docs/chaos.md)

Every client command takes ``--url``, ``--grpc-port`` and ``--api-key`` and
``--json`` for scripts; exit codes are listed in ``qcluster.cli._common``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from qcluster import __version__
from qcluster.cli import admin, chaos, dev_cluster, importer, serve

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qcluster", description="qcluster vector database")
    parser.add_argument("--version", action="version", version=f"qcluster {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(commands)
    importer.add_parser(commands)
    admin.add_parsers(commands)
    dev_cluster.add_parser(commands)
    chaos.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
