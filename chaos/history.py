"""The history of a chaos run: one JSON line per event, written by the workload.

Two events per operation, both carrying its unique op id ``i`` and its
process ``p`` (an in-flight slot of the workload: a process runs one
operation at a time, as in Jepsen; -1 for one never sent)::

    invoke:     {"p", "i", "type": "invoke", "f", "t", "node", "api", "consistency", "value",
                 "scheduled", "retry_of"}
    completion: {"p", "i", "type": "ok" | "fail" | "info", "f", "t", "value", "error", "status"}

``t`` is ``time.time()`` when the event happened; ``scheduled`` is the
operation's intended start in the open loop (latency is measured from it);
``retry_of`` is the op id a read retries, else null. Outcomes:

- ``ok``: it happened, with the result in ``value``;
- ``fail``: it certainly did not happen (a 4xx, a connection refused before
  anything was sent, or never sent because the client was overloaded);
- ``info``: it may have happened (a timeout, a 5xx on a write, a connection
  lost after sending). An invoke without a completion (the workload was
  killed) reads as ``info``.

Functions (``f``) and values: ``add`` (a new point id of the set), ``write``
(``[key, version]`` of a register), ``delete`` (a set id whose add was
acknowledged), ``read`` (invoke: the key; ok: ``[key, version | null]``),
``get`` (invoke: a set id; ok: ``[id, found]``), ``count`` and ``search``
(ok: a number of points).

The writer flushes every line, so a killed workload loses at most the line
it was writing; the reader skips a torn last line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal

__all__ = [
    "READ_FUNCTIONS", "WRITE_FUNCTIONS", "HistoryWriter", "Operation", "Outcome", "operations", "read_events",
    "read_operations",
]

Outcome = Literal["ok", "fail", "info"]
OUTCOMES: Final[frozenset[str]] = frozenset({"ok", "fail", "info"})
WRITE_FUNCTIONS: Final[frozenset[str]] = frozenset({"add", "write", "delete"})
READ_FUNCTIONS: Final[frozenset[str]] = frozenset({"read", "get", "count", "search"})
EVENT_COUNT_MAX: Final = 10_000_000


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation: its invoke joined with its completion.

    ``completed`` is ``math.inf`` when the history holds no completion (the
    operation may still have happened: its outcome is ``info``).
    """

    op_id: int
    process: int
    function: str
    node: int
    api: str
    consistency: str | None
    argument: Any
    invoked: float
    scheduled: float
    retry_of: int | None
    outcome: Outcome
    completed: float
    result: Any
    error: str | None
    status: int | str | None

    @property
    def is_write(self) -> bool:
        return self.function in WRITE_FUNCTIONS

    @property
    def latency_s(self) -> float:
        """From the intended start to the completion (inf without one)."""
        return self.completed - self.scheduled


class HistoryWriter:
    """Appends events to a history file, one flushed JSON line each.

    Not thread-safe; the workload calls it from its event loop only.
    """

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def invoke(self, *, process: int, op_id: int, function: str, node: int, api: str,
               consistency: str | None, value: Any, invoked: float, scheduled: float,
               retry_of: int | None = None) -> None:
        """Record that operation ``op_id`` is being sent."""
        assert function in WRITE_FUNCTIONS | READ_FUNCTIONS, function
        assert scheduled <= invoked + 1.0, (scheduled, invoked)
        self._write({"p": process, "i": op_id, "type": "invoke", "f": function, "t": invoked, "node": node,
                     "api": api, "consistency": consistency, "value": value, "scheduled": scheduled,
                     "retry_of": retry_of})

    def complete(self, *, process: int, op_id: int, function: str, outcome: Outcome, completed: float,
                 value: Any = None, error: str | None = None, status: int | str | None = None) -> None:
        """Record how operation ``op_id`` ended."""
        assert outcome in OUTCOMES, outcome
        assert outcome == "ok" or error is not None, "a fail or info carries its error"
        self._write({"p": process, "i": op_id, "type": outcome, "f": function, "t": completed, "value": value,
                     "error": error, "status": status})

    def _write(self, event: dict[str, Any]) -> None:
        self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of a history file in file order; a torn line (a killed
    writer) is skipped, and so is anything past EVENT_COUNT_MAX events."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            if number >= EVENT_COUNT_MAX:
                return
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and "i" in event and "type" in event:
                yield event


def operations(events: Iterable[dict[str, Any]]) -> list[Operation]:
    """Join invokes with completions, sorted by invoke time (then op id).
    A completion without an invoke is ignored."""
    invokes: dict[int, dict[str, Any]] = {}
    completions: dict[int, dict[str, Any]] = {}
    for event in events:
        target = invokes if event["type"] == "invoke" else completions
        target[int(event["i"])] = event
    joined = [_operation(invoke, completions.get(op_id)) for op_id, invoke in invokes.items()]
    joined.sort(key=lambda operation: (operation.invoked, operation.op_id))
    return joined


def _operation(invoke: dict[str, Any], completion: dict[str, Any] | None) -> Operation:
    invoked = float(invoke["t"])
    if completion is None:
        outcome: Outcome = "info"
        completed, result, error, status = math.inf, None, "no completion in the history", None
    else:
        assert completion["type"] in OUTCOMES, completion
        outcome = completion["type"]
        completed = float(completion["t"])
        result, error, status = completion.get("value"), completion.get("error"), completion.get("status")
    retry_of = invoke.get("retry_of")
    return Operation(
        op_id=int(invoke["i"]), process=int(invoke["p"]), function=str(invoke["f"]), node=int(invoke["node"]),
        api=str(invoke["api"]), consistency=invoke.get("consistency"), argument=invoke.get("value"),
        invoked=invoked, scheduled=float(invoke.get("scheduled", invoked)),
        retry_of=None if retry_of is None else int(retry_of), outcome=outcome, completed=completed,
        result=result, error=error, status=status)


def read_operations(path: Path) -> list[Operation]:
    """``operations(read_events(path))``; an absent file is an empty history."""
    if not path.exists():
        return []
    return operations(read_events(path))
