"""Proposing cluster commands: retries while the outcome is unknown."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Final

from qcluster.cluster.commands import Command
from qcluster.cluster.state import ClusterState, Result
from qcluster.errors import DeadlineExceeded, QclusterError

__all__ = ["Proposer", "new_request_id"]

ProposeOnce = Callable[[Command, float], Awaitable[Result]]

_ATTEMPT_TIMEOUT_S: Final = 3.0
_RETRY_PAUSE_S: Final = 0.2


def new_request_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


class Proposer:
    """``state()`` reads this node's applied cluster state; ``propose(command)``
    commits a command (retrying the same request id, so it applies once)."""

    def __init__(self, *, state: Callable[[], ClusterState], propose_once: ProposeOnce,
                 wait_for_version: Callable[[int, float], Awaitable[ClusterState]],
                 give_up_on: tuple[type[QclusterError], ...] = ()) -> None:
        self.state = state
        self._propose_once = propose_once
        self._wait_for_version = wait_for_version
        self._give_up_on = give_up_on  # retryable errors raised at once all the same

    async def propose(self, command: Command, *, timeout_s: float = 10.0) -> Result:
        """The command's committed Result (accepted or rejected). Raises a
        retryable error when no outcome was learned within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                return await self._propose_once(command, max(0.1, min(_ATTEMPT_TIMEOUT_S, left)))
            except QclusterError as error:
                if not error.retryable or isinstance(error, self._give_up_on) \
                        or time.monotonic() + _RETRY_PAUSE_S >= deadline:
                    raise
            await asyncio.sleep(_RETRY_PAUSE_S)

    async def wait_for_version(self, version: int, *, timeout_s: float) -> ClusterState:
        try:
            return await self._wait_for_version(version, timeout_s)
        except TimeoutError as error:
            raise DeadlineExceeded(f"the cluster state did not reach version {version} in {timeout_s} s") from error
