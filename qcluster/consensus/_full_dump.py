"""The Raft full dump file: our replacement for pysyncobj's pickled one.

pysyncobj compacts its log by writing a "full dump" — the state machine plus
the two log entries around the last applied index and the member addresses —
and sends that file to a follower that lags behind the compacted log. By
default the dump is a gzip'd pickle of the SyncObj's attributes. With
``SyncObjConf(serializer=..., deserializer=...)`` it calls our functions
instead, with the Raft part as ``(last_entry, previous_entry, members)``,
and restores the state machine only through what our deserializer does. So
the dump holds our explicitly encoded ClusterState (``state_codec``) and the
Raft part in plain msgpack; nothing of ours is ever pickled.

File layout::

    MAGIC (8 bytes) | format version (1 byte) | CRC32 of body (4 bytes, big endian) | body
    body = msgpack [state bytes, last entry, previous entry, member addresses]
    entry = [command bytes, raft index, raft term]

pysyncobj writes our output to ``<dump>.tmp`` and renames it over the dump
(and writes a received snapshot the same way), so a reader never sees a torn
file; the CRC catches damage at rest. We fsync the file before the rename:
the dump is the only copy of everything compacted out of the journal.

Threading: both functions run on pysyncobj's tick thread (compaction, or a
snapshot received from the leader), and ``read_dump`` also runs once at
start, before the tick thread exists, to refuse a damaged dump early.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeAlias

import msgpack

from qcluster.errors import DataCorruption

__all__ = ["DUMP_FORMAT_VERSION", "FullDump", "RaftEntry", "read_dump", "write_dump"]

_MAGIC: Final = b"QCRAFTD\x00"
DUMP_FORMAT_VERSION: Final = 1
_HEADER = struct.Struct(">8sBI")

# One Raft log entry as pysyncobj keeps it: (command bytes, index, term). It
# must stay a tuple: pysyncobj compares restored entries with its journal's
# tuples, and a list would never compare equal and would make it drop the
# journal entries after the dump.
RaftEntry: TypeAlias = tuple[bytes, int, int]


@dataclass(frozen=True, slots=True)
class FullDump:
    state: bytes  # state_codec.encode_state of the state after ``last_entry``
    last_entry: RaftEntry
    previous_entry: RaftEntry
    member_addresses: tuple[str, ...]  # every Raft member's p2p address, sorted


def write_dump(path: Path, dump: FullDump) -> None:
    """Write and fsync ``path`` (pysyncobj renames it into place afterwards)."""
    assert dump.last_entry[1] == dump.previous_entry[1] + 1, "the two entries around the last applied index"
    assert list(dump.member_addresses) == sorted(dump.member_addresses)
    body = msgpack.packb(
        [dump.state, list(dump.last_entry), list(dump.previous_entry), list(dump.member_addresses)],
        use_bin_type=True,
    )
    header = _HEADER.pack(_MAGIC, DUMP_FORMAT_VERSION, zlib.crc32(body))
    with open(path, "wb") as file:
        file.write(header + body)
        file.flush()
        os.fsync(file.fileno())
    assert path.stat().st_size == len(header) + len(body)


def read_dump(path: Path) -> FullDump:
    """The dump at ``path``; ``DataCorruption`` if it is not exactly one we wrote."""
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        raise DataCorruption(f"raft dump {path}: {len(data)} bytes is shorter than its header")
    magic, version, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise DataCorruption(f"raft dump {path}: not a qcluster dump (a pysyncobj pickle dump is not accepted)")
    if version != DUMP_FORMAT_VERSION:
        raise DataCorruption(
            f"raft dump {path}: unknown format version {version} (this node reads {DUMP_FORMAT_VERSION})"
        )
    body = data[_HEADER.size :]
    if zlib.crc32(body) != crc:
        raise DataCorruption(f"raft dump {path}: checksum mismatch")
    try:
        raw = msgpack.unpackb(body, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DataCorruption(f"raft dump {path}: not valid msgpack ({exc})") from exc
    if not isinstance(raw, list) or len(raw) != 4:
        raise DataCorruption(f"raft dump {path}: expected 4 fields")
    state, last, previous, members = raw
    if not isinstance(state, bytes):
        raise DataCorruption(f"raft dump {path}: the state is not bytes")
    if not isinstance(members, list) or not all(isinstance(address, str) for address in members):
        raise DataCorruption(f"raft dump {path}: the members are not a list of addresses")
    dump = FullDump(
        state=state,
        last_entry=_entry(last, path),
        previous_entry=_entry(previous, path),
        member_addresses=tuple(members),
    )
    if dump.last_entry[1] != dump.previous_entry[1] + 1:
        raise DataCorruption(f"raft dump {path}: its two entries are not consecutive")
    return dump


def _entry(raw: object, path: Path) -> RaftEntry:
    if not isinstance(raw, list) or len(raw) != 3:
        raise DataCorruption(f"raft dump {path}: a log entry is not [command, index, term]")
    command, index, term = raw
    if not isinstance(command, bytes):
        raise DataCorruption(f"raft dump {path}: a log entry's command is not bytes")
    for number in (index, term):
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise DataCorruption(f"raft dump {path}: a log entry's index or term is not an unsigned integer")
    return (command, index, term)
