"""``qcluster import``: bulk-load vectors (.npy) with payloads (.jsonl), or a
.jsonl of ``{"id", "vector", "payload"}`` objects, into any node.

Resumable: every acknowledged prefix of rows is recorded in a state file
(default ``./.qcluster-import-<collection>.json``). Run the same command
again after an interruption (Ctrl-C, SIGTERM, kill -9, a lost node) and it
continues after the last acknowledged row; rows it sends twice are upserts of
the same ids, so nothing is duplicated. The state file is removed when the
import completes.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import pathlib
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Final

import numpy as np
from qdrant_client import models

from qcluster.cli._common import UsageError, add_client_args, command, connect, emit

__all__ = ["add_parser"]

_STATE_VERSION: Final = 1
# The state file is rewritten at most this often (and always when the import stops).
_STATE_WRITE_INTERVAL_S: Final = 0.2
_DISTANCES: Final = {distance.value.lower(): distance for distance in models.Distance}


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("import", help="bulk-load vectors and payloads (resumable)",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--vectors", type=pathlib.Path, help=".npy matrix, one row per point (any numeric dtype; sent as float32)")
    source.add_argument("--jsonl", type=pathlib.Path,
                        help='.jsonl[.gz] of {"id", "vector", "payload"} objects ("id" defaults to the line number)')
    parser.add_argument("--payloads", type=pathlib.Path, help=".jsonl[.gz], one object (or null) per row of --vectors")
    parser.add_argument("--ids", type=pathlib.Path,
                        help="ids, one per row: .npy of integers or a text file with one integer or UUID per line "
                             "(default: the row numbers)")
    parser.add_argument("--vector-name", default="", help="named vector to write (default: the unnamed vector)")
    parser.add_argument("--create", action="store_true", help="create the collection if it does not exist")
    parser.add_argument("--distance", default="Cosine", help="with --create: Cosine, Dot, Euclid or Manhattan")
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--parallel", type=int, default=2, help="batches in flight at once")
    parser.add_argument("--state-file", type=pathlib.Path, default=None,
                        help="where progress is recorded (default ./.qcluster-import-<collection>.json)")
    parser.add_argument("--restart", action="store_true", help="ignore a saved state and start from row 0")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_client_args(parser)
    parser.set_defaults(run=run)


@contextlib.contextmanager
def _open_text(path: pathlib.Path) -> Iterator[IO[str]]:
    try:
        handle: IO[str] = gzip.open(path, "rt") if path.suffix == ".gz" else path.open()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from exc
    with handle:
        yield handle


def _json_lines(path: pathlib.Path) -> list[Any]:
    values = []
    with _open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{number}: not valid JSON: {exc.msg}") from exc
    return values


def _load_ids(path: pathlib.Path) -> list[Any]:
    if path.suffix == ".npy":
        array = np.load(path)
        if array.ndim != 1 or array.dtype.kind not in "iu":
            raise UsageError(f"{path}: expected a 1-d array of integers, got {array.dtype} {array.shape}")
        return [int(value) for value in array]
    ids: list[Any] = []
    with _open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                continue
            if text.isdigit():
                ids.append(int(text))
                continue
            try:
                ids.append(str(uuid.UUID(text)))
            except ValueError as exc:
                raise UsageError(f"{path}:{number}: {text!r} is neither an unsigned integer nor a UUID") from exc
    return ids


@dataclass(frozen=True, slots=True)
class _Source:
    vectors: np.ndarray
    ids: list[Any] | None
    payloads: list[Any] | None
    files: list[pathlib.Path]


def _from_npy(args: argparse.Namespace) -> _Source:
    try:
        vectors = np.load(args.vectors, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise UsageError(f"{args.vectors}: cannot read as .npy: {exc}") from exc
    if vectors.ndim != 2 or vectors.dtype.kind not in "iuf":
        raise UsageError(f"{args.vectors}: expected a 2-d numeric matrix, got {vectors.dtype} {vectors.shape}")
    files = [args.vectors]
    payloads = None
    if args.payloads is not None:
        payloads = _json_lines(args.payloads)
        files.append(args.payloads)
        if len(payloads) != vectors.shape[0]:
            raise UsageError(f"{args.payloads}: {len(payloads)} payloads for {vectors.shape[0]} vectors")
    ids = None
    if args.ids is not None:
        ids = _load_ids(args.ids)
        files.append(args.ids)
        if len(ids) != vectors.shape[0]:
            raise UsageError(f"{args.ids}: {len(ids)} ids for {vectors.shape[0]} vectors")
    return _Source(vectors=vectors, ids=ids, payloads=payloads, files=files)


def _from_jsonl(args: argparse.Namespace) -> _Source:
    if args.payloads is not None or args.ids is not None:
        raise UsageError("--payloads and --ids go with --vectors; a --jsonl line carries its own")
    objects = _json_lines(args.jsonl)
    if not objects:
        raise UsageError(f"{args.jsonl}: no points")
    rows, ids, payloads = [], [], []
    for number, item in enumerate(objects):
        if not isinstance(item, dict) or not isinstance(item.get("vector"), list):
            raise UsageError(f"{args.jsonl}: point {number}: expected an object with a \"vector\" array")
        rows.append(item["vector"])
        ids.append(item.get("id", number))
        payloads.append(item.get("payload"))
    try:
        vectors = np.asarray(rows, dtype=np.float32)
    except ValueError as exc:
        raise UsageError(f"{args.jsonl}: vectors must all have the same length: {exc}") from exc
    return _Source(vectors=vectors, ids=ids, payloads=payloads, files=[args.jsonl])


def _fingerprint(files: list[pathlib.Path]) -> list[dict[str, Any]]:
    found = []
    for path in files:
        stat = path.stat()
        found.append({"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return found


class _State:
    """The resumable progress of one import, written atomically."""

    def __init__(self, path: pathlib.Path, identity: dict[str, Any], rows: int) -> None:
        self.path = path
        self.identity = identity
        self.rows = rows
        self.next_row = 0
        self._written_at = 0.0

    def load(self, *, restart: bool) -> int:
        """The row to start from: 0, or where a matching earlier run stopped."""
        if restart or not self.path.exists():
            return 0
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"{self.path}: unreadable import state ({exc}); use --restart") from exc
        if saved.get("version") != _STATE_VERSION or saved.get("identity") != self.identity:
            raise UsageError(f"{self.path}: saved by another import (other files, collection or node); "
                             "use --restart to start over or --state-file to keep both")
        self.next_row = int(saved["next_row"])
        if not 0 <= self.next_row <= self.rows:
            raise UsageError(f"{self.path}: next_row {self.next_row} is outside 0..{self.rows}; use --restart")
        return self.next_row

    def advance(self, next_row: int) -> None:
        self.next_row = next_row
        if time.monotonic() - self._written_at >= _STATE_WRITE_INTERVAL_S:
            self.save()

    def save(self) -> None:
        body = {"version": _STATE_VERSION, "identity": self.identity, "rows": self.rows, "next_row": self.next_row,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(body, indent=1))
        os.replace(temporary, self.path)
        self._written_at = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _distance(args: argparse.Namespace) -> models.Distance:
    distance = _DISTANCES.get(args.distance.lower())
    if distance is None:
        raise UsageError(f"--distance: expected one of Cosine, Dot, Euclid, Manhattan, got {args.distance!r}")
    return distance


def _ensure_collection(client: Any, args: argparse.Namespace, dim: int) -> None:
    if not args.create or client.qdrant.collection_exists(args.collection):
        return
    distance = _distance(args)
    params = models.VectorParams(size=dim, distance=distance)
    client.qdrant.create_collection(args.collection,
                                    vectors_config={args.vector_name: params} if args.vector_name else params)


@command
def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.parallel < 1:
        raise UsageError("--batch-size and --parallel must be at least 1")
    _distance(args)
    source = _from_npy(args) if args.vectors is not None else _from_jsonl(args)
    rows, dim = source.vectors.shape
    identity = {"url": args.url, "collection": args.collection, "vector_name": args.vector_name,
                "files": _fingerprint(source.files)}
    state = _State(args.state_file or pathlib.Path(f".qcluster-import-{args.collection}.json"), identity, rows)
    start = state.load(restart=args.restart)
    if start:
        print(f"qcluster: resuming {args.collection!r} at row {start} of {rows} (state in {state.path})",
              file=sys.stderr)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    client = connect(args)
    try:
        _ensure_collection(client, args, dim)
        vectors = {args.vector_name: source.vectors} if args.vector_name else source.vectors
        result = client.upload(args.collection, vectors, ids=source.ids, payloads=source.payloads,
                               batch_size=args.batch_size, parallel=args.parallel, start=start,
                               progress=not (args.no_progress or args.json), on_checkpoint=state.advance)
        total = client.count(args.collection)
    except BaseException:
        state.save()
        print(f"qcluster: import stopped; rows [0, {state.next_row}) of {rows} are written. "
              f"Run the same command again to resume (state in {state.path}).", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        client.close()
    state.remove()
    summary = {"collection": args.collection, "rows": rows, "resumed_from": start, "written": result.points,
               "batches": result.batches, "retries": result.retries, "seconds": round(result.seconds, 3),
               "points_per_s": round(result.points_per_s), "collection_points": total}
    emit(args, summary, f"imported {result.points} points into {args.collection!r} "
                        f"(rows {start}..{rows}) in {result.seconds:.1f} s: {result.points_per_s:,.0f} points/s, "
                        f"{result.retries} retries; the collection now has {total} points")
    return 0
