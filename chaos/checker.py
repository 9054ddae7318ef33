"""The checker of a chaos run: ``check(run_dir) -> CheckResult``, pure over
the run's files (``config.json``, ``faults.jsonl``, ``history.jsonl``,
``final.json``; see ``chaos/history.py`` for the history format).

What each anomaly means, in Jepsen's terms (``ok`` = acknowledged, ``info``
= indeterminate, ``fail`` = certainly not applied):

- **lost** — an acknowledged write that the final state does not hold, read
  after the full heal through *every* node at ``consistency=all``:

  - an ``add`` acknowledged ``ok`` whose id is absent from a node's final
    read, unless a ``delete`` of that id was invoked (ok or info) — an add
    whose outcome is ``info`` may or may not be there and is never lost;
  - a register whose final version through a node is older than the newest
    version acknowledged for it, unless that final version was written by an
    ``info`` write: an indeterminate write may take effect at any time after
    its invocation, so it may legally land after a newer acknowledged one.

- **resurrected** — a ``delete`` acknowledged ``ok`` whose id is present in a
  node's final read.

- **stale** — a read that went back in time, counted per consistency level
  (``default``, ``primary``, ``majority``, ``all``):

  - a register ``read`` that returned version ``v`` (null counts as older
    than every version) of key ``k`` although a write of ``(k, v')`` with
    ``v' > v`` had completed ``ok`` *before the read was invoked*. A read
    invoked before that write completed is concurrent with it and may return
    either value. A version written by an ``info`` write is never stale (see
    lost above);
  - a ``get`` of a set id that answered "absent" although its add had
    completed ok before the get was invoked and no delete of it had been
    invoked before the get completed, or "present" although a delete of it
    had completed ok before the get was invoked.

  ``primary``, ``majority`` and ``all`` promise to read every write
  acknowledged before the read began: any stale read there fails the run.
  **Default reads** (``consistency`` absent: one in-sync replica, the
  node's own first) may be stale: a node whose view of the cluster lags, or
  that sits on the minority side of a partition, can serve a replica that
  was just fenced, i.e. any version that was once written. They are counted
  and reported with how far behind they were (``lag_s``: from the newer
  write's acknowledgement to the read's invocation), and they must respect
  the bound that holds at every level:

- **phantom** — a read at any level that returned a register version or a
  set id that no write had been invoked for before the read completed, or
  whose write had ``fail``\\ ed (certainly not applied). Nobody wrote that
  value: any phantom fails the run.

- **divergence** — replicas of one shard whose content digests differ in
  ``final.json``, or a final that saw no convergence within
  ``CONVERGENCE_BOUND_S`` of the heal, or nodes whose views of the cluster
  (Raft leader and members, placement version, each shard's primary,
  primary term, in-sync set and replica states; never timestamps or Raft
  indexes) differ.

- **availability** — per fault episode, within ``[start, end + 10 s]``: the
  longest gap without an ok write and the longest without an ok read, the
  time from the fault's start to the first ok write after the longest write
  gap, and the read success rate while the fault is active (a read succeeds
  if it or its one immediate retry, an op with ``retry_of``, is ok; reads the
  client never sent because it was overloaded are left out). Latency
  percentiles (p50/p99 of ok operations, from the intended start) are given
  per time bucket.

``passed``: no lost write, no resurrected delete, no stale read at
``primary`` / ``majority`` / ``all``, no phantom read, no divergence, and a
final read through every node (without one nothing could be called lost).
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from chaos.history import Operation, read_operations

__all__ = ["CONSISTENCY_LEVELS", "CheckResult", "check", "check_files", "cluster_view", "shard_digests"]

CONSISTENCY_LEVELS: Final = ("default", "primary", "majority", "all")
STRICT_LEVELS: Final = ("primary", "majority", "all")
CONVERGENCE_BOUND_S: Final = 30.0
AFTER_FAULT_S: Final = 10.0
EXAMPLES_MAX: Final = 10
LATENCY_BUCKETS_MAX: Final = 240
LATENCY_BUCKET_S_MIN: Final = 5.0
OVERLOADED: Final = "overloaded-client"


@dataclass(slots=True)
class StaleLevel:
    """The stale reads at one consistency level."""

    reads: int = 0
    count: int = 0
    lag_s_max: float = 0.0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, example: dict[str, Any]) -> None:
        self.count += 1
        self.lag_s_max = max(self.lag_s_max, float(example.get("lag_s", 0.0)))
        if len(self.examples) < EXAMPLES_MAX:
            self.examples.append(example)


@dataclass(slots=True)
class CheckResult:
    """What the checker found; ``to_dict()`` is the JSON report's body."""

    totals: dict[str, dict[str, int]]
    lost_adds: list[dict[str, Any]]
    lost_registers: list[dict[str, Any]]
    resurrected: list[dict[str, Any]]
    stale: dict[str, StaleLevel]
    phantom: list[dict[str, Any]]
    divergence: dict[str, Any]
    availability: list[dict[str, Any]]
    latency: list[dict[str, Any]]
    final_errors: dict[str, str]
    skipped_faults: list[dict[str, Any]]
    # From the node logs: per node, how often each LOG_FINDINGS pattern appeared.
    log_findings: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def lost_count(self) -> int:
        return len(self.lost_adds) + len(self.lost_registers)

    @property
    def is_diverged(self) -> bool:
        return bool(self.divergence["reasons"])

    @property
    def passed(self) -> bool:
        return (self.lost_count == 0 and not self.resurrected and not self.phantom and not self.is_diverged
                and not self.final_errors and all(self.stale[level].count == 0 for level in STRICT_LEVELS)
                and not self.raft_conflicts)

    @property
    def raft_conflicts(self) -> int:
        """Applied Raft entries a leader replaced with another term's: the
        cluster state itself diverged (see qcluster.consensus.raft_node)."""
        return sum(counts.get("raft-conflict", 0) for counts in self.log_findings.values())

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["passed"] = self.passed
        document["lost_count"] = self.lost_count
        return document


# Node log lines worth counting: name -> the text that marks them.
LOG_FINDINGS: Final = {
    "raft-conflict": "raft log conflict at applied index",  # fails the run
    "raft-rewrite": "truncating already-applied log entries",  # pysyncobj re-writing identical entries
    "wal-poisoned": "poisoned after",
    "traceback": "Traceback (most recent call last)",
}


def check(run_dir: Path) -> CheckResult:
    """Check the run in ``run_dir`` (absent files count as empty)."""
    result = check_files(
        operations_=read_operations(run_dir / "history.jsonl"),
        faults=_read_jsonl(run_dir / "faults.jsonl"),
        final=_read_json(run_dir / "final.json"))
    result.log_findings = scan_logs(sorted(run_dir.glob("n*.log")))
    return result


def scan_logs(paths: Iterable[Path]) -> dict[str, dict[str, int]]:
    """Per node log (named by its file's stem), the count of each LOG_FINDINGS line."""
    found: dict[str, dict[str, int]] = {}
    for path in paths:
        counts = {name: 0 for name in LOG_FINDINGS}
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                for name, marker in LOG_FINDINGS.items():
                    if marker in line:
                        counts[name] += 1
        found[path.stem] = counts
    return found


def check_files(*, operations_: Sequence[Operation], faults: Sequence[dict[str, Any]],
                final: dict[str, Any]) -> CheckResult:
    """The checks over already parsed inputs (``operations_`` sorted by invoke time)."""
    assert all(a.invoked <= b.invoked for a, b in zip(operations_, operations_[1:])), "sort by invoke time"
    episodes = [fault for fault in faults if "skipped" not in fault]
    final_nodes: dict[str, Any] = final.get("nodes", {})
    final_errors = {node: str(entry.get("error")) for node, entry in final_nodes.items() if entry.get("error")}
    if not final_nodes:
        final_errors["final"] = "final.json holds no final reads"
    readable = {node: entry for node, entry in final_nodes.items() if not entry.get("error")}
    lost_adds, resurrected = _check_set(operations_, readable)
    stale, phantom = _check_reads(operations_)
    return CheckResult(
        totals=_totals(operations_), lost_adds=lost_adds, lost_registers=_check_registers(operations_, readable),
        resurrected=resurrected, stale=stale, phantom=phantom, divergence=_check_divergence(final, episodes),
        availability=[_availability(operations_, episode) for episode in episodes],
        latency=_latency_buckets(operations_), final_errors=final_errors,
        skipped_faults=[fault for fault in faults if "skipped" in fault])


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    document = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), path
    return document


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _totals(operations_: Iterable[Operation]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"ok": 0, "fail": 0, "info": 0})
    for operation in operations_:
        totals[operation.function][operation.outcome] += 1
    return dict(totals)


def _level(operation: Operation) -> str:
    return operation.consistency or "default"


# ----------------------------------------------------------------- lost


def _check_set(operations_: Sequence[Operation], final_nodes: dict[str, Any]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(lost adds, resurrected deletes) against every readable node's final ids."""
    acknowledged = {int(op.argument): op for op in operations_ if op.function == "add" and op.outcome == "ok"}
    delete_invoked = {int(op.argument) for op in operations_ if op.function == "delete" and op.outcome != "fail"}
    deleted = {int(op.argument): op for op in operations_ if op.function == "delete" and op.outcome == "ok"}
    lost: list[dict[str, Any]] = []
    resurrected: list[dict[str, Any]] = []
    for node, entry in sorted(final_nodes.items()):
        present = {int(point_id) for point_id in entry.get("ids", []) if isinstance(point_id, int)}
        for point_id in sorted(set(acknowledged) - delete_invoked - present):
            lost.append({"id": point_id, "node": node, "acknowledged": acknowledged[point_id].completed})
        for point_id in sorted(set(deleted) & present):
            resurrected.append({"id": point_id, "node": node, "deleted": deleted[point_id].completed})
    return lost, resurrected


def _check_registers(operations_: Sequence[Operation], final_nodes: dict[str, Any]) -> list[dict[str, Any]]:
    """Registers whose final version through some node is older than the newest acknowledged one."""
    newest: dict[int, int] = {}
    indeterminate: dict[int, set[int]] = defaultdict(set)
    for operation in operations_:
        if operation.function != "write":
            continue
        key, version = (int(part) for part in operation.argument)
        if operation.outcome == "ok":
            newest[key] = max(newest.get(key, 0), version)
        elif operation.outcome == "info":
            indeterminate[key].add(version)
    lost: list[dict[str, Any]] = []
    for node, entry in sorted(final_nodes.items()):
        registers = {int(key): value for key, value in entry.get("registers", {}).items()}
        for key, version in sorted(newest.items()):
            found = registers.get(key)
            if (found is None or int(found) < version) and found not in indeterminate[key]:
                lost.append({"key": key, "node": node, "acknowledged_version": version, "final_version": found})
    return lost


# ---------------------------------------------------------------- stale


@dataclass(slots=True)
class _RegisterWrites:
    """The writes of one register key, for bisecting by time."""

    ok_completed: list[float] = field(default_factory=list)
    ok_newest: list[int] = field(default_factory=list)  # newest version acknowledged up to ok_completed[i]
    ok_at: dict[int, float] = field(default_factory=dict)  # version -> acknowledgement time
    invoked_at: dict[int, float] = field(default_factory=dict)  # version -> invoke time, ok or info writes
    indeterminate: set[int] = field(default_factory=set)

    def newest_before(self, moment: float) -> int:
        """The newest version acknowledged strictly before ``moment`` (0: none)."""
        index = bisect.bisect_left(self.ok_completed, moment)
        return self.ok_newest[index - 1] if index else 0


def _register_writes(operations_: Sequence[Operation]) -> dict[int, _RegisterWrites]:
    writes: dict[int, _RegisterWrites] = defaultdict(_RegisterWrites)
    acknowledged = sorted((op for op in operations_ if op.function == "write" and op.outcome == "ok"),
                          key=lambda op: op.completed)
    for operation in acknowledged:
        key, version = (int(part) for part in operation.argument)
        entry = writes[key]
        entry.ok_completed.append(operation.completed)
        entry.ok_newest.append(max(version, entry.ok_newest[-1] if entry.ok_newest else 0))
        entry.ok_at[version] = operation.completed
    for operation in operations_:
        if operation.function == "write" and operation.outcome != "fail":
            key, version = (int(part) for part in operation.argument)
            writes[key].invoked_at[version] = operation.invoked
            if operation.outcome == "info":
                writes[key].indeterminate.add(version)
    return writes


@dataclass(slots=True)
class _SetHistory:
    """Per set id: when its add was acknowledged, and its deletes."""

    added_ok: dict[int, float] = field(default_factory=dict)
    add_invoked: dict[int, float] = field(default_factory=dict)  # ok or info adds
    delete_invoked: dict[int, float] = field(default_factory=dict)  # ok or info deletes, the first
    deleted_ok: dict[int, float] = field(default_factory=dict)


def _set_history(operations_: Sequence[Operation]) -> _SetHistory:
    history = _SetHistory()
    for operation in operations_:
        if operation.outcome == "fail" or operation.function not in ("add", "delete"):
            continue
        point_id = int(operation.argument)
        if operation.function == "add":
            history.add_invoked.setdefault(point_id, operation.invoked)
            if operation.outcome == "ok":
                history.added_ok[point_id] = operation.completed
        else:
            history.delete_invoked.setdefault(point_id, operation.invoked)
            if operation.outcome == "ok":
                history.deleted_ok.setdefault(point_id, operation.completed)
    return history


def _check_reads(operations_: Sequence[Operation]) -> tuple[dict[str, StaleLevel], list[dict[str, Any]]]:
    """Stale reads per level, and phantom reads at any level."""
    registers = _register_writes(operations_)
    points = _set_history(operations_)
    stale = {level: StaleLevel() for level in CONSISTENCY_LEVELS}
    phantom: list[dict[str, Any]] = []
    for operation in operations_:
        if operation.outcome != "ok" or operation.function not in ("read", "get"):
            continue
        level = stale[_level(operation)]
        level.reads += 1
        if operation.function == "read":
            verdict = _judge_register_read(operation, registers)
        else:
            verdict = _judge_get(operation, points)
        if verdict is None:
            continue
        kind, example = verdict
        if kind == "stale":
            level.add(example)
        elif len(phantom) < EXAMPLES_MAX * 10:
            phantom.append(example)
    return stale, phantom


def _example(operation: Operation, **details: Any) -> dict[str, Any]:
    return {"op": operation.op_id, "f": operation.function, "node": operation.node, "api": operation.api,
            "consistency": _level(operation), "invoked": operation.invoked, "completed": operation.completed,
            **details}


def _judge_register_read(operation: Operation, registers: dict[int, _RegisterWrites]
                         ) -> tuple[str, dict[str, Any]] | None:
    """("stale" | "phantom", example) for a bad register read, else None."""
    key, found = int(operation.result[0]), operation.result[1]
    writes = registers.get(key, _RegisterWrites())
    version = 0 if found is None else int(found)
    if found is not None and writes.invoked_at.get(version, math.inf) >= operation.completed:
        return "phantom", _example(operation, key=key, version=version,
                                   reason="no ok or info write of this version was invoked before the read ended")
    newest = writes.newest_before(operation.invoked)
    if version >= newest or version in writes.indeterminate:
        return None
    return "stale", _example(operation, key=key, version=found, newer_version=newest,
                             lag_s=operation.invoked - writes.ok_at[newest])


def _judge_get(operation: Operation, points: _SetHistory) -> tuple[str, dict[str, Any]] | None:
    """("stale" | "phantom", example) for a bad read of a set id, else None."""
    point_id, is_found = int(operation.result[0]), bool(operation.result[1])
    if is_found:
        if points.add_invoked.get(point_id, math.inf) >= operation.completed:
            return "phantom", _example(operation, id=point_id, found=True,
                                       reason="no ok or info add of this id was invoked before the read ended")
        deleted = points.deleted_ok.get(point_id, math.inf)
        if deleted < operation.invoked:
            return "stale", _example(operation, id=point_id, found=True, deleted=deleted,
                                     lag_s=operation.invoked - deleted)
        return None
    added = points.added_ok.get(point_id, math.inf)
    if added < operation.invoked and points.delete_invoked.get(point_id, math.inf) >= operation.completed:
        return "stale", _example(operation, id=point_id, found=False, added=added, lag_s=operation.invoked - added)
    return None


# ----------------------------------------------------------- divergence


def shard_digests(collection_answers: dict[str, Any]) -> dict[int, dict[str, dict[str, Any]]]:
    """shard id -> node -> {"digest", "points", "state", "last_seq"}, from each
    node's ``/collections/{c}/cluster?digest=true`` result (errors skipped)."""
    shards: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for node, answer in collection_answers.items():
        if not isinstance(answer, dict):
            continue
        for local in answer.get("local_shards", []):
            extra = local.get("qcluster") or {}
            shards[int(local["shard_id"])][str(node)] = {
                "digest": extra.get("content_digest"), "points": local.get("points_count"),
                "state": local.get("state"), "last_seq": extra.get("last_seq")}
    return dict(shards)


def cluster_view(cluster_answer: Any, collection_answer: Any) -> dict[str, Any]:
    """The parts of a node's view of the cluster that must agree on every
    node once healed (no timestamps, Raft terms or indexes)."""
    view: dict[str, Any] = {}
    if isinstance(cluster_answer, dict):
        extra = cluster_answer.get("qcluster") or {}
        view["leader"] = (cluster_answer.get("raft_info") or {}).get("leader")
        view["members"] = sorted(extra.get("members") or [])
    if isinstance(collection_answer, dict):
        extra = collection_answer.get("qcluster") or {}
        view["state_version"] = extra.get("state_version")
        view["shards"] = sorted(
            ([shard.get("shard_id"), shard.get("primary"), shard.get("primary_term"),
              sorted(shard.get("in_sync") or []), sorted((shard.get("replicas") or {}).items())]
             for shard in extra.get("shards") or []), key=lambda row: row[0])
    return view


def _check_divergence(final: dict[str, Any], faults: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Divergent replicas, late convergence and disagreeing cluster views
    (at the end, and after each heal: the orchestrator records how long the
    nodes' views took to agree, None when they did not within its bound)."""
    replicas: dict[str, Any] = final.get("replicas", {})
    states: dict[str, Any] = final.get("cluster_state", {})
    converged_after_s = final.get("converged_after_s")
    reasons: list[str] = [f"the nodes' cluster views still disagreed after the heal of round {fault.get('round')}"
                          for fault in faults if "views_agreed_after_s" in fault
                          and fault["views_agreed_after_s"] is None]
    digests = shard_digests(replicas)
    divergent = {shard: nodes for shard, nodes in sorted(digests.items())
                 if len({entry["digest"] for entry in nodes.values()}) > 1}
    if divergent:
        reasons.append(f"replicas differ in shards {sorted(divergent)}")
    if converged_after_s is None or converged_after_s > CONVERGENCE_BOUND_S:
        reasons.append(f"replicas converged after {converged_after_s} s (bound {CONVERGENCE_BOUND_S} s)")
    views = {str(node): cluster_view(states.get(node), replicas.get(node)) for node in sorted(replicas)}
    differing = _differing_fields(views)
    if differing:
        reasons.append(f"cluster views differ in {sorted(differing)}")
    return {"reasons": reasons, "divergent_shards": {str(shard): nodes for shard, nodes in divergent.items()},
            "converged_after_s": converged_after_s, "cluster_views_differ": differing}


def _differing_fields(views: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """field -> node -> value, for the fields on which the nodes' views differ."""
    names = sorted({name for view in views.values() for name in view})
    differing: dict[str, dict[str, Any]] = {}
    for name in names:
        values = {node: view.get(name) for node, view in views.items()}
        if len({json.dumps(value, sort_keys=True) for value in values.values()}) > 1:
            differing[name] = values
    return differing


# --------------------------------------------------------- availability


def _longest_gap(times: Sequence[float], start: float, end: float) -> tuple[float, float | None]:
    """(longest gap in [start, end] between consecutive ``times`` (sorted) and
    the bounds, the time that ended it, or None when the window's end did)."""
    assert start <= end, (start, end)
    low, high = bisect.bisect_left(times, start), bisect.bisect_right(times, end)
    points = [start, *times[low:high], end]
    longest, ended_by = 0.0, None
    for index in range(1, len(points)):
        gap = points[index] - points[index - 1]
        if gap > longest:
            longest, ended_by = gap, (points[index] if index < len(points) - 1 else None)
    return longest, ended_by


def _availability(operations_: Sequence[Operation], episode: dict[str, Any]) -> dict[str, Any]:
    """Gaps, recovery and read success of one fault episode."""
    start, end = float(episode["start"]), float(episode["end"])
    last_event = max((op.completed for op in operations_ if math.isfinite(op.completed)), default=end)
    window_end = max(start, min(end + AFTER_FAULT_S, last_event))
    write_times = sorted(op.completed for op in operations_ if op.is_write and op.outcome == "ok")
    read_times = sorted(op.completed for op in operations_ if not op.is_write and op.outcome == "ok")
    write_gap, write_resumed = _longest_gap(write_times, start, window_end)
    read_gap, _ = _longest_gap(read_times, start, window_end)
    return {"round": episode.get("round"), "fault": episode.get("fault"), "targets": episode.get("targets"),
            "start": start, "end": end, "write_gap_s": write_gap, "read_gap_s": read_gap,
            "write_recovery_s": None if write_resumed is None else write_resumed - start,
            **_writes_through(operations_, start, end, _coordinators_outside(episode, operations_)),
            **_read_success(operations_, start, end)}


def _coordinators_outside(episode: dict[str, Any], operations_: Sequence[Operation]) -> set[int]:
    """The nodes a client would send writes through during ``episode``: every
    node but the faulted ones — for a bridge partition the bridge itself, the
    only node that still sees every other."""
    nodes = {op.node for op in operations_}
    targets = set(episode.get("targets") or [])
    return targets if episode.get("fault") == "partition-bridge" else nodes - targets


def _writes_through(operations_: Sequence[Operation], start: float, end: float, through: set[int]) -> dict[str, Any]:
    """The writes sent during the fault through the nodes ``through`` (never
    those not sent for client overload): ``writes_failing_s``, the invocation
    time (from ``start``) of the last one not acknowledged (fail or info), 0
    if none — every one sent later was acknowledged, on every shard, where the
    longest gap only sees the busiest; ``write_wait_s_max``, the longest any
    of them waited from its intended start to its answer (an ``info`` waited
    its whole timeout). Writes sent to a node that is down or cut off fail by
    nature and are left out."""
    lo = bisect.bisect_left(operations_, start, key=lambda op: op.invoked)
    hi = bisect.bisect_right(operations_, end, key=lambda op: op.invoked)
    writes = [op for op in operations_[lo:hi] if op.is_write and op.node in through and op.error != OVERLOADED]
    waits = [op.completed - op.scheduled for op in writes if math.isfinite(op.completed)]
    return {"writes_failing_s": max((op.invoked - start for op in writes if op.outcome != "ok"), default=0.0),
            "write_wait_s_max": max(waits, default=0.0)}


def _read_success(operations_: Sequence[Operation], start: float, end: float) -> dict[str, Any]:
    """Reads invoked in [start, end] (client-side overload excluded) and how
    many succeeded, themselves or by their one retry."""
    lo = bisect.bisect_left(operations_, start, key=lambda op: op.invoked)
    retried_ok = {op.retry_of for op in operations_[lo:] if op.retry_of is not None and op.outcome == "ok"}
    reads = [op for op in operations_[lo:bisect.bisect_right(operations_, end, key=lambda op: op.invoked)]
             if not op.is_write and op.retry_of is None and op.error != OVERLOADED]
    succeeded = sum(1 for op in reads if op.outcome == "ok" or op.op_id in retried_ok)
    return {"reads": len(reads), "reads_succeeded": succeeded,
            "read_success_rate": succeeded / len(reads) if reads else None}


def _latency_buckets(operations_: Sequence[Operation]) -> list[dict[str, Any]]:
    """Per time bucket (by intended start): ok/fail/info counts and p50/p99
    latency of the ok operations, in seconds."""
    if not operations_:
        return []
    first = min(op.scheduled for op in operations_)
    span = max(op.scheduled for op in operations_) - first
    bucket_s = max(LATENCY_BUCKET_S_MIN, math.ceil(span / LATENCY_BUCKETS_MAX))
    buckets: dict[int, list[Operation]] = defaultdict(list)
    for operation in operations_:
        buckets[int((operation.scheduled - first) // bucket_s)].append(operation)
    rows = []
    for index, members in sorted(buckets.items()):
        latencies = sorted(op.latency_s for op in members if op.outcome == "ok")
        rows.append({"start": first + index * bucket_s, "bucket_s": bucket_s,
                     "ok": len(latencies), "fail": sum(op.outcome == "fail" for op in members),
                     "info": sum(op.outcome == "info" for op in members),
                     "p50_s": _percentile(latencies, 0.50), "p99_s": _percentile(latencies, 0.99)})
    return rows


def _percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of sorted ``values``."""
    if not values:
        return None
    assert 0.0 < fraction <= 1.0, fraction
    return values[min(len(values) - 1, max(0, math.ceil(fraction * len(values)) - 1))]
