from qcluster.proto.internal.v1 import replication_pb2 as _replication_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ShardCall(_message.Message):
    __slots__ = ("shard", "body")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    shard: _replication_pb2.ShardRef
    body: bytes
    def __init__(self, shard: _Optional[_Union[_replication_pb2.ShardRef, _Mapping]] = ..., body: _Optional[bytes] = ...) -> None: ...

class ShardCallReply(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class ShardSearchRequest(_message.Message):
    __slots__ = ("shard", "requests")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    shard: _replication_pb2.ShardRef
    requests: bytes
    def __init__(self, shard: _Optional[_Union[_replication_pb2.ShardRef, _Mapping]] = ..., requests: _Optional[bytes] = ...) -> None: ...

class ShardSearchReply(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: bytes
    def __init__(self, results: _Optional[bytes] = ...) -> None: ...
