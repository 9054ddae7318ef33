"""What replicas compare to prove they hold the same points, and what a
returning replica reads to catch up.

``content_digest`` is order-independent: each live point hashes to 128 bits
(its id, every vector's float32 bytes by name, its payload as canonical
JSON), and the digests are added modulo 2**128. Two shards agree exactly when
their counts and sums agree (up to hash collisions); unlike XOR, a point held
twice changes the sum. Segment layout, seq numbers and tombstones do not enter
it, so a replica that was rebuilt from a snapshot or compacted differently
still matches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
import orjson

from qcluster.engine.segment import Segment

__all__ = ["ContentDigest", "content_digest"]

_MODULUS: Final = 1 << 128


@dataclass(frozen=True, slots=True)
class ContentDigest:
    points: int
    digest: str  # 32 hex digits

    def to_json(self) -> dict[str, object]:
        return {"points_count": self.points, "content_digest": self.digest}


def _point_digest(point_id: object, vectors: dict[str, np.ndarray], payload: object) -> int:
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(orjson.dumps(point_id))
    for name in sorted(vectors):
        hasher.update(b"\x00v" + name.encode())
        hasher.update(np.ascontiguousarray(vectors[name], dtype="<f4").tobytes())
    hasher.update(b"\x00p" + orjson.dumps(payload or {}, option=orjson.OPT_SORT_KEYS))
    return int.from_bytes(hasher.digest(), "little")


def content_digest(segments: Iterable[Segment]) -> ContentDigest:
    """The digest of every live point of ``segments`` (hold the shard's read lock)."""
    total = 0
    points = 0
    for segment in segments:
        for offset in np.flatnonzero(segment.live_mask()).tolist():
            total = (total + _point_digest(segment.point_id(offset), segment.row_vectors(offset),
                                           segment.payload(offset))) % _MODULUS
            points += 1
    return ContentDigest(points=points, digest=f"{total:032x}")
