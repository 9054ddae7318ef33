from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicaStatusReply(_message.Message):
    __slots__ = ("exists", "last_seq", "last_term", "known_term")
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    KNOWN_TERM_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    last_seq: int
    last_term: int
    known_term: int
    def __init__(self, exists: _Optional[bool] = ..., last_seq: _Optional[int] = ..., last_term: _Optional[int] = ..., known_term: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("shard", "primary_term", "file", "data")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_TERM_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    primary_term: int
    file: str
    data: bytes
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., primary_term: _Optional[int] = ..., file: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class InstallSnapshotReply(_message.Message):
    __slots__ = ("last_seq", "last_term")
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    last_seq: int
    last_term: int
    def __init__(self, last_seq: _Optional[int] = ..., last_term: _Optional[int] = ...) -> None: ...

class ShardRef(_message.Message):
    __slots__ = ("collection", "shard_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    shard_id: int
    def __init__(self, collection: _Optional[str] = ..., shard_id: _Optional[int] = ...) -> None: ...

class ReplicateRequest(_message.Message):
    __slots__ = ("shard", "primary_term", "operation", "previous_term")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_TERM_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_TERM_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    primary_term: int
    operation: bytes
    previous_term: int
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., primary_term: _Optional[int] = ..., operation: _Optional[bytes] = ..., previous_term: _Optional[int] = ...) -> None: ...

class ReplicateReply(_message.Message):
    __slots__ = ("outcome", "last_seq", "known_term", "message", "last_term")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        APPLIED: _ClassVar[ReplicateReply.Outcome]
        DUPLICATE: _ClassVar[ReplicateReply.Outcome]
        GAP: _ClassVar[ReplicateReply.Outcome]
        STALE_TERM: _ClassVar[ReplicateReply.Outcome]
        NOT_FOUND: _ClassVar[ReplicateReply.Outcome]
        REJECTED: _ClassVar[ReplicateReply.Outcome]
        DIVERGED: _ClassVar[ReplicateReply.Outcome]
    APPLIED: ReplicateReply.Outcome
    DUPLICATE: ReplicateReply.Outcome
    GAP: ReplicateReply.Outcome
    STALE_TERM: ReplicateReply.Outcome
    NOT_FOUND: ReplicateReply.Outcome
    REJECTED: ReplicateReply.Outcome
    DIVERGED: ReplicateReply.Outcome
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    KNOWN_TERM_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    outcome: ReplicateReply.Outcome
    last_seq: int
    known_term: int
    message: str
    last_term: int
    def __init__(self, outcome: _Optional[_Union[ReplicateReply.Outcome, str]] = ..., last_seq: _Optional[int] = ..., known_term: _Optional[int] = ..., message: _Optional[str] = ..., last_term: _Optional[int] = ...) -> None: ...

class FetchOperationsRequest(_message.Message):
    __slots__ = ("shard", "after_seq", "limit")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    shard: ShardRef
    after_seq: int
    limit: int
    def __init__(self, shard: _Optional[_Union[ShardRef, _Mapping]] = ..., after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class FetchOperationsReply(_message.Message):
    __slots__ = ("available", "operations", "previous_term")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_TERM_FIELD_NUMBER: _ClassVar[int]
    available: bool
    operations: _containers.RepeatedScalarFieldContainer[bytes]
    previous_term: int
    def __init__(self, available: _Optional[bool] = ..., operations: _Optional[_Iterable[bytes]] = ..., previous_term: _Optional[int] = ...) -> None: ...

class ShardDigestReply(_message.Message):
    __slots__ = ("points_count", "content_digest", "last_seq")
    POINTS_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    points_count: int
    content_digest: str
    last_seq: int
    def __init__(self, points_count: _Optional[int] = ..., content_digest: _Optional[str] = ..., last_seq: _Optional[int] = ...) -> None: ...
