"""The replicated state machine behind the one ``@replicated apply(bytes)``:
the current ClusterState, how a committed command changes it, and how it
is written to and restored from the full dump.

It has no pysyncobj import, so unit tests drive it directly.

Threading: ``apply``, ``write_dump`` and ``restore_dump`` run on pysyncobj's
tick thread only (one thread, so no two of them ever overlap). Any other
thread reads ``state``: the attribute holds an immutable ClusterState and is
replaced by one reference assignment, which is atomic in CPython, so a
reader sees either the old or the new state, never a mixture, without a lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from qcluster.cluster import transitions
from qcluster.cluster.state import ClusterState, Result, ResultCode
from qcluster.consensus._full_dump import FullDump, RaftEntry, read_dump, write_dump
from qcluster.consensus.state_codec import decode_state, encode_state
from qcluster.errors import DataCorruption

__all__ = ["APPLY_FAILED_MESSAGE", "ReplicatedStateMachine"]

_logger = logging.getLogger(__name__)

APPLY_FAILED_MESSAGE: Final = "internal error while applying the command; the state is unchanged"


class ReplicatedStateMachine:
    """The state, replaced on every committed command.

    ``on_change(state)`` is called on the tick thread after a command that
    changed the version and after a dump was restored; it must not raise and
    must not block (the Raft node hands it straight to the event loop).
    """

    __slots__ = ("_on_change", "_restore_error", "_state")

    def __init__(self, *, on_change: Callable[[ClusterState], None]) -> None:
        self._state = ClusterState()
        self._on_change = on_change
        self._restore_error: DataCorruption | None = None

    @property
    def state(self) -> ClusterState:
        """The state after the last applied command; safe to read from any thread."""
        return self._state

    @property
    def restore_error(self) -> DataCorruption | None:
        """Why the last dump could not be restored, if it could not: the state is then stale."""
        return self._restore_error

    def apply(self, command: object) -> Result:
        """Apply one committed command. Never raises.

        pysyncobj retries an entry whose apply raised on every tick, which
        wedges the whole cluster (design.md §7), so even a bug in
        ``transitions`` becomes a rejected command: the state stays as it was,
        the error is logged, and every node — running the same code on the
        same input — rejects it the same way.
        """
        before = self._state
        if not isinstance(command, bytes):
            return Result(ResultCode.INVALID, f"a command is bytes, not {type(command).__name__}", before.version)
        try:
            after, result = transitions.apply_encoded(before, command)
        except Exception:
            _logger.exception("applying a committed command failed; it is rejected on every node")
            return Result(ResultCode.INVALID, APPLY_FAILED_MESSAGE, before.version)
        self._state = after
        if after.version != before.version:
            self._notify(after)
        return result

    def write_dump(self, path: str, raft_data: tuple[Any, ...]) -> None:
        """pysyncobj's ``serializer(path, (last_entry, previous_entry, members))``.

        Runs on the tick thread right after the entries up to ``last_entry``
        were applied, so ``self._state`` is exactly the state at that entry.
        pysyncobj treats an exception as a failed compaction and keeps its log.
        """
        last_entry, previous_entry, members = raft_data
        dump = FullDump(
            state=encode_state(self._state),
            last_entry=_entry(last_entry),
            previous_entry=_entry(previous_entry),
            member_addresses=tuple(sorted(str(member.id) for member in members)),
        )
        write_dump(Path(path), dump)
        # Tests assert on this line and on the one in restore_dump (coverage marks).
        _logger.info("wrote the raft dump: state version %d at raft index %d", self._state.version, dump.last_entry[1])

    def restore_dump(self, path: str) -> tuple[RaftEntry, RaftEntry, set[str]]:
        """What pysyncobj's ``deserializer(path)`` returns, with the members as
        addresses (the Raft node turns them into pysyncobj nodes).

        Replaces the state with the dump's. pysyncobj logs and swallows an
        exception from here and carries on with the state it had, which is
        then stale; ``restore_error`` records that so the node can refuse to
        serve it (``RaftNode`` checks the dump at start as well).
        """
        try:
            dump = read_dump(Path(path))
            state = decode_state(dump.state)
        except DataCorruption as exc:
            _logger.critical("cannot restore the raft dump %s: %s", path, exc.message)
            self._restore_error = exc
            raise
        self._state = state
        self._restore_error = None
        _logger.info("restored the raft dump: state version %d at raft index %d", state.version, dump.last_entry[1])
        self._notify(state)
        return dump.last_entry, dump.previous_entry, set(dump.member_addresses)

    def _notify(self, state: ClusterState) -> None:
        # A failing listener must not undo or repeat an applied command: the
        # state is already replaced, exactly as on every other node.
        try:
            self._on_change(state)
        except Exception:
            _logger.exception("a cluster state listener failed")


def _entry(raw: Any) -> RaftEntry:
    command, index, term = raw
    assert isinstance(command, bytes), "pysyncobj log commands are bytes"
    assert isinstance(index, int)
    assert isinstance(term, int)
    return (command, index, term)
