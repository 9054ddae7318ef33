"""API-key authentication, shared by the REST and gRPC APIs.

A client proves it knows the node's API key with an ``api-key`` header (HTTP)
or metadata entry (gRPC), as qdrant-client sends it, or with
``Authorization: Bearer <key>``. Comparison is constant-time.
"""

from __future__ import annotations

import hmac

from qcluster.errors import Unauthorized

__all__ = ["authenticate"]


def authenticate(expected: str | None, *, api_key: str | None, authorization: str | None) -> None:
    """Raise ``Unauthorized`` unless the credentials match ``expected``
    (``None``: the node has no key and everyone may call)."""
    if expected is None:
        return
    given = api_key
    if given is None and authorization is not None and authorization.lower().startswith("bearer "):
        given = authorization[len("bearer "):].strip()
    if given is None:
        raise Unauthorized("Must provide an API key or an Authorization bearer token")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("Invalid API key or bearer token")
