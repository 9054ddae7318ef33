"""Payload indexes and planned filter evaluation agree exactly with the naive evaluator."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qcluster.engine.filters import matches, parse_filter
from qcluster.engine.payload_index import FieldIndex, evaluate_filter, text_indexing_of
from qcluster.errors import DataCorruption
from qcluster.types import PayloadFieldSchema, PayloadSchemaType, PointId

UUID_TEXT = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"


@dataclass
class ListView:
    """A SegmentView over Python lists, with indexes built row by row or in bulk."""

    payloads: list[dict[str, Any] | None]
    ids: list[PointId]
    indexes: dict[str, FieldIndex] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.payloads)

    def payload(self, offset: int) -> dict[str, Any] | None:
        return self.payloads[offset]

    def point_id(self, offset: int) -> PointId:
        return self.ids[offset]

    def offset_of(self, point_id: PointId) -> int | None:
        return self.ids.index(point_id) if point_id in self.ids else None

    def field_index(self, key: str) -> FieldIndex | None:
        return self.indexes.get(key)

    def text_index_keys(self) -> frozenset[str]:
        return frozenset(key for key, index in self.indexes.items() if index.schema.type == PayloadSchemaType.TEXT)


def build_view(payloads: list[dict[str, Any] | None], schemas: dict[str, PayloadFieldSchema], *, bulk: bool) -> ListView:
    view = ListView(payloads=payloads, ids=[_point_id(i) for i in range(len(payloads))])
    for key, schema in schemas.items():
        index = FieldIndex(key, schema)
        if bulk:
            index.add_many(0, payloads)
        else:
            for offset, payload in enumerate(payloads):
                index.add(offset, payload)
        view.indexes[key] = index
    return view


def _point_id(offset: int) -> PointId:
    return offset if offset % 3 else str(uuid.UUID(int=offset + 1))


def naive_mask(parsed: Any, view: ListView) -> list[bool]:
    indexing = text_indexing_of(view)
    return [
        matches(
            parsed,
            view.payload(i),
            view.point_id(i),
            text_index_keys=indexing.keys,
            text_index_params=indexing.params,
        )
        for i in range(view.count)
    ]


# ------------------------------------------------------------------ strategies

# Each key has a home type: its index (usually of that type) sees mostly
# right-typed values and some wrong ones, and conditions usually ask about
# values that occur, so masks are neither empty nor full most of the time.
WORDS = ("x", "y", "Hello World", "world peace")
DATETIMES = ("2023-01-01T00:00:00Z", "2023-06-01", "2024-01-01T00:00:00+02:00", "2022-12-31T23:00:00-02:00")
UUIDS = (UUID_TEXT, UUID_TEXT.upper(), "00000000-0000-0000-0000-000000000001")
STRINGS = (*WORDS, *DATETIMES[:2], *UUIDS[:2])
NUMBERS = st.integers(-2, 3) | st.sampled_from([0.5, 1.0, -1.5, 2.5, 2**63])
SCALARS = st.one_of(NUMBERS, st.booleans(), st.sampled_from(STRINGS), st.none())
HOME = {
    "k": st.sampled_from(WORDS[:2] + UUIDS),
    "n": st.integers(-2, 3),
    "d": st.sampled_from(DATETIMES),
    "t": st.sampled_from(WORDS),
    "o.p": st.integers(-2, 3),
    "arr[].x": st.integers(-2, 3),
}
HOME_SCHEMA = {
    "k": st.sampled_from([PayloadSchemaType.KEYWORD, PayloadSchemaType.UUID]).map(PayloadFieldSchema),
    "n": st.sampled_from([PayloadSchemaType.INTEGER, PayloadSchemaType.FLOAT]).map(PayloadFieldSchema),
    "d": st.just(PayloadFieldSchema(PayloadSchemaType.DATETIME)),
    "t": st.just(PayloadFieldSchema(PayloadSchemaType.TEXT)),
    "o.p": st.just(PayloadFieldSchema(PayloadSchemaType.INTEGER)),
    "arr[].x": st.just(PayloadFieldSchema(PayloadSchemaType.INTEGER)),
}
ANY_SCHEMA = st.one_of(
    st.builds(PayloadFieldSchema, st.sampled_from(list(PayloadSchemaType))),
    st.builds(
        lambda lookup, rng: PayloadFieldSchema(PayloadSchemaType.INTEGER, lookup=lookup, range=rng),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(
        lambda lower, low, high: PayloadFieldSchema(
            PayloadSchemaType.TEXT, lowercase=lower, min_token_len=low, max_token_len=high
        ),
        st.booleans(),
        st.none() | st.integers(1, 3),
        st.none() | st.integers(3, 6),
    ),
)


@st.composite
def field_values(draw: st.DrawFn, home: st.SearchStrategy[Any]) -> Any:
    """Mostly a home-typed scalar; sometimes anything, null, or an array of them."""
    roll = draw(st.integers(0, 9))
    if roll < 5:
        return draw(home)
    if roll < 7:
        return draw(SCALARS)
    element = st.one_of(home, home, SCALARS, st.lists(SCALARS, max_size=2))
    return draw(st.lists(element, max_size=3))


@st.composite
def payloads_strategy(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    payload: dict[str, Any] = {}
    for key in ("k", "n", "d", "t"):
        if draw(st.integers(0, 4)) > 0:
            payload[key] = draw(field_values(HOME[key]))
    element = st.dictionaries(st.sampled_from(("x", "y")), field_values(HOME["arr[].x"]), max_size=2)
    roll = draw(st.integers(0, 4))
    if roll > 1:
        payload["arr"] = draw(st.lists(element, max_size=3))
    elif roll == 1:
        payload["arr"] = draw(st.one_of(element, SCALARS))
    if draw(st.booleans()):
        payload["o"] = draw(st.dictionaries(st.just("p"), field_values(HOME["o.p"])))
    return payload


@st.composite
def schema_sets(draw: st.DrawFn) -> dict[str, PayloadFieldSchema]:
    schemas: dict[str, PayloadFieldSchema] = {}
    for key, home in HOME_SCHEMA.items():
        roll = draw(st.integers(0, 9))
        if roll >= 7:
            schemas[key] = draw(home)
        elif roll >= 4:
            schemas[key] = draw(ANY_SCHEMA)
    return schemas


PAYLOADS = payloads_strategy()
SCHEMA_SETS = schema_sets()
FIELD_KEYS = st.sampled_from((*HOME, "arr"))
STRING_LISTS = st.lists(st.sampled_from(STRINGS + UUIDS), max_size=3)
INT_LISTS = st.lists(st.integers(-2, 3), max_size=3)
TEXTS = st.sampled_from(("world", "hello WORLD", "ld pe", "", "x", "2023", "Hello", "peace world"))


@st.composite
def matches_for(draw: st.DrawFn, key: str) -> dict[str, Any]:
    """A match condition body, usually with values the key's home type holds."""
    home = HOME.get(key, SCALARS)
    kind = draw(st.sampled_from(("value", "value", "any", "except", "text")))
    if kind == "text":
        return {"text": draw(TEXTS)}
    if kind == "value":
        value = draw(st.one_of(home, home, st.integers(-2, 3), st.booleans(), st.sampled_from(STRINGS)))
        if value is None or (isinstance(value, int) and not -(2**63) <= value < 2**63):
            value = "x"  # Not a valid match value (null, or outside i64).
        return {"value": int(value) if isinstance(value, float) else value}
    pool = draw(st.one_of(st.just(home), st.just(st.sampled_from(STRINGS + UUIDS)), st.just(st.integers(-2, 3))))
    values = draw(st.lists(pool, max_size=3))
    is_int64_list = all(type(v) is int and -(2**63) <= v < 2**63 for v in values)
    if not all(isinstance(v, str) for v in values) and not is_int64_list:
        values = [v for v in values if isinstance(v, str)]
    return {kind: values}


NUMBER_BOUNDS = st.dictionaries(
    st.sampled_from(("gt", "gte", "lt", "lte")), st.integers(-2, 3) | st.floats(-3, 3), max_size=2
)
DATE_BOUNDS = st.dictionaries(
    st.sampled_from(("gt", "gte", "lt", "lte")), st.sampled_from(DATETIMES), min_size=1, max_size=2
)
COUNT_BOUNDS = st.dictionaries(st.sampled_from(("gt", "gte", "lt", "lte")), st.integers(0, 3), max_size=2)


@st.composite
def field_conditions(draw: st.DrawFn, key: str | None = None) -> dict[str, Any]:
    """A match or range condition on ``key`` or some key (what an index may answer)."""
    if key is None:
        key = draw(FIELD_KEYS)
    if draw(st.booleans()):
        return {"key": key, "match": draw(matches_for(key))}
    bounds = DATE_BOUNDS if key == "d" and draw(st.integers(0, 3)) > 0 else NUMBER_BOUNDS | DATE_BOUNDS
    return {"key": key, "range": draw(bounds)}


LEAVES = st.one_of(
    field_conditions(),
    field_conditions(),
    field_conditions(),
    st.builds(lambda k, c: {"key": k, "values_count": c}, FIELD_KEYS, COUNT_BOUNDS),
    st.builds(lambda k: {"is_empty": {"key": k}}, FIELD_KEYS),
    st.builds(lambda k: {"is_null": {"key": k}}, FIELD_KEYS),
    st.builds(lambda ids: {"has_id": ids}, st.lists(st.integers(0, 12).map(_point_id), max_size=3)),
)


def _filters(conditions: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    clause = st.lists(conditions, max_size=3)
    return st.fixed_dictionaries(
        {},
        optional={
            "must": clause | conditions,
            "should": clause,
            "must_not": clause,
            "min_should": st.builds(lambda c, m: {"conditions": c, "min_count": m}, clause, st.integers(1, 2)),
        },
    )


NESTED_LEAVES = st.one_of(
    st.builds(lambda k, m: {"key": k, "match": m}, st.sampled_from(("x", "y")), matches_for("arr[].x")),
    st.builds(lambda k, r: {"key": k, "range": r}, st.sampled_from(("x", "y")), NUMBER_BOUNDS),
    st.builds(lambda k: {"is_empty": {"key": k}}, st.sampled_from(("x", "y"))),
)
CONDITIONS = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        _filters(inner),
        st.builds(lambda f: {"nested": {"key": "arr", "filter": f}}, _filters(NESTED_LEAVES)),
    ),
    max_leaves=8,
)
FILTERS = _filters(CONDITIONS)


# ------------------------------------------------------------------ the central property


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payloads=st.lists(PAYLOADS, max_size=16),
    schemas=SCHEMA_SETS,
    raw_filter=FILTERS,
    bulk=st.booleans(),
)
def test_evaluate_filter_equals_naive(
    payloads: list[dict[str, Any] | None], schemas: dict[str, PayloadFieldSchema], raw_filter: dict[str, Any], bulk: bool
) -> None:
    view = build_view(payloads, schemas, bulk=bulk)
    parsed = parse_filter(raw_filter)
    planned = evaluate_filter(parsed, view)
    assert planned.dtype == np.bool_
    assert planned.tolist() == naive_mask(parsed, view)


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(PAYLOADS, min_size=1, max_size=16),
    schemas=SCHEMA_SETS.filter(bool),
    data=st.data(),
)
def test_index_mask_is_exact_when_given(
    payloads: list[dict[str, Any] | None],
    schemas: dict[str, PayloadFieldSchema],
    data: st.DataObject,
) -> None:
    """Every mask an index returns equals the naive answer, row by row."""
    view = build_view(payloads, schemas, bulk=True)
    key = data.draw(st.sampled_from(sorted(schemas)))
    parsed = parse_filter({"must": [data.draw(field_conditions(key))]})
    assert parsed.must is not None
    condition = parsed.must[0]
    mask = view.indexes[key].mask(condition, view.count)  # type: ignore[arg-type]
    if mask is not None:
        assert mask.tolist() == naive_mask(parsed, view)


# ------------------------------------------------------------------ coverage counters


@pytest.mark.parametrize(
    ("schema_type", "typed", "wrong"),
    [
        (PayloadSchemaType.KEYWORD, ["a", "b"], [1, True, {"o": 1}, ["nested"]]),
        (PayloadSchemaType.INTEGER, [1, -5], [1.5, True, "1", 2**63]),
        (PayloadSchemaType.FLOAT, [1, 1.5], [True, "1.5"]),
        (PayloadSchemaType.BOOL, [True, False], [0, "true"]),
        (PayloadSchemaType.DATETIME, ["2023-01-01", "2023-01-01T10:00:00-03:00"], ["2023-13-01", 5, "soon"]),
        (PayloadSchemaType.TEXT, ["hello world", ""], [3, False]),
        (PayloadSchemaType.UUID, [UUID_TEXT, UUID_TEXT.upper()], ["not-a-uuid", 7]),
    ],
)
def test_has_value_and_wrong_type(schema_type: PayloadSchemaType, typed: list[Any], wrong: list[Any]) -> None:
    payloads: list[dict[str, Any] | None] = [
        {"f": typed[0]},
        {"f": wrong[0]},
        {"f": [typed[1], wrong[-1]]},
        {"f": None},
        {"g": typed[0]},
        None,
        {"f": []},
        {"f": [None, *wrong]},
    ]
    index = FieldIndex("f", PayloadFieldSchema(schema_type))
    index.add_many(0, payloads)
    assert index.count == len(payloads)
    assert index.has_value_mask(len(payloads)).tolist() == [True, False, True, False, False, False, False, False]
    assert index.wrong_type_mask(len(payloads)).tolist() == [False, True, True, False, False, False, False, True]


def test_offsets_must_arrive_in_order() -> None:
    index = FieldIndex("f", PayloadFieldSchema(PayloadSchemaType.KEYWORD))
    index.add(0, {"f": "a"})
    with pytest.raises(AssertionError):
        index.add(2, {"f": "b"})
    with pytest.raises(AssertionError):
        index.add_many(0, [{"f": "b"}])


def test_masks_follow_appends() -> None:
    """Cached posting arrays and the numeric column are refreshed after an append."""
    keyword = FieldIndex("f", PayloadFieldSchema(PayloadSchemaType.KEYWORD))
    number = FieldIndex("f", PayloadFieldSchema(PayloadSchemaType.FLOAT))
    is_a = parse_filter({"must": {"key": "f", "match": {"value": "a"}}}).must
    positive = parse_filter({"must": {"key": "f", "range": {"gt": 0}}}).must
    assert is_a is not None and positive is not None
    for offset, value in enumerate(["a", 1.5, "a", -1, 2]):
        keyword.add(offset, {"f": value})
        number.add(offset, {"f": value})
        assert keyword.mask(is_a[0], offset + 1) is not None  # type: ignore[arg-type]
        assert number.mask(positive[0], offset + 1) is not None  # type: ignore[arg-type]
    assert keyword.mask(is_a[0], 5).tolist() == [True, False, True, False, False]  # type: ignore[arg-type, union-attr]
    assert number.mask(positive[0], 5).tolist() == [False, True, False, False, True]  # type: ignore[arg-type, union-attr]


def test_integer_index_options_limit_what_it_answers() -> None:
    match_one = parse_filter({"must": {"key": "f", "match": {"value": 1}}}).must
    in_range = parse_filter({"must": {"key": "f", "range": {"gte": 0.5, "lt": 1.5}}}).must
    assert match_one is not None and in_range is not None
    payloads = [{"f": 1}, {"f": 1.2}, {"f": True}]
    lookup_only = FieldIndex("f", PayloadFieldSchema(PayloadSchemaType.INTEGER, range=False))
    range_only = FieldIndex("f", PayloadFieldSchema(PayloadSchemaType.INTEGER, lookup=False))
    lookup_only.add_many(0, payloads)
    range_only.add_many(0, payloads)
    assert lookup_only.mask(match_one[0], 3).tolist() == [True, False, False]  # type: ignore[arg-type, union-attr]
    assert lookup_only.mask(in_range[0], 3) is None  # type: ignore[arg-type]
    assert range_only.mask(match_one[0], 3) is None  # type: ignore[arg-type]
    # float bounds on an integer index, and the schema-violating float still counts
    assert range_only.mask(in_range[0], 3).tolist() == [True, True, False]  # type: ignore[arg-type, union-attr]


def test_text_index_honours_tokenizer_options() -> None:
    schema = PayloadFieldSchema(PayloadSchemaType.TEXT, lowercase=False, min_token_len=3)
    view = build_view([{"t": "Hello big World"}, {"t": "hello world"}, {"t": ["Hello", "World"]}], {"t": schema}, bulk=True)
    parsed = parse_filter({"must": {"key": "t", "match": {"text": "Hello World of"}}})
    assert evaluate_filter(parsed, view).tolist() == [True, False, True]
    assert naive_mask(parsed, view) == [True, False, True]


def test_evaluate_large_segment_uses_indexes() -> None:
    """A sanity run on 20k rows: indexed and unindexed keys together (no timing asserted)."""
    rng = np.random.default_rng(7)
    colors = ["red", "green", "blue", "black"]
    payloads: list[dict[str, Any] | None] = [
        {"color": colors[int(c)], "price": float(p), "stock": int(s)}
        for c, p, s in zip(rng.integers(0, 4, 20_000), rng.random(20_000) * 100, rng.integers(0, 50, 20_000))
    ]
    view = build_view(
        payloads,
        {"color": PayloadFieldSchema(PayloadSchemaType.KEYWORD), "price": PayloadFieldSchema(PayloadSchemaType.FLOAT)},
        bulk=True,
    )
    raw = {
        "must": [{"key": "color", "match": {"any": ["red", "blue"]}}, {"key": "stock", "range": {"gt": 40}}],
        "must_not": [{"key": "price", "range": {"lt": 10}}],
    }
    parsed = parse_filter(raw)
    planned = evaluate_filter(parsed, view)
    expected = [
        p is not None and p["color"] in ("red", "blue") and p["stock"] > 40 and not p["price"] < 10 for p in payloads
    ]
    assert planned.tolist() == expected
    assert 0 < planned.sum() < len(payloads)


@settings(max_examples=50, deadline=None)
@given(payloads=st.lists(PAYLOADS, max_size=16), schemas=SCHEMA_SETS, raw_filter=FILTERS)
def test_serialized_indexes_answer_the_same(
    payloads: list[dict[str, Any] | None], schemas: dict[str, PayloadFieldSchema], raw_filter: dict[str, Any]
) -> None:
    view = build_view(payloads, schemas, bulk=True)
    loaded = ListView(
        payloads=view.payloads,
        ids=view.ids,
        indexes={key: FieldIndex.from_bytes(index.to_bytes()) for key, index in view.indexes.items()},
    )
    for key, index in loaded.indexes.items():
        assert index.schema == view.indexes[key].schema
        assert index.wrong_type_mask(view.count).tolist() == view.indexes[key].wrong_type_mask(view.count).tolist()
    parsed = parse_filter(raw_filter)
    assert evaluate_filter(parsed, loaded).tolist() == evaluate_filter(parsed, view).tolist()


def test_corrupt_index_bytes_are_reported() -> None:
    with pytest.raises(DataCorruption):
        FieldIndex.from_bytes(b"not an archive")


def test_long_match_any_list_takes_the_flat_path_and_stays_exact() -> None:
    from qcluster.engine._field_index import _UNION_PER_VALUE_MAX
    from qcluster.engine.filters import parse_filter
    from qcluster.types import PayloadFieldSchema, PayloadSchemaType

    index = FieldIndex("k", PayloadFieldSchema(type=PayloadSchemaType.KEYWORD))
    payloads = [{"k": [f"v{row % 500}", f"w{row % 7}"]} if row % 11 else {"k": row} for row in range(2000)]
    index.add_many(0, payloads)
    wanted = [f"v{value}" for value in range(0, 500, 2)] + ["absent"]
    assert len(wanted) > _UNION_PER_VALUE_MAX
    condition = parse_filter({"must": [{"key": "k", "match": {"any": wanted}}]}).must[0]
    mask = index.mask(condition, len(payloads))
    assert mask is not None
    expected = [isinstance(p["k"], list) and p["k"][0] in set(wanted) for p in payloads]
    assert mask.tolist() == expected
