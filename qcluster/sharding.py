"""Point id -> hash slot -> shard.

Ids hash into a fixed number of slots, and slots are assigned to shards, so a
later resharding moves whole slots rather than rehashing every point. The
hash is stable across processes and versions (crc32 of a canonical encoding),
never Python's randomized ``hash``.
"""

from __future__ import annotations

import uuid
import zlib
from typing import Final

from qcluster.types import PointId

__all__ = ["SLOT_COUNT", "shard_of", "slot_of"]

SLOT_COUNT: Final = 4096


def slot_of(point_id: PointId) -> int:
    if isinstance(point_id, int):
        data = b"i" + point_id.to_bytes(8, "little")
    else:
        data = b"u" + uuid.UUID(point_id).bytes
    return zlib.crc32(data) % SLOT_COUNT


def shard_of(point_id: PointId, *, shard_number: int) -> int:
    """The shard of a point under the initial, even slot assignment."""
    assert shard_number > 0
    return slot_of(point_id) % shard_number
