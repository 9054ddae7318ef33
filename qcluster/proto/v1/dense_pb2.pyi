from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Matrix(_message.Message):
    __slots__ = ("rows", "dim", "data")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    rows: int
    dim: int
    data: bytes
    def __init__(self, rows: _Optional[int] = ..., dim: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class DenseUpsertRequest(_message.Message):
    __slots__ = ("collection_name", "wait", "ids", "uuids", "vectors", "payloads_json")
    class VectorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Matrix
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Matrix, _Mapping]] = ...) -> None: ...
    COLLECTION_NAME_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    UUIDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_JSON_FIELD_NUMBER: _ClassVar[int]
    collection_name: str
    wait: bool
    ids: _containers.RepeatedScalarFieldContainer[int]
    uuids: _containers.RepeatedScalarFieldContainer[str]
    vectors: _containers.MessageMap[str, Matrix]
    payloads_json: bytes
    def __init__(self, collection_name: _Optional[str] = ..., wait: _Optional[bool] = ..., ids: _Optional[_Iterable[int]] = ..., uuids: _Optional[_Iterable[str]] = ..., vectors: _Optional[_Mapping[str, Matrix]] = ..., payloads_json: _Optional[bytes] = ...) -> None: ...

class DenseUpsertReply(_message.Message):
    __slots__ = ("operation_id", "status", "time")
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    operation_id: int
    status: str
    time: float
    def __init__(self, operation_id: _Optional[int] = ..., status: _Optional[str] = ..., time: _Optional[float] = ...) -> None: ...

class DenseQueryRequest(_message.Message):
    __slots__ = ("collection_name", "using", "queries", "limit", "offset", "filter_json", "hnsw_ef", "exact", "score_threshold", "with_payload")
    COLLECTION_NAME_FIELD_NUMBER: _ClassVar[int]
    USING_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FILTER_JSON_FIELD_NUMBER: _ClassVar[int]
    HNSW_EF_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    collection_name: str
    using: str
    queries: Matrix
    limit: int
    offset: int
    filter_json: bytes
    hnsw_ef: int
    exact: bool
    score_threshold: float
    with_payload: bool
    def __init__(self, collection_name: _Optional[str] = ..., using: _Optional[str] = ..., queries: _Optional[_Union[Matrix, _Mapping]] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ..., filter_json: _Optional[bytes] = ..., hnsw_ef: _Optional[int] = ..., exact: _Optional[bool] = ..., score_threshold: _Optional[float] = ..., with_payload: _Optional[bool] = ...) -> None: ...

class DenseQueryReply(_message.Message):
    __slots__ = ("counts", "ids", "uuids", "scores", "payloads_json", "time")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    UUIDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_JSON_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    counts: bytes
    ids: bytes
    uuids: _containers.RepeatedScalarFieldContainer[str]
    scores: bytes
    payloads_json: bytes
    time: float
    def __init__(self, counts: _Optional[bytes] = ..., ids: _Optional[bytes] = ..., uuids: _Optional[_Iterable[str]] = ..., scores: _Optional[bytes] = ..., payloads_json: _Optional[bytes] = ..., time: _Optional[float] = ...) -> None: ...
