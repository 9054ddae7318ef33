"""How payload values are read as typed values: numbers, datetimes, text tokens.

The naive filter evaluator (``filters``) and the payload indexes
(``payload_index``) must agree bit for bit on what a value *is*, or an indexed
filter would answer differently from an unindexed one. So every conversion
they both need lives here, once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Final

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "TextIndexParams",
    "as_float",
    "in_bounds",
    "is_int64",
    "json_type_name",
    "parse_datetime_us",
    "tokenize",
]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MICROSECOND: Final = timedelta(microseconds=1)
# RFC 3339 and the looser forms Qdrant accepts: a space instead of "T",
# optional seconds, a date alone, an offset without a colon. No zone means UTC.
_DATETIME_PATTERN: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?)?"
)
# Qdrant's "word" tokenizer splits on every character that is not alphanumeric.
_TOKEN_PATTERN: Final = re.compile(r"[^\W_]+")


def json_type_name(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def is_int64(value: object) -> bool:
    """True for a JSON integer Qdrant can hold (i64); a bool is not an integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return INT64_MIN <= value <= INT64_MAX


def as_float(value: object) -> float | None:
    """The value as a float64 the way Qdrant compares numbers, or None if not a number.

    Qdrant compares every number against a range as ``f64`` (bounds included),
    so we do the same; a bool is not a number.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def in_bounds(
    value: float | int, *, gt: float | int | None, gte: float | int | None, lt: float | int | None, lte: float | int | None
) -> bool:
    """Whether ``value`` satisfies every bound that is set (a NaN satisfies none)."""
    if gt is not None and not value > gt:
        return False
    if gte is not None and not value >= gte:
        return False
    if lt is not None and not value < lt:
        return False
    if lte is not None and not value <= lte:
        return False
    return True


@lru_cache(maxsize=65_536)
def parse_datetime_us(text: str) -> int | None:
    """Microseconds since the Unix epoch (UTC) of an RFC 3339-like string, or None.

    Sub-microsecond digits are truncated. Cached because the naive evaluator
    parses the same payload strings for every datetime range it checks.
    """
    found = _DATETIME_PATTERN.fullmatch(text)
    if found is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, offset_h, offset_m = found.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if sign is not None:
        offset = timedelta(hours=int(offset_h), minutes=int(offset_m or "0"))
        if sign == "-":
            offset = -offset
    assert zulu is None or sign is None, "the pattern allows one zone designator"
    try:
        zone = timezone(offset)
        moment = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micros, tzinfo=zone
        )
    except ValueError:
        return None  # Out-of-range field (month 13, Feb 30, offset >= 24 h, ...).
    return (moment - _EPOCH) // _ONE_MICROSECOND


@dataclass(frozen=True, slots=True)
class TextIndexParams:
    """Options of a full-text index's word tokenizer (Qdrant's TextIndexParams)."""

    lowercase: bool = True
    min_token_len: int | None = None
    max_token_len: int | None = None

    def __post_init__(self) -> None:
        assert self.min_token_len is None or self.min_token_len >= 0
        assert self.max_token_len is None or self.max_token_len >= 0

    def tokens(self, text: str) -> list[str]:
        return tokenize(
            text, lowercase=self.lowercase, min_token_len=self.min_token_len, max_token_len=self.max_token_len
        )


def tokenize(
    text: str, *, lowercase: bool = True, min_token_len: int | None = None, max_token_len: int | None = None
) -> list[str]:
    """Split ``text`` into words (runs of alphanumeric characters), in order.

    Tokens shorter than ``min_token_len`` or longer than ``max_token_len``
    (in characters) are dropped, as Qdrant's word tokenizer does.
    """
    assert isinstance(text, str)
    tokens = _TOKEN_PATTERN.findall(text)
    if lowercase:
        tokens = [token.lower() for token in tokens]
    if min_token_len is not None:
        tokens = [token for token in tokens if len(token) >= min_token_len]
    if max_token_len is not None:
        tokens = [token for token in tokens if len(token) <= max_token_len]
    return tokens

