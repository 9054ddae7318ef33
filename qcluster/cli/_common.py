"""What the client commands share: connection flags, output, exit codes.

Exit codes (documented in docs/cli.md):

    0  success
    1  unexpected error (a bug: please report it)
    2  usage error (bad flags, unreadable or inconsistent input files)
    3  the node cannot be reached or is unavailable
    4  not found (collection, point)
    5  conflict (already exists, cluster precondition)
    6  the node rejected the request as invalid (the message names the field)
    7  unauthorized or forbidden (API key)
    130 interrupted (Ctrl-C); `qcluster import` can be resumed
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from qcluster.client import Client
from qcluster.client.errors import as_qcluster_error
from qcluster.errors import (
    AlreadyExists,
    DeadlineExceeded,
    Forbidden,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    Overloaded,
    PreconditionFailed,
    QclusterError,
    Unauthorized,
    Unavailable,
)

__all__ = ["EXIT_USAGE", "UsageError", "add_client_args", "command", "connect", "emit", "table"]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNAVAILABLE: Final = 3
EXIT_NOT_FOUND: Final = 4
EXIT_CONFLICT: Final = 5
EXIT_INVALID: Final = 6
EXIT_AUTH: Final = 7
EXIT_INTERRUPTED: Final = 130

_EXIT_FOR: Final[tuple[tuple[type[QclusterError], int], ...]] = (
    (NotFound, EXIT_NOT_FOUND), (AlreadyExists, EXIT_CONFLICT), (PreconditionFailed, EXIT_CONFLICT),
    (InvalidRequest, EXIT_INVALID), (LimitExceeded, EXIT_INVALID), (Unauthorized, EXIT_AUTH), (Forbidden, EXIT_AUTH),
    (Unavailable, EXIT_UNAVAILABLE), (DeadlineExceeded, EXIT_UNAVAILABLE), (Overloaded, EXIT_UNAVAILABLE),
)


class UsageError(Exception):
    """Bad flags or input files (exit 2)."""


def add_client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("QCLUSTER_URL", "http://localhost:6333"),
                        help="REST URL of any node (env QCLUSTER_URL; default http://localhost:6333)")
    parser.add_argument("--grpc-port", type=int, default=int(os.environ.get("QCLUSTER_GRPC_PORT", "6334")),
                        help="that node's gRPC port (env QCLUSTER_GRPC_PORT; default 6334)")
    parser.add_argument("--api-key", default=os.environ.get("QCLUSTER_API_KEY"),
                        help="API key (env QCLUSTER_API_KEY)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")


def connect(args: argparse.Namespace) -> Client:
    return Client(args.url, grpc_port=args.grpc_port, api_key=args.api_key, timeout=args.timeout)


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """``data`` as JSON with ``--json``, else ``text``."""
    if args.json:
        print(json.dumps(data, default=str, indent=2))
    elif text:
        print(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(header) for header in headers]] + [["" if value is None else str(value) for value in row]
                                                     for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def command(function: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a client command: errors become a one-line message and an exit code."""

    @functools.wraps(function)
    def run(args: argparse.Namespace) -> int:
        try:
            return function(args)
        except KeyboardInterrupt:
            print("qcluster: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except UsageError as error:
            _report(args, "usage", str(error))
            return EXIT_USAGE
        except Exception as error:  # noqa: BLE001 - every failure ends as a message and an exit code
            mapped = as_qcluster_error(error)
            if mapped is None:
                raise
            _report(args, mapped.code, mapped.message, notes=getattr(error, "__notes__", ()))
            return next((code for cls, code in _EXIT_FOR if isinstance(mapped, cls)), EXIT_ERROR)

    return run


def _report(args: argparse.Namespace, code: str, message: str, *, notes: Sequence[str] = ()) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "code": code, "notes": list(notes)}))
    print(f"qcluster: error: {message}", file=sys.stderr)
    for note in notes:
        print(f"qcluster: {note}", file=sys.stderr)
