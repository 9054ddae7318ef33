"""One typed, append-only payload index on one key of one segment.

Rows are only ever appended to a segment (an update writes a new row and
tombstones the old one), so an index never removes anything: offsets arrive
as 0, 1, 2, ... and postings stay sorted by construction.

Storage, chosen so every query is a few vectorized numpy operations:

* postings (keyword, uuid, bool, text tokens, integer lookup): value -> list
  of offsets, with a numpy copy cached per value until that value grows;
* a numeric column (integer/float range, datetime): parallel arrays of values
  (float64, or int64 microseconds for datetimes) and int32 offsets;
* per offset: has a correctly typed value, has a wrongly typed non-null value,
  and the number of distinct posting values (which answers ``except``).

``mask`` answers a condition exactly or returns None; exact means "equal to
``filters.check_condition`` on every row", including rows whose values have
the wrong type. That is why an integer index keeps float values in its range
column, and why ``except`` ORs in the wrong-type rows: the naive semantics
let a wrongly typed value satisfy those conditions.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import re
import json
import uuid
from array import array
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Final, final

import numpy as np

from qcluster.engine._filter_ast import (
    DatetimeRange,
    FieldCondition,
    FieldMatch,
    Match,
    MatchAny,
    MatchExcept,
    MatchText,
    MatchValue,
    NumberRange,
    ValueKind,
)
from qcluster.engine._json_path import get_values, parse_key_path
from qcluster.engine._payload_values import TextIndexParams, as_float, is_int64, parse_datetime_us
from qcluster.errors import DataCorruption
from qcluster.types import PayloadFieldSchema, PayloadSchemaType

__all__ = ["FieldIndex", "is_uuid_text"]

_OFFSET_MAX: Final = 2**31 - 1  # offsets are stored as int32
_FORMAT_VERSION: Final = 1
# Keys that name a top-level field (no path syntax): their scalar values take the bulk fast path.
_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_\-]+")
# Integers up to this magnitude are exact as float64 (range columns are float64).
_INT_EXACT_MAX: Final = 2**53
# Up to this many values, ``any`` unions cached per-value arrays; beyond, one flat pass.
_UNION_PER_VALUE_MAX: Final = 64

assert array("i").itemsize == 4, "offsets are int32"
assert array("q").itemsize == 8


def is_uuid_text(value: str) -> bool:
    """Whether a string is a UUID in any form ``uuid.UUID`` accepts."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@final
class FieldIndex:
    """Index of the values at ``key``, typed by ``schema``; see the module docstring.

    Threading: not thread-safe; the owning segment is guarded by its shard's lock.
    """

    def __init__(self, key: str, schema: PayloadFieldSchema) -> None:
        assert parse_key_path(key), "the key was validated by the caller"
        self.key: Final = key
        self.schema: Final = schema
        self._count = 0
        # Rows indexed so far holding a value of another type (dead rows included).
        self.wrong_type_rows = 0
        self._has_value = bytearray()
        self._wrong_type = bytearray()
        self._distinct = array("i")  # distinct posting values per offset
        self._postings: dict[Hashable, list[int]] = {}
        self._posting_arrays: dict[Hashable, np.ndarray] = {}
        self._column_values = array("q" if schema.type == PayloadSchemaType.DATETIME else "d")
        self._column_offsets = array("i")
        self._column_cache: tuple[np.ndarray, np.ndarray] | None = None
        # A float index always serves ranges; an integer index unless range=False.
        self._has_numeric_column: Final = schema.type == PayloadSchemaType.FLOAT or (
            schema.type == PayloadSchemaType.INTEGER and schema.range
        )
        self._text_params: TextIndexParams | None = None
        if schema.type == PayloadSchemaType.TEXT:
            self._text_params = TextIndexParams(
                lowercase=schema.lowercase, min_token_len=schema.min_token_len, max_token_len=schema.max_token_len
            )

    @property
    def count(self) -> int:
        """Offsets indexed so far (0..count-1)."""
        return self._count

    @property
    def text_params(self) -> TextIndexParams | None:
        """The tokenizer options of a text index, else None."""
        return self._text_params

    # ----------------------------------------------------------------- writing

    def add(self, offset: int, payload: dict[str, Any] | None) -> None:
        """Index the row at ``offset``, which must be the next one (``count``)."""
        assert offset == self._count, f"offsets arrive in order: expected {self._count}, got {offset}"
        assert offset <= _OFFSET_MAX
        self._index_row(offset, get_values(payload, self.key))

    def add_many(self, start_offset: int, payloads: Sequence[dict[str, Any] | None]) -> None:
        """Index rows ``start_offset ..`` in bulk (building a sealed segment's index)."""
        assert start_offset == self._count, f"offsets arrive in order: expected {self._count}, got {start_offset}"
        assert start_offset + len(payloads) - 1 <= _OFFSET_MAX
        key = self.key
        fast = self._fast_scalar_type()
        for position, payload in enumerate(payloads):
            offset = start_offset + position
            if fast is not None and payload is not None:
                value = payload.get(key)
                # ``type() is``: bool is a subclass of int and must not pass.
                if type(value) is fast:
                    self._index_scalar(offset, value)
                    continue
            self._index_row(offset, get_values(payload, key))
        assert self._count == start_offset + len(payloads)

    def _fast_scalar_type(self) -> type | None:
        """The Python type whose top-level scalar values take ``_index_scalar``, if any."""
        if not _PLAIN_KEY.fullmatch(self.key):
            return None
        match self.schema.type:
            case PayloadSchemaType.KEYWORD:
                return str
            case PayloadSchemaType.INTEGER if self.schema.lookup:
                return int
            case _:
                return None

    def _index_scalar(self, offset: int, value: Hashable) -> None:
        """``_index_row`` for one correctly typed scalar: same effect, less work."""
        offsets = self._postings.get(value)
        if offsets is None:
            self._postings[value] = [offset]
        else:
            offsets.append(offset)
            self._posting_arrays.pop(value, None)
        if self._has_numeric_column:
            assert isinstance(value, int)
            if -_INT_EXACT_MAX <= value <= _INT_EXACT_MAX:
                self._column_values.append(float(value))
                self._column_offsets.append(offset)
                self._column_cache = None
            else:
                # Outside float's exact range: let the general path decide.
                self._undo_posting(value, offset)
                self._index_row(offset, [value])
                return
        self._has_value.append(True)
        self._wrong_type.append(False)
        self._distinct.append(1)
        self._count += 1

    def _undo_posting(self, value: Hashable, offset: int) -> None:
        offsets = self._postings[value]
        assert offsets[-1] == offset
        offsets.pop()
        if not offsets:
            del self._postings[value]

    def _index_row(self, offset: int, values: list[Any]) -> None:
        posting_values, numbers, has_value, has_wrong_type = self._classify(values)
        for value in posting_values:
            offsets = self._postings.get(value)
            if offsets is None:
                self._postings[value] = [offset]
            else:
                assert offsets[-1] < offset, "postings stay sorted and unique"
                offsets.append(offset)
                self._posting_arrays.pop(value, None)
        if numbers:
            self._column_values.extend(numbers)
            self._column_offsets.extend([offset] * len(numbers))
            self._column_cache = None
        self._has_value.append(has_value)
        self._wrong_type.append(has_wrong_type)
        self.wrong_type_rows += has_wrong_type
        self._distinct.append(len(posting_values))
        self._count += 1

    def _classify(self, values: list[Any]) -> tuple[set[Hashable], list[float | int], bool, bool]:
        """Split one row's values into posting keys, column numbers and type flags.

        Null values are neither right nor wrong: they are absence.
        """
        kind = self.schema.type
        postings: set[Hashable] = set()
        numbers: list[float | int] = []
        has_value = False
        has_wrong_type = False
        for value in values:
            if value is None:
                continue
            is_typed = self._classify_value(kind, value, postings, numbers)
            has_value = has_value or is_typed
            has_wrong_type = has_wrong_type or not is_typed
        return postings, numbers, has_value, has_wrong_type

    def _classify_value(
        self, kind: PayloadSchemaType, value: Any, postings: set[Hashable], numbers: list[float | int]
    ) -> bool:
        """Record ``value``; return whether it has the index's type."""
        match kind:
            case PayloadSchemaType.KEYWORD:
                is_typed = isinstance(value, str)
                if is_typed:
                    postings.add(value)
            case PayloadSchemaType.UUID:
                # Keyed by the raw string: match.value compares strings exactly.
                is_typed = isinstance(value, str) and is_uuid_text(value)
                if is_typed:
                    postings.add(value)
            case PayloadSchemaType.BOOL:
                is_typed = isinstance(value, bool)
                if is_typed:
                    postings.add(value)
            case PayloadSchemaType.TEXT:
                is_typed = isinstance(value, str)
                if is_typed:
                    assert self._text_params is not None
                    postings.update(self._text_params.tokens(value))
            case PayloadSchemaType.INTEGER:
                is_typed = is_int64(value)
                if is_typed and self.schema.lookup:
                    postings.add(value)
                # Every number, floats included, so range answers stay exact on
                # rows that violate the schema.
                number = as_float(value)
                if number is not None and self._has_numeric_column:
                    numbers.append(number)
            case PayloadSchemaType.FLOAT:
                number = as_float(value)
                is_typed = number is not None
                if number is not None:
                    numbers.append(number)
            case PayloadSchemaType.DATETIME:
                moment = parse_datetime_us(value) if isinstance(value, str) else None
                is_typed = moment is not None
                if moment is not None:
                    numbers.append(moment)
        return is_typed

    # ----------------------------------------------------------------- reading

    def has_value_mask(self, n: int) -> np.ndarray:
        """Rows with at least one value of the index's type."""
        assert n == self._count, f"the index covers {self._count} rows, asked for {n}"
        return np.frombuffer(self._has_value, dtype=np.uint8).astype(bool)

    def wrong_type_mask(self, n: int) -> np.ndarray:
        """Rows with at least one non-null value of another type (not indexed)."""
        assert n == self._count, f"the index covers {self._count} rows, asked for {n}"
        return np.frombuffer(self._wrong_type, dtype=np.uint8).astype(bool)

    def mask(self, condition: FieldCondition, n: int) -> np.ndarray | None:
        """Rows satisfying ``condition`` exactly, or None if this index cannot tell."""
        assert n == self._count, f"the index covers {self._count} rows, asked for {n}"
        assert condition.key == self.key, f"condition on {condition.key!r} asked of the index on {self.key!r}"
        kind = self.schema.type
        match condition:
            case FieldMatch(match=match_):
                result = self._match_mask(match_, n)
            case NumberRange(gt=gt, gte=gte, lt=lt, lte=lte) if self._has_numeric_column:
                result = self._range_mask(n, gt=gt, gte=gte, lt=lt, lte=lte)
            case DatetimeRange(gt=gt, gte=gte, lt=lt, lte=lte) if kind == PayloadSchemaType.DATETIME:
                result = self._range_mask(n, gt=gt, gte=gte, lt=lt, lte=lte)
            case _:
                result = None
        assert result is None or (result.dtype == np.bool_ and result.shape == (n,))
        return result

    def _match_mask(self, match_: Match, n: int) -> np.ndarray | None:
        kind = self.schema.type
        posting_kind = {
            PayloadSchemaType.KEYWORD: ValueKind.KEYWORD,
            PayloadSchemaType.UUID: ValueKind.KEYWORD,
            PayloadSchemaType.BOOL: ValueKind.BOOL,
            PayloadSchemaType.INTEGER: ValueKind.INTEGER if self.schema.lookup else None,
        }.get(kind)
        match match_:
            case MatchText(text=text) if kind == PayloadSchemaType.TEXT:
                return self._text_mask(text, n)
            case MatchValue(kind=value_kind, value=value) if value_kind == posting_kind:
                if kind == PayloadSchemaType.UUID and not is_uuid_text(str(value)):
                    return None  # A non-UUID string may equal a (wrongly typed) non-UUID value.
                return self._union_mask([value], n)
            case MatchAny(kind=value_kind, values=values) if value_kind == posting_kind != ValueKind.BOOL:
                if kind == PayloadSchemaType.UUID and not all(is_uuid_text(str(v)) for v in values):
                    return None
                return self._union_mask(values, n)
            case MatchExcept(kind=value_kind, values=values) if value_kind == posting_kind != ValueKind.BOOL:
                if kind == PayloadSchemaType.UUID and not all(is_uuid_text(str(v)) for v in values):
                    return None
                return self._except_mask(values, n)
        return None

    def _posting_array(self, value: Hashable) -> np.ndarray | None:
        cached = self._posting_arrays.get(value)
        if cached is not None:
            return cached
        offsets = self._postings.get(value)
        if offsets is None:
            return None
        built = np.array(offsets, dtype=np.int32)
        self._posting_arrays[value] = built
        return built

    def _union_mask(self, values: Iterable[Hashable], n: int) -> np.ndarray:
        result = np.zeros(n, dtype=bool)
        present = [value for value in values if value in self._postings]
        if len(present) <= _UNION_PER_VALUE_MAX:
            for value in present:
                offsets = self._posting_array(value)
                assert offsets is not None
                result[offsets] = True
            return result
        # A long ``any`` list: one numpy assignment for all values instead of
        # one (and one cached array) per value.
        postings = self._postings
        flat = itertools.chain.from_iterable(postings[value] for value in present)
        result[np.fromiter(flat, dtype=np.int64)] = True
        return result

    def _except_mask(self, excluded: Iterable[Hashable], n: int) -> np.ndarray:
        """Rows with a typed value outside ``excluded``, or any wrongly typed value.

        A row has a typed value outside the set iff it has more distinct
        values than excluded ones, which needs no scan of the whole vocabulary.
        """
        excluded_present = np.zeros(n, dtype=np.int32)
        for value in excluded:
            offsets = self._posting_array(value)
            if offsets is not None:
                excluded_present[offsets] += 1
        # A copy, so no numpy view keeps the array.array from growing later.
        distinct = np.frombuffer(self._distinct, dtype=np.int32).copy()
        assert not np.any(excluded_present > distinct), "an excluded value counted twice in one row"
        result = distinct > excluded_present
        result |= self.wrong_type_mask(n)
        return result

    def _text_mask(self, text: str, n: int) -> np.ndarray:
        """Rows whose tokens (all strings together) include every query token."""
        assert self._text_params is not None
        result = np.zeros(n, dtype=bool)
        tokens = self._text_params.tokens(text)
        if not tokens:
            return result  # An empty query matches nothing, as in filters.
        found: np.ndarray | None = None
        for token in sorted(set(tokens), key=lambda t: len(self._postings.get(t, ()))):
            offsets = self._posting_array(token)
            if offsets is None:
                return result
            found = offsets if found is None else np.intersect1d(found, offsets, assume_unique=True)
        assert found is not None
        result[found] = True
        return result

    def _column(self) -> tuple[np.ndarray, np.ndarray]:
        if self._column_cache is None:
            value_dtype = np.int64 if self.schema.type == PayloadSchemaType.DATETIME else np.float64
            values = np.frombuffer(self._column_values, dtype=value_dtype).copy()
            offsets = np.frombuffer(self._column_offsets, dtype=np.int32).copy()
            assert values.shape == offsets.shape
            self._column_cache = (values, offsets)
        return self._column_cache

    def _range_mask(
        self, n: int, *, gt: float | int | None, gte: float | int | None, lt: float | int | None, lte: float | int | None
    ) -> np.ndarray:
        values, offsets = self._column()
        selected = np.ones(values.shape[0], dtype=bool)
        if gt is not None:
            selected &= values > gt
        if gte is not None:
            selected &= values >= gte
        if lt is not None:
            selected &= values < lt
        if lte is not None:
            selected &= values <= lte
        result = np.zeros(n, dtype=bool)
        result[offsets[selected]] = True
        return result

    # ----------------------------------------------------------- persistence

    def to_bytes(self) -> bytes:
        """The whole index as an ``.npz`` archive (no pickle), for a sealed segment."""
        keys = list(self._postings)
        lengths = np.array([len(self._postings[key]) for key in keys], dtype=np.int64)
        postings = [np.array(self._postings[key], dtype=np.int32) for key in keys]
        schema = dataclasses.asdict(self.schema) | {"type": self.schema.type.value}
        meta = {"version": _FORMAT_VERSION, "key": self.key, "schema": schema, "count": self._count, "keys": keys}
        values, offsets = self._column()
        buffer = io.BytesIO()
        np.savez(
            buffer,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            has_value=np.frombuffer(self._has_value, dtype=np.uint8).copy(),
            wrong_type=np.frombuffer(self._wrong_type, dtype=np.uint8).copy(),
            distinct=np.frombuffer(self._distinct, dtype=np.int32).copy(),
            column_values=values,
            column_offsets=offsets,
            posting_lengths=lengths,
            posting_offsets=np.concatenate(postings) if postings else np.zeros(0, dtype=np.int32),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FieldIndex:
        """Load ``to_bytes`` output; raise DataCorruption if it is not consistent."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            meta = json.loads(arrays["meta"].tobytes())
            schema_fields = dict(meta["schema"])
            schema_fields["type"] = PayloadSchemaType(schema_fields["type"])
            index = cls(meta["key"], PayloadFieldSchema(**schema_fields))
            index._load(meta, arrays)
        except (ValueError, KeyError, TypeError, OSError, AssertionError) as exc:
            raise DataCorruption(f"payload index bytes are not a valid index: {exc}") from exc
        return index

    def _load(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        count = int(meta["count"])
        if meta["version"] != _FORMAT_VERSION:
            raise ValueError(f"unknown format version {meta['version']}")
        for name in ("has_value", "wrong_type", "distinct"):
            if arrays[name].shape != (count,):
                raise ValueError(f"{name} has {arrays[name].shape[0]} rows, expected {count}")
        self._count = count
        self._has_value = bytearray(arrays["has_value"].astype(np.uint8).tobytes())
        self._wrong_type = bytearray(arrays["wrong_type"].astype(np.uint8).tobytes())
        self._distinct = array("i", arrays["distinct"].astype(np.int32).tobytes())
        self._column_values = array(self._column_values.typecode, arrays["column_values"].tobytes())
        self._column_offsets = array("i", arrays["column_offsets"].astype(np.int32).tobytes())
        if len(self._column_values) != len(self._column_offsets):
            raise ValueError("numeric column arrays differ in length")
        bounds = np.concatenate([[0], np.cumsum(arrays["posting_lengths"])])
        flat = arrays["posting_offsets"]
        if len(meta["keys"]) != len(arrays["posting_lengths"]) or bounds[-1] != flat.shape[0]:
            raise ValueError("posting lists do not match their keys")
        if flat.size and (flat.min() < 0 or flat.max() >= count):
            raise ValueError("a posting offset is outside the index")
        for position, key in enumerate(meta["keys"]):
            offsets = flat[bounds[position] : bounds[position + 1]].tolist()
            self._postings[key] = offsets
