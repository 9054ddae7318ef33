"""Shape validation of JSON request bodies: the primitives.

Every function takes the JSON value and the JSON path it came from, and raises
``InvalidRequest`` (or ``LimitExceeded`` for a documented bound) whose
message starts with that path, e.g. ``points[3].id: ...``. Nothing here
touches storage; checks that need the collection's configuration take it as
an argument.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Final

import orjson

from qcluster import limits
from qcluster.engine.filter_cache import parsed_filter
from qcluster.engine.filters import validate_key
from qcluster.errors import InvalidRequest, LimitExceeded
from qcluster.types import PayloadSelector, PointId, ReadConsistency, ReadConsistencyKind, normalize_point_id

__all__ = [
    "check_collection_name",
    "check_keys",
    "check_payload",
    "get_bool",
    "get_float",
    "get_int",
    "get_list",
    "get_object",
    "get_str",
    "join",
    "loads_object",
    "optional_filter",
    "payload_selector",
    "point_id",
    "point_ids",
    "read_consistency",
    "reject_unsupported",
    "shard_key_selector",
    "vector_selector",
]

_FORBIDDEN_NAME_CHARACTERS: Final = frozenset('<>:"/\\|?*\0')
_JSON_TYPE_NAMES: Final = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
                           float: "number", type(None): "null"}


def check_collection_name(name: str, *, what: str = "collection name") -> str:
    if not name or len(name) > limits.COLLECTION_NAME_LENGTH_MAX:
        raise InvalidRequest(
            f"{what}: must be 1 to {limits.COLLECTION_NAME_LENGTH_MAX} characters, got {len(name)}"
        )
    bad = sorted(set(name) & _FORBIDDEN_NAME_CHARACTERS) or [c for c in name if ord(c) < 0x20]
    if bad:
        raise InvalidRequest(f"{what}: {name!r} contains a forbidden character {bad[0]!r}")
    return name


def json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def loads_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object (an empty body is ``{}``)."""
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Format error in JSON body: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidRequest(f"Format error in JSON body: expected an object at the top level, got {json_type(value)}")
    return value


def check_keys(raw: dict[str, Any], allowed: Iterable[str], *, path: str) -> None:
    """Reject unknown fields, as Qdrant's request types do (``deny_unknown_fields``)."""
    allowed_set = set(allowed)
    for key in raw:
        if key not in allowed_set:
            raise InvalidRequest(f"{join(path, key)}: unknown field")


def reject_unsupported(raw: dict[str, Any], keys: Iterable[str], *, path: str) -> None:
    """Fields Qdrant has and qcluster does not: accepted only when null."""
    for key in keys:
        if raw.get(key) is not None:
            raise InvalidRequest(f"{join(path, key)}: not supported by qcluster")


def get_object(raw: dict[str, Any], key: str, *, path: str, required: bool = False) -> dict[str, Any] | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise InvalidRequest(f"{join(path, key)}: missing required field")
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{join(path, key)}: expected an object, got {json_type(value)}")
    return value


def get_list(raw: dict[str, Any], key: str, *, path: str, required: bool = False) -> list[Any] | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise InvalidRequest(f"{join(path, key)}: missing required field")
        return None
    if not isinstance(value, list):
        raise InvalidRequest(f"{join(path, key)}: expected an array, got {json_type(value)}")
    return value


def get_bool(raw: dict[str, Any], key: str, *, path: str, default: bool) -> bool:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"{join(path, key)}: expected a boolean, got {json_type(value)}")
    return value


def get_str(raw: dict[str, Any], key: str, *, path: str, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise InvalidRequest(f"{join(path, key)}: missing required field")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{join(path, key)}: expected a string, got {json_type(value)}")
    return value


def get_int(
    raw: dict[str, Any],
    key: str,
    *,
    path: str,
    default: int | None,
    minimum: int,
    maximum: int | None = None,
    limit_name: str | None = None,
) -> int | None:
    """An integer in ``[minimum, maximum]``; above a named bound is LimitExceeded."""
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{join(path, key)}: expected an integer, got {json_type(value)}")
    if value < minimum:
        raise InvalidRequest(f"{join(path, key)}: must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        message = f"{join(path, key)}: {value} exceeds the maximum of {maximum}"
        if limit_name is not None:
            raise LimitExceeded(f"{message} ({limit_name})")
        raise InvalidRequest(message)
    return value


def get_float(raw: dict[str, Any], key: str, *, path: str, minimum: float | None = None,
              maximum: float | None = None) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{join(path, key)}: expected a number, got {json_type(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidRequest(f"{join(path, key)}: must be finite")
    if minimum is not None and number < minimum:
        raise InvalidRequest(f"{join(path, key)}: must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise InvalidRequest(f"{join(path, key)}: must be at most {maximum}, got {number}")
    return number


def point_id(raw: Any, *, path: str) -> PointId:
    return normalize_point_id(raw, path=path)


def point_ids(raw: Any, *, path: str) -> tuple[PointId, ...]:
    """A list of ids, at most ``POINTS_PER_REQUEST_MAX``."""
    if not isinstance(raw, list):
        raise InvalidRequest(f"{path}: expected an array of point ids, got {json_type(raw)}")
    if len(raw) > limits.POINTS_PER_REQUEST_MAX:
        raise LimitExceeded(
            f"{path}: {len(raw)} points exceeds the maximum of {limits.POINTS_PER_REQUEST_MAX} "
            "per request (POINTS_PER_REQUEST_MAX)"
        )
    return tuple(normalize_point_id(item, path=f"{path}[{index}]") for index, item in enumerate(raw))


def _key_list(raw: Any, *, path: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise InvalidRequest(f"{path}: expected an array of strings")
    for index, item in enumerate(raw):
        validate_key(item, path=f"{path}[{index}]")
    return tuple(raw)


def payload_selector(raw: Any, *, path: str, default: bool) -> PayloadSelector:
    """``with_payload``: a boolean, a list of keys, ``{"include": [...]}`` or ``{"exclude": [...]}``."""
    if raw is None:
        return PayloadSelector(enabled=default)
    if isinstance(raw, bool):
        return PayloadSelector(enabled=raw)
    if isinstance(raw, list):
        return PayloadSelector(enabled=True, include=_key_list(raw, path=path))
    if isinstance(raw, dict) and len(raw) == 1 and "include" in raw:
        return PayloadSelector(enabled=True, include=_key_list(raw["include"], path=f"{path}.include"))
    if isinstance(raw, dict) and len(raw) == 1 and "exclude" in raw:
        return PayloadSelector(enabled=True, exclude=_key_list(raw["exclude"], path=f"{path}.exclude"))
    raise InvalidRequest(
        f"{path}: expected a boolean, an array of keys, {{\"include\": [...]}} or {{\"exclude\": [...]}}"
    )


def vector_selector(raw: Any, *, path: str, default: bool) -> bool | tuple[str, ...]:
    """``with_vector``: a boolean or a list of vector names."""
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return tuple(raw)
    raise InvalidRequest(f"{path}: expected a boolean or an array of vector names")


def optional_filter(raw: dict[str, Any], key: str = "filter", *, path: str) -> dict[str, Any] | None:
    """Validate a filter with the engine's parser and return the original JSON.

    Storage takes the JSON (it is what the WAL records), so the parsed form is
    only used to reject a bad filter here, with its path. It goes through the
    engine's cache of parsed filters: a filter that repeats across requests
    (a tenant's, a long ``any`` list) is parsed once.
    """
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{join(path, key)}: expected an object, got {json_type(value)}")
    parsed_filter(value, path=join(path, key))
    return value


def payload_json_bytes(payload: dict[str, Any]) -> int:
    return len(orjson.dumps(payload))


def check_payload(raw: Any, *, path: str) -> dict[str, Any] | None:
    """A point payload: null or an object of at most PAYLOAD_BYTES_MAX serialized bytes."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: expected an object, got {json_type(raw)}")
    # Measured on the canonical serialization (what storage keeps), not on the
    # request text; orjson serializes at GB/s, so this is cheap.
    size = payload_json_bytes(raw)
    if size > limits.PAYLOAD_BYTES_MAX:
        raise LimitExceeded(
            f"{path}: {size} bytes exceeds the maximum of {limits.PAYLOAD_BYTES_MAX} bytes (PAYLOAD_BYTES_MAX)"
        )
    return raw


_CONSISTENCY_NAMES: Final = {kind.value: kind for kind in ReadConsistencyKind if kind is not ReadConsistencyKind.FACTOR}


def read_consistency(raw: Any, *, path: str = "consistency") -> ReadConsistency | None:
    """Qdrant's read ``consistency``: a number of replicas (``2`` or ``"2"``
    from a query string) or ``majority`` / ``quorum`` / ``all``, and
    qcluster's ``primary``. ``None`` when absent."""
    if raw is None:
        return None
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 1 <= raw <= limits.READ_CONSISTENCY_FACTOR_MAX:
            raise InvalidRequest(f"{path}: a replica count must be 1 to {limits.READ_CONSISTENCY_FACTOR_MAX}, "
                                 f"got {raw}")
        return ReadConsistency(kind=ReadConsistencyKind.FACTOR, factor=raw)
    if isinstance(raw, str) and raw.strip().lower() in _CONSISTENCY_NAMES:
        return ReadConsistency(kind=_CONSISTENCY_NAMES[raw.strip().lower()])
    raise InvalidRequest(f"{path}: expected a replica count or one of {', '.join(_CONSISTENCY_NAMES)}, "
                         f"got {raw!r}")


SHARD_KEY_LENGTH_MAX: Final = 255
SHARD_KEYS_PER_REQUEST_MAX: Final = 100


def shard_key(raw: Any, *, path: str) -> int | str:
    """One shard key: a keyword (1 to 255 characters) or an unsigned integer."""
    if isinstance(raw, str) and 0 < len(raw) <= SHARD_KEY_LENGTH_MAX:
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 2**64:
        return raw
    raise InvalidRequest(f"{path}: expected a keyword of 1 to {SHARD_KEY_LENGTH_MAX} characters or an unsigned "
                         f"integer, got {raw!r}")


def shard_key_selector(raw: Any, *, path: str = "shard_key") -> tuple[int | str, ...] | None:
    """A request's ``shard_key``: one key or a list of keys (None when absent)."""
    if raw is None:
        return None
    if isinstance(raw, list):
        if not 0 < len(raw) <= SHARD_KEYS_PER_REQUEST_MAX:
            raise InvalidRequest(f"{path}: expected 1 to {SHARD_KEYS_PER_REQUEST_MAX} shard keys, got {len(raw)}")
        return tuple(dict.fromkeys(shard_key(item, path=f"{path}[{index}]") for index, item in enumerate(raw)))
    if isinstance(raw, dict):
        raise InvalidRequest(f"{path}: a selector object (fallback/target) is not supported; give a key or a list")
    return (shard_key(raw, path=path),)
