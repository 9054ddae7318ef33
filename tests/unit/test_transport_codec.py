"""The internal wire codec of the Shards calls: values round-trip exactly,
remote errors come back as their class, and damaged bytes are DataCorruption."""

from __future__ import annotations

import numpy as np
import pytest

from qcluster.errors import DataCorruption, InvalidRequest, NotFound, NotLeader, QclusterError, ShardUnavailable
from qcluster.operations import DeletePoints, PointSelector, SetPayload
from qcluster.transport import codec
from qcluster.types import Direction, OrderBy, PayloadSelector, Record


def test_records_and_pages_round_trip() -> None:
    records = [Record(id=7, payload={"a": [1, "x"]}, vectors={"": np.array([0.5, -1.25], dtype=np.float32)}),
               Record(id="1b4e28ba-2fa1-11d2-883f-0016d3cca427", payload=None, vectors=None, order_value=2.5)]
    back = codec.records_from_wire(codec.decode_answer(codec.encode_answer(codec.records_to_wire(records)), "r"))
    assert [(record.id, record.payload, record.order_value) for record in back] == [
        (record.id, record.payload, record.order_value) for record in records]
    assert back[0].vectors is not None and back[0].vectors[""].tolist() == [0.5, -1.25]
    page = codec.page_from_wire(codec.decode_answer(codec.encode_answer(codec.page_to_wire(records, 9)), "p"))
    assert [record.id for record in page[0]] == [7, records[1].id] and page[1] == 9


def test_scroll_and_retrieve_calls_round_trip() -> None:
    call = codec.ScrollCall(filter={"must": [{"key": "k", "match": {"value": 1}}]}, limit=10, offset=3,
                            order_by=OrderBy(key="n", direction=Direction.DESC, start_from=1.5),
                            with_payload=PayloadSelector(enabled=True, include=("a",)), with_vector=("v",))
    assert codec.decode_scroll(codec.encode_scroll(call)) == call
    ids, selector, with_vector = codec.decode_retrieve(codec.encode_retrieve(
        [1, 2], with_payload=PayloadSelector(enabled=False), with_vector=True))
    assert ids == [1, 2] and selector == PayloadSelector(enabled=False) and with_vector is True


def test_writes_round_trip() -> None:
    for operation in (DeletePoints(selector=PointSelector(ids=(1, 2))),
                      SetPayload(selector=PointSelector(ids=(3,)), payload={"x": 1}, key=None)):
        assert codec.decode_write(codec.encode_write(operation)) == operation


@pytest.mark.parametrize("error", [NotFound("gone"), InvalidRequest("bad field"), ShardUnavailable("later")])
def test_remote_errors_keep_their_class(error: QclusterError) -> None:
    with pytest.raises(type(error), match=error.message):
        codec.decode_answer(codec.encode_failure(error), "reply")


def test_an_error_that_needs_more_than_a_message_becomes_its_base() -> None:
    with pytest.raises(QclusterError) as raised:
        codec.decode_answer(codec.encode_failure(NotLeader("moved", leader_hint="x")), "reply")
    assert raised.value.retryable and raised.value.message == "moved"


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01\x02"])
def test_damaged_bytes_are_data_corruption(data: bytes) -> None:
    with pytest.raises(DataCorruption):
        codec.decode_answer(data, "reply")
    with pytest.raises(DataCorruption):
        codec.decode_scroll(data)
