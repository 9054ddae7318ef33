"""Filter parsing (errors name the JSON path) and the naive evaluator's semantics."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qcluster import limits
from qcluster.engine.filters import (
    Filter,
    MatchValue,
    ValueKind,
    filter_keys,
    get_raw_values,
    get_values,
    matches,
    parse_filter,
    tokenize,
)
from qcluster.errors import InvalidRequest, LimitExceeded


def check(raw_filter: dict[str, Any], payload: dict[str, Any] | None, point_id: int | str = 1, **kwargs: Any) -> bool:
    return matches(parse_filter(raw_filter), payload, point_id, **kwargs)


def must(condition: dict[str, Any]) -> dict[str, Any]:
    return {"must": [condition]}


# ------------------------------------------------------------------ parse errors


@pytest.mark.parametrize(
    ("raw", "message_start"),
    [
        ([], "filter: expected an object, got array"),
        ({"mustt": []}, "filter.mustt: unknown field"),
        ({"must": 3}, "filter.must: expected a condition or an array of conditions, got number"),
        ({"must": [{"foo": 1}]}, "filter.must[0]: unknown condition, expected one of key/has_id/is_empty/is_null/nested"),
        (
            {"must": [{}, {}, {"key": "a", "range": {"gt": 1, "gte": "x"}}]},
            "filter.must[2].range.gte: expected a number, got string",
        ),
        ({"must": {"key": "a", "range": {"gte": "yesterday"}}}, "filter.must.range.gte: expected an RFC 3339 datetime"),
        ({"should": [{"key": "a", "match": {"value": 1.5}}]}, "filter.should[0].match.value: expected a string, integer"),
        ({"must": [{"key": "a", "match": {"any": ["x", 1]}}]}, "filter.must[0].match.any[1]: expected a string like"),
        ({"must": [{"key": "a", "match": {"value": 1, "text": "x"}}]}, "filter.must[0].match: expected exactly one of"),
        ({"must": [{"key": "a"}]}, "filter.must[0]: a field condition needs exactly one of match/range/values_count"),
        ({"must": [{"key": "a..b", "match": {"value": 1}}]}, "filter.must[0].key: expected a name"),
        ({"must": [{"key": 5, "match": {"value": 1}}]}, "filter.must[0].key: expected a string, got number"),
        ({"must": [{"has_id": [1, -2]}]}, "filter.must[0].has_id[1]: point id -2 is out of"),
        ({"must": [{"has_id": ["nope"]}]}, "filter.must[0].has_id[0]: point id 'nope' is neither"),
        (
            {"must": [{"key": "loc", "geo_radius": {"center": {"lon": 0, "lat": 0}, "radius": 1}}]},
            "filter.must[0].geo_radius: geo conditions are not supported",
        ),
        ({"must": [{"nested": {"key": "a", "filter": {"must": [{"x": 1}]}}}]}, "filter.must[0].nested.filter.must[0]"),
        ({"min_should": {"conditions": [], "min_count": 0}}, "filter.min_should.min_count: must be 1 or larger"),
        ({"must": [{"key": "a", "values_count": {"gt": -1}}]}, "filter.must[0].values_count.gt: expected a non-negative"),
        ({"must": [{"is_empty": {"key": "a", "x": 1}}]}, "filter.must[0].is_empty.x: unknown field"),
    ],
)
def test_parse_errors_name_the_path(raw: object, message_start: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_filter(raw)
    assert caught.value.message.startswith(message_start), caught.value.message


def test_parse_error_uses_the_given_root_path() -> None:
    with pytest.raises(InvalidRequest, match=r"^body\.filter\.must: "):
        parse_filter({"must": "x"}, path="body.filter")


def test_nulls_are_absent_fields() -> None:
    parsed = parse_filter({"must": None, "should": None, "must_not": [{"key": "a", "match": {"value": "x"}, "range": None}]})
    assert parsed.must is None
    assert parsed.must_not is not None and len(parsed.must_not) == 1


def test_condition_limit() -> None:
    at_limit = {"must": [{"key": "a", "match": {"value": 1}}] * limits.FILTER_CONDITIONS_MAX}
    parse_filter(at_limit)
    nested_over = {"must": [{"must": [{"key": "a", "match": {"value": 1}}] * limits.FILTER_CONDITIONS_MAX}]}
    with pytest.raises(LimitExceeded, match="FILTER_CONDITIONS_MAX"):
        parse_filter(nested_over)


def test_depth_limit() -> None:
    def deep(levels: int) -> dict[str, Any]:
        raw: dict[str, Any] = {"must": [{"key": "a", "match": {"value": 1}}]}
        for _ in range(levels - 1):
            raw = {"must": [raw]}
        return raw

    parse_filter(deep(limits.FILTER_DEPTH_MAX))
    with pytest.raises(LimitExceeded, match="FILTER_DEPTH_MAX"):
        parse_filter(deep(limits.FILTER_DEPTH_MAX + 1))


def test_key_length_limit() -> None:
    with pytest.raises(LimitExceeded, match=r"^filter\.must\[0\]\.key: "):
        parse_filter({"must": [{"key": "k" * (limits.KEY_LENGTH_MAX + 1), "match": {"value": 1}}]})


def test_parsed_filters_are_hashable_and_keep_bool_apart_from_int() -> None:
    as_bool = parse_filter(must({"key": "a", "match": {"value": True}}))
    as_int = parse_filter(must({"key": "a", "match": {"value": 1}}))
    assert as_bool != as_int
    assert len({as_bool, as_int, parse_filter(must({"key": "a", "match": {"value": 1}}))}) == 2
    assert as_int.must == (parse_filter(must({"key": "a", "match": {"value": 1}})).must or ())
    condition = as_bool.must[0] if as_bool.must else None
    assert condition is not None and getattr(condition, "match") == MatchValue(kind=ValueKind.BOOL, value=True)


def test_single_condition_clause_equals_list_clause() -> None:
    single = parse_filter({"must": {"key": "a", "match": {"value": "x"}}})
    listed = parse_filter({"must": [{"key": "a", "match": {"value": "x"}}]})
    assert single == listed


def test_filter_keys() -> None:
    parsed = parse_filter(
        {
            "must": [{"key": "a.b", "match": {"value": 1}}, {"is_empty": {"key": "c"}}, {"has_id": [1]}],
            "should": [{"must_not": [{"key": "d", "range": {"lt": 1}}]}],
            "min_should": {"conditions": [{"nested": {"key": "arr", "filter": {"must": {"key": "x", "match": {"value": 1}}}}}], "min_count": 1},
        }
    )
    assert filter_keys(parsed) == {"a.b", "c", "d", "arr", "arr[].x"}


# ------------------------------------------------------------------ key paths

PAYLOAD = {
    "name": "jacket",
    "colors": ["red", "blue"],
    "count": 10,
    "price": 11.99,
    "meta": {"made": {"in": "IT"}, "dotted.key": 7},
    "reviews": [{"user": "alice", "score": 4, "tags": ["a", "b"]}, {"user": "bob", "score": 5}],
    "grid": [[1, 2], [3]],
    "nothing": None,
    "empty": [],
    "nulls": [None],
}


def test_get_values_paths() -> None:
    assert get_values(PAYLOAD, "name") == ["jacket"]
    assert get_values(PAYLOAD, "colors") == ["red", "blue"]
    assert get_raw_values(PAYLOAD, "colors") == [["red", "blue"]]
    assert get_values(PAYLOAD, "meta.made.in") == ["IT"]
    assert get_values(PAYLOAD, 'meta."dotted.key"') == [7]
    assert get_values(PAYLOAD, "reviews[].user") == ["alice", "bob"]
    assert get_values(PAYLOAD, "reviews[1].user") == ["bob"]
    assert get_values(PAYLOAD, "reviews[].tags") == ["a", "b"]
    assert get_values(PAYLOAD, "reviews.user") == []  # a key does not look inside an array
    assert get_values(PAYLOAD, "grid") == [[1, 2], [3]]  # one level only
    assert get_values(PAYLOAD, "grid[]") == [1, 2, 3]
    assert get_values(PAYLOAD, "nothing") == [None]
    assert get_values(PAYLOAD, "missing.deeper") == []
    assert get_values(None, "name") == []


# ------------------------------------------------------------------ semantics


def test_match_value_types_are_kept_apart() -> None:
    assert check(must({"key": "flag", "match": {"value": True}}), {"flag": True})
    assert not check(must({"key": "flag", "match": {"value": True}}), {"flag": 1})
    assert not check(must({"key": "n", "match": {"value": 1}}), {"n": True})
    assert not check(must({"key": "n", "match": {"value": 1}}), {"n": 1.0})
    assert not check(must({"key": "n", "match": {"value": 1}}), {"n": "1"})
    assert check(must({"key": "n", "match": {"value": 1}}), {"n": [0, 1]})
    assert check(must({"key": "colors", "match": {"value": "blue"}}), PAYLOAD)
    assert check(must({"key": "reviews[].user", "match": {"value": "bob"}}), PAYLOAD)
    assert not check(must({"key": "grid", "match": {"value": 1}}), PAYLOAD)
    assert check(must({"key": "grid[]", "match": {"value": 1}}), PAYLOAD)


def test_match_any_and_except() -> None:
    any_red = must({"key": "colors", "match": {"any": ["red", "green"]}})
    assert check(any_red, PAYLOAD)
    assert not check(any_red, {"colors": ["blue"]})
    assert not check(must({"key": "n", "match": {"any": [1, 2]}}), {"n": True})
    except_red = must({"key": "colors", "match": {"except": ["red"]}})
    assert check(except_red, {"colors": ["red", "blue"]})  # blue is not red
    assert not check(except_red, {"colors": ["red"]})
    assert not check(except_red, {"colors": []})
    assert not check(except_red, {})  # a missing key satisfies no match
    assert not check(except_red, {"colors": None})
    assert check(except_red, {"colors": 5})  # another type is "not in the list"
    assert check(must({"key": "n", "match": {"except": [1]}}), {"n": 1.5})
    assert not check(must({"key": "n", "match": {"except": [1]}}), {"n": 1})


def test_numeric_range() -> None:
    assert check(must({"key": "price", "range": {"gt": 11, "lt": 12}}), PAYLOAD)
    assert check(must({"key": "count", "range": {"gte": 9.5, "lte": 10}}), PAYLOAD)
    assert not check(must({"key": "count", "range": {"gt": 10}}), PAYLOAD)
    assert not check(must({"key": "flag", "range": {"gte": 0}}), {"flag": True})
    assert not check(must({"key": "s", "range": {"gte": 0}}), {"s": "5"})
    assert check(must({"key": "reviews[].score", "range": {"gte": 5}}), PAYLOAD)
    assert check(must({"key": "x", "range": {}}), {"x": -3})


def test_datetime_range() -> None:
    since_2023 = must({"key": "at", "range": {"gte": "2023-01-01T00:00:00Z"}})
    assert check(since_2023, {"at": "2023-01-01T00:00:00Z"})
    assert check(since_2023, {"at": "2023-01-01T01:00:00+01:00"})  # exactly the bound
    assert not check(since_2023, {"at": "2023-01-01T00:59:59+01:00"})
    assert check(since_2023, {"at": "2023-06-01"})
    assert check(since_2023, {"at": "2023-01-01 00:00:00"})  # naive is UTC
    assert not check(since_2023, {"at": "2022-12-31T23:59:59.999999"})
    assert not check(since_2023, {"at": "not a date"})
    assert not check(since_2023, {"at": 1_700_000_000})
    assert check(must({"key": "at", "range": {"lt": "2023-01-01"}}), {"at": ["2024-01-01", "2022-05-05T10:00:00-05:00"]})


def test_values_count() -> None:
    assert check(must({"key": "colors", "values_count": {"gte": 2}}), PAYLOAD)
    assert not check(must({"key": "colors", "values_count": {"gt": 2}}), PAYLOAD)
    assert check(must({"key": "name", "values_count": {"lte": 1, "gte": 1}}), PAYLOAD)
    assert check(must({"key": "missing", "values_count": {"lt": 1}}), PAYLOAD)
    assert check(must({"key": "nothing", "values_count": {"lt": 1}}), PAYLOAD)
    # one value's count must satisfy every bound at once
    assert not check(must({"key": "r[].tags", "values_count": {"gt": 1, "lt": 2}}), {"r": [{"tags": [1]}, {"tags": [1, 2, 3]}]})


def test_is_empty_and_is_null() -> None:
    def empty(key: str) -> bool:
        return check(must({"is_empty": {"key": key}}), PAYLOAD)

    def null(key: str) -> bool:
        return check(must({"is_null": {"key": key}}), PAYLOAD)

    assert (empty("missing"), empty("nothing"), empty("empty"), empty("nulls"), empty("name")) == (True, True, True, False, False)
    assert (null("missing"), null("nothing"), null("empty"), null("nulls"), null("name")) == (False, True, False, False, False)
    assert check(must({"is_null": {"key": "a[].b"}}), {"a": [{"b": 1}, {"b": None}]})


def test_has_id() -> None:
    uuid_text = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"
    has = parse_filter(must({"has_id": [3, uuid_text.upper()]}))
    assert matches(has, {}, 3)
    assert matches(has, {}, uuid_text)
    assert not matches(has, {}, 4)


def test_text_match_substring_and_tokens() -> None:
    text = must({"key": "t", "match": {"text": "ello wor"}})
    assert check(text, {"t": "Hello world"})  # no text index: substring
    assert not check(text, {"t": "Hello world"}, text_index_keys=frozenset({"t"}))
    tokens = must({"key": "t", "match": {"text": "WORLD hello"}})
    assert check(tokens, {"t": "hello, big world!"}, text_index_keys=frozenset({"t"}))
    assert check(tokens, {"t": ["hello", "world"]}, text_index_keys=frozenset({"t"}))
    assert not check(tokens, {"t": "hello, big world!"})
    assert not check(must({"key": "t", "match": {"text": "!!"}}), {"t": "x"}, text_index_keys=frozenset({"t"}))
    assert tokenize("Hello, wörld_x 42", lowercase=True) == ["hello", "wörld", "x", "42"]
    assert tokenize("a bb ccc dddd", min_token_len=2, max_token_len=3) == ["bb", "ccc"]


def test_nested() -> None:
    payload = {"dishes": [{"name": "soup", "vegan": True, "kcal": 100}, {"name": "steak", "vegan": False, "kcal": 800}]}
    both = {"must": [{"key": "name", "match": {"value": "soup"}}, {"key": "kcal", "range": {"gt": 500}}]}
    assert not check(must({"nested": {"key": "dishes", "filter": both}}), payload)
    # without nested, the two conditions may hold on different elements
    assert check({"must": [{"key": "dishes[].name", "match": {"value": "soup"}}, {"key": "dishes[].kcal", "range": {"gt": 500}}]}, payload)
    vegan_light = {"must": [{"key": "vegan", "match": {"value": True}}, {"key": "kcal", "range": {"lt": 500}}]}
    assert check(must({"nested": {"key": "dishes[]", "filter": vegan_light}}), payload)
    assert not check(must({"nested": {"key": "dishes", "filter": vegan_light}}), {"dishes": {"vegan": True, "kcal": 1}})
    assert not check(must({"nested": {"key": "dishes", "filter": {"must": {"has_id": [1]}}}}), payload, point_id=1)


def test_boolean_combinations() -> None:
    payload = {"a": 1, "b": "x"}
    a1 = {"key": "a", "match": {"value": 1}}
    b_y = {"key": "b", "match": {"value": "y"}}
    assert check({"should": [a1, b_y]}, payload)
    assert not check({"should": [b_y]}, payload)
    assert check({"should": []}, payload)  # no alternatives is no constraint
    assert check({"must_not": [b_y]}, payload)
    assert not check({"must": [a1], "must_not": [a1]}, payload)
    assert check({"min_should": {"conditions": [a1, b_y, {"key": "b", "match": {"value": "x"}}], "min_count": 2}}, payload)
    assert not check({"min_should": {"conditions": [a1, b_y], "min_count": 2}}, payload)
    assert check({"must": [{"should": [b_y, {"must_not": [b_y]}]}]}, payload)
    assert check({}, None)


# ------------------------------------------------------------------ property: vs an oracle

KEYS = ("a", "b", "c")
SCALARS = st.one_of(st.integers(-3, 3), st.booleans(), st.sampled_from(["x", "y", "z"]), st.floats(-3, 3), st.none())
FLAT_PAYLOADS = st.dictionaries(st.sampled_from(KEYS), SCALARS, max_size=3)
MATCH_VALUES = st.one_of(st.integers(-3, 3), st.booleans(), st.sampled_from(["x", "y"]))
BOUNDS = st.dictionaries(st.sampled_from(["gt", "gte", "lt", "lte"]), st.one_of(st.integers(-3, 3), st.floats(-3, 3)), max_size=2)
LEAF_CONDITIONS = st.one_of(
    st.builds(lambda key, value: {"key": key, "match": {"value": value}}, st.sampled_from(KEYS), MATCH_VALUES),
    st.builds(lambda key, bounds: {"key": key, "range": bounds}, st.sampled_from(KEYS), BOUNDS),
)
CLAUSES = st.lists(LEAF_CONDITIONS, max_size=3)
FLAT_FILTERS = st.fixed_dictionaries({}, optional={"must": CLAUSES, "should": CLAUSES, "must_not": CLAUSES})


def oracle_condition(condition: dict[str, Any], payload: dict[str, Any]) -> bool:
    """An independent reading of the documented semantics, flat payloads only."""
    if condition["key"] not in payload:
        return False
    value = payload[condition["key"]]
    if "match" in condition:
        wanted = condition["match"]["value"]
        return type(value) is type(wanted) and value == wanted
    if type(value) not in (int, float):
        return False
    bounds = condition["range"]
    return all(
        {"gt": value > bound, "gte": value >= bound, "lt": value < bound, "lte": value <= bound}[name]
        for name, bound in bounds.items()
    )


def oracle(raw_filter: dict[str, Any], payload: dict[str, Any]) -> bool:
    must_ok = all(oracle_condition(c, payload) for c in raw_filter.get("must", []))
    must_not_ok = not any(oracle_condition(c, payload) for c in raw_filter.get("must_not", []))
    should = raw_filter.get("should", [])
    should_ok = not should or any(oracle_condition(c, payload) for c in should)
    return must_ok and must_not_ok and should_ok


@settings(max_examples=400, deadline=None)
@given(raw_filter=FLAT_FILTERS, payload=FLAT_PAYLOADS)
def test_matches_agrees_with_oracle(raw_filter: dict[str, Any], payload: dict[str, Any]) -> None:
    parsed = parse_filter(raw_filter)
    assert isinstance(parsed, Filter)
    assert matches(parsed, payload, 1) == oracle(raw_filter, payload)


def test_long_any_lists_are_checked_whole_and_errors_still_name_the_element() -> None:
    from qcluster.api.schema.parse import optional_filter  # noqa: PLC0415

    names = [f"name-{index}" for index in range(20_000)]
    good = {"filter": {"must": [{"key": "name", "match": {"any": names}}]}}
    assert optional_filter(good, path="searches[2]") is good["filter"]
    assert optional_filter(good, path="searches[2]") is good["filter"]  # cached: same answer
    for bad_item, message in ((7, "expected a string like the first element"),
                              (True, "expected a string or an integer, got boolean"),
                              (1.5, "expected a string or an integer")):
        bad = {"filter": {"must": [{"key": "name", "match": {"any": [*names[:5000], bad_item, *names[5000:]]}}]}}
        with pytest.raises(InvalidRequest) as raised:
            optional_filter(bad, path="searches[2]")
        assert raised.value.message.startswith("searches[2].filter.must[0].match.any[5000]: " + message), \
            raised.value.message
    integers = {"filter": {"must": [{"key": "n", "match": {"any": list(range(10_000))}}]}}
    assert optional_filter(integers, path="") is integers["filter"]
    too_big = {"filter": {"must": [{"key": "n", "match": {"any": [1, 2**63]}}]}}
    with pytest.raises(InvalidRequest, match=r"filter.must\[0\].match.any\[1\]: integer .* outside the signed 64-bit"):
        optional_filter(too_big, path="")


def test_the_parsed_filter_cache_is_bounded_in_entries_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from qcluster.engine import filter_cache  # noqa: PLC0415

    monkeypatch.setattr(filter_cache, "_CACHE_ENTRIES", 8)
    monkeypatch.setattr(filter_cache, "_CACHE_BYTES", 4000)
    cache = filter_cache._BoundedCache()  # noqa: SLF001
    monkeypatch.setattr(filter_cache, "_parsed", cache)

    def flt(index: int, names: int) -> dict[str, Any]:
        return {"must": [{"key": "name", "match": {"any": [f"{index}-{n}" for n in range(names)]}}]}

    first = filter_cache.parsed_filter(flt(0, 1))
    assert filter_cache.parsed_filter(flt(0, 1)) is first, "a repeated filter comes from the cache"
    for index in range(1, 30):
        filter_cache.parsed_filter(flt(index, 1 + index % 40))
        assert len(cache._entries) <= 8  # noqa: SLF001
        assert cache._bytes <= 4000  # noqa: SLF001
        assert cache._bytes == sum(map(len, cache._entries))  # noqa: SLF001
    assert filter_cache.parsed_filter(flt(0, 1)) is not first, "the oldest entry was evicted"
    huge = flt(99, 2000)  # larger than the whole budget: parsed, never cached
    assert filter_cache.parsed_filter(huge) == filter_cache.parsed_filter(huge)
    assert all(b'"99-' not in key for key in cache._entries)  # noqa: SLF001


def test_filter_json_bytes_are_decoded_once_and_bad_json_is_named() -> None:
    from qcluster.engine.filter_cache import filter_from_json  # noqa: PLC0415

    raw = orjson.dumps({"must": [{"key": "name", "match": {"any": [f"n{i}" for i in range(1000)]}}]})
    first = filter_from_json(raw, path="filter_json")
    assert first == orjson.loads(raw)
    assert filter_from_json(bytes(raw), path="filter_json") is first, "equal bytes: the same object, not decoded"
    assert filter_from_json(raw + b" ", path="filter_json") == first
    assert filter_from_json(b"null", path="filter_json") is None
    with pytest.raises(InvalidRequest, match=r"^filter_json: not valid JSON"):
        filter_from_json(b'{"must": [', path="filter_json")


def test_filter_keys_are_canonical_and_the_per_thread_memo_never_answers_for_another_filter() -> None:
    import threading  # noqa: PLC0415

    from qcluster.engine.filter_cache import filter_key  # noqa: PLC0415

    one = {"must": [{"key": "year", "range": {"gte": 2000, "lte": 2010}}]}
    reordered = {"must": [{"range": {"lte": 2010, "gte": 2000}, "key": "year"}]}
    other = {"must": [{"key": "year", "range": {"gte": 2000, "lte": 2011}}]}
    assert filter_key(one) == filter_key(reordered), "key order does not matter"
    assert filter_key(other) != filter_key(one)
    # Alternating objects, and fresh equal-looking objects, each get their own key.
    for _ in range(3):
        assert filter_key(one) == filter_key(dict(one)) != filter_key(other)
    # A new object with the content of the last one keyed, created after it died.
    for upper in range(2000, 2050):
        assert filter_key({"must": [{"key": "year", "range": {"lte": upper}}]}).endswith(f"{upper}}}}}]}}".encode())
    seen: list[bytes] = []
    worker = threading.Thread(target=lambda: seen.append(filter_key(other)))
    worker.start()
    worker.join()
    assert seen == [filter_key(other)]
