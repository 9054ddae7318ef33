"""Every bound qcluster enforces, in one place.

A request that crosses one of these gets ``LimitExceeded`` (HTTP 400) naming
the bound. ``docs/configuration.md`` lists them for users. The relationships
between them are asserted at import time, so an edit that breaks one fails
loudly.
"""

from __future__ import annotations

__all__ = [
    "BATCH_OPERATIONS_MAX",
    "COLLECTION_NAME_LENGTH_MAX",
    "FILTER_CONDITIONS_MAX",
    "FILTER_DEPTH_MAX",
    "HNSW_EF_MAX",
    "HNSW_M_MAX",
    "KEY_LENGTH_MAX",
    "OFFSET_MAX",
    "PAYLOAD_BYTES_MAX",
    "POINTS_PER_REQUEST_MAX",
    "QUERY_BATCH_MAX",
    "READ_CONSISTENCY_FACTOR_MAX",
    "REQUEST_BODY_BYTES_MAX",
    "SCROLL_LIMIT_MAX",
    "TOP_K_MAX",
    "VECTOR_DIM_MAX",
    "VECTOR_NAMES_MAX",
    "WAL_RECORD_BYTES_MAX",
]

# Points in one upsert / retrieve / delete-by-ids / update-vectors request.
POINTS_PER_REQUEST_MAX = 10_000
# Operations in one /points/batch request.
BATCH_OPERATIONS_MAX = 1_000
# Searches in one /points/query/batch request.
QUERY_BATCH_MAX = 1_000
# Serialized (JSON) size of one point's payload.
PAYLOAD_BYTES_MAX = 1 * 1024 * 1024
# Size of one HTTP request body.
REQUEST_BODY_BYTES_MAX = 256 * 1024 * 1024
# Dimensions of one dense vector.
VECTOR_DIM_MAX = 65_536
# Named vectors in one collection.
VECTOR_NAMES_MAX = 64
# limit of one query (top-k), and offset + limit.
TOP_K_MAX = 10_000
OFFSET_MAX = 100_000
# limit of one scroll page.
SCROLL_LIMIT_MAX = 100_000
# Search-time and build-time HNSW parameters.
HNSW_EF_MAX = 10_000
HNSW_M_MAX = 512
# A read's ``consistency`` as a number of replicas (it cannot exceed a
# shard's in-sync replicas, whose number replication_factor bounds).
READ_CONSISTENCY_FACTOR_MAX = 100
# Length of a collection / alias name and of a payload key path.
COLLECTION_NAME_LENGTH_MAX = 255
KEY_LENGTH_MAX = 1_024
# Conditions in one filter (all levels together) and nesting depth.
FILTER_CONDITIONS_MAX = 1_000
FILTER_DEPTH_MAX = 32
# One WAL record. A record larger than this is a bug upstream: the request
# limits above keep every record below it.
WAL_RECORD_BYTES_MAX = 1024 * 1024 * 1024

assert POINTS_PER_REQUEST_MAX * 4 * 16 <= REQUEST_BODY_BYTES_MAX
assert PAYLOAD_BYTES_MAX <= REQUEST_BODY_BYTES_MAX
assert TOP_K_MAX <= OFFSET_MAX
assert REQUEST_BODY_BYTES_MAX <= WAL_RECORD_BYTES_MAX
