"""The cluster secret on internal gRPC calls."""

from __future__ import annotations

import hmac
from typing import Final

import grpc

__all__ = ["SECRET_METADATA", "require_secret", "secret_metadata"]

SECRET_METADATA: Final = "x-qcluster-secret"


def secret_metadata(secret: str) -> tuple[tuple[str, str], ...]:
    return ((SECRET_METADATA, secret),)


async def require_secret(context: grpc.aio.ServicerContext, secret: bytes) -> None:
    """Abort the call with UNAUTHENTICATED unless it carries ``secret`` (constant-time compare)."""
    given = dict(context.invocation_metadata() or ()).get(SECRET_METADATA, "")
    if not hmac.compare_digest(given.encode(), secret):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "internal call without the cluster secret")
