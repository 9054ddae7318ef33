"""Failures on the client side as qcluster's errors (``qcluster.errors``):
a gRPC status, a REST error response from qdrant-client, or a connection
that failed. The inverse of the server's table in ``api/error_mapping.py``."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import grpc
import httpx
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from qcluster.client._dense import is_message_too_large
from qcluster.errors import (
    AlreadyExists,
    DataCorruption,
    DeadlineExceeded,
    Forbidden,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    Overloaded,
    PreconditionFailed,
    QclusterError,
    StorageFull,
    Unauthorized,
    Unavailable,
)

__all__ = ["as_qcluster_error", "error_from_rpc", "raises_qcluster_errors", "raises_qcluster_errors_async"]

P = ParamSpec("P")
T = TypeVar("T")


def error_from_rpc(error: grpc.RpcError) -> QclusterError:
    """The server's status as qcluster's error (the inverse of the server's table)."""
    code = error.code()  # type: ignore[attr-defined]
    message = error.details() or code.name  # type: ignore[attr-defined]
    simple: dict[grpc.StatusCode, type[QclusterError]] = {
        grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest, grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.ALREADY_EXISTS: AlreadyExists, grpc.StatusCode.FAILED_PRECONDITION: PreconditionFailed,
        grpc.StatusCode.UNAUTHENTICATED: Unauthorized, grpc.StatusCode.PERMISSION_DENIED: Forbidden,
        grpc.StatusCode.UNAVAILABLE: Unavailable, grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
        grpc.StatusCode.DATA_LOSS: DataCorruption,
    }
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and is_message_too_large(error):
        return LimitExceeded(f"{message} (split the request: smaller batch_size, or raise the node's "
                             "service.max_request_size_mb)")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "no space left" in message:
        return StorageFull(message)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Overloaded(message, retry_after_s=0.0)
    return simple.get(code, QclusterError)(message)


def as_qcluster_error(error: Exception) -> QclusterError | None:
    """qdrant-client's and gRPC's failures as qcluster errors."""
    if isinstance(error, QclusterError):
        return error
    if isinstance(error, grpc.RpcError):
        return error_from_rpc(error)
    if isinstance(error, UnexpectedResponse):
        try:
            message = str(error.structured()["status"]["error"])
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {error.status_code}: {error.reason_phrase}"
        by_status: dict[int, type[QclusterError]] = {400: InvalidRequest, 422: InvalidRequest, 401: Unauthorized,
                                                     403: Forbidden, 404: NotFound}
        if error.status_code == 409:  # the server's AlreadyExists and PreconditionFailed
            return (AlreadyExists if "already exists" in message else PreconditionFailed)(message)
        if error.status_code in (502, 503):
            return Unavailable(message)
        if error.status_code == 504:
            return DeadlineExceeded(message)
        if error.status_code == 507:
            return StorageFull(message)
        if error.status_code == 429:
            return Overloaded(message, retry_after_s=0.0)
        return by_status.get(error.status_code, QclusterError)(message)
    if isinstance(error, ResponseHandlingException | httpx.TransportError | ConnectionError):
        return Unavailable(f"cannot reach the node: {error}")
    return None



def raises_qcluster_errors(function: Callable[P, T]) -> Callable[P, T]:
    """SDK methods that call qdrant-client raise qcluster errors, like the bulk paths."""

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return function(*args, **kwargs)
        except (grpc.RpcError, UnexpectedResponse, ResponseHandlingException, httpx.TransportError) as error:
            mapped = as_qcluster_error(error)
            assert mapped is not None
            raise mapped from error

    return call


def raises_qcluster_errors_async(function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(function)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await function(*args, **kwargs)
        except (grpc.RpcError, UnexpectedResponse, ResponseHandlingException, httpx.TransportError) as error:
            mapped = as_qcluster_error(error)
            assert mapped is not None
            raise mapped from error

    return call
