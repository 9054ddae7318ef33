"""The chaos checker over synthetic histories: each test holds one anomaly
(or its legal look-alike) and fails if the checker misses it or makes it up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chaos.checker import CheckResult, check
from chaos.history import HistoryWriter, Outcome
from chaos.report import write_report

DIGEST = "0" * 32


class Story:
    """Builds a run dir: a history of timed operations plus faults and a final state."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.writer = HistoryWriter(run_dir / "history.jsonl")
        self.next_op_id = 0
        self.faults: list[dict[str, Any]] = []
        self.final_ids: list[int] = []
        self.registers: dict[str, int] = {}

    def op(self, function: str, argument: Any, start: float, end: float, outcome: Outcome = "ok", *,
           result: Any = None, consistency: str | None = None, node: int = 1, retry_of: int | None = None) -> int:
        self.next_op_id += 1
        op_id = self.next_op_id
        self.writer.invoke(process=0, op_id=op_id, function=function, node=node, api="rest",
                           consistency=consistency, value=argument, invoked=start, scheduled=start,
                           retry_of=retry_of)
        self.writer.complete(process=0, op_id=op_id, function=function, outcome=outcome, completed=end,
                             value=result, error=None if outcome == "ok" else "synthetic")
        return op_id

    def final(self, *, digests: tuple[str, str] = (DIGEST, DIGEST), converged_after_s: float | None = 1.0,
              node_count: int = 3) -> None:
        nodes = {str(node): {"ids": self.final_ids, "registers": self.registers, "error": None}
                 for node in range(1, node_count + 1)}
        replicas = {"1": _collection_answer(digests[0]), "2": _collection_answer(digests[1])}
        states = {node: {"raft_info": {"leader": 1, "term": 3}, "qcluster": {"members": ["a", "b"]}}
                  for node in replicas}
        document = {"nodes": nodes, "replicas": replicas, "cluster_state": states,
                    "converged_after_s": converged_after_s}
        (self.run_dir / "final.json").write_text(json.dumps(document))
        (self.run_dir / "faults.jsonl").write_text("".join(json.dumps(fault) + "\n" for fault in self.faults))
        (self.run_dir / "config.json").write_text(json.dumps({"run_id": "abcdef", "seed": 42, "started_at": 0.0,
                                                              "nodes": [], "collection": "chaos"}))

    def check(self, **final: Any) -> CheckResult:
        self.final(**final)
        self.writer.close()
        return check(self.run_dir)


def _collection_answer(digest: str) -> dict[str, Any]:
    return {"local_shards": [{"shard_id": 0, "points_count": 1, "state": "Active",
                              "qcluster": {"last_seq": 1, "last_term": 1, "content_digest": digest}}],
            "qcluster": {"state_version": 5, "shards": [{"shard_id": 0, "primary": 1, "primary_term": 2,
                                                         "in_sync": [1, 2],
                                                         "replicas": {"1": "active", "2": "active"}}]}}


def test_clean_history_passes(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("add", 1000, 1.0, 1.1)
    story.op("write", [1, 1], 1.0, 1.2)
    story.op("read", 1, 2.0, 2.1, result=[1, 1], consistency="all")
    story.op("get", 1000, 2.0, 2.1, result=[1000, True], consistency="primary")
    story.final_ids = [1, 1000]
    story.registers = {"1": 1}
    result = story.check()
    assert result.passed, result.to_dict()
    assert result.to_dict()["passed"] is True
    assert result.totals["add"]["ok"] == 1


def test_lost_acknowledged_add_is_found(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("add", 1000, 1.0, 1.1)
    story.op("add", 1001, 1.0, 1.1)
    story.final_ids = [1000]
    result = story.check()
    assert [entry["id"] for entry in result.lost_adds] == [1001, 1001, 1001]  # absent through all 3 nodes
    assert not result.passed


def test_info_add_absent_is_not_lost(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("add", 1000, 1.0, 6.0, outcome="info")
    story.op("add", 1001, 1.0, 1.1, outcome="fail")
    result = story.check()
    assert result.lost_adds == []
    assert result.passed


def test_deleted_add_is_not_lost_and_resurrected_delete_is_found(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("add", 1000, 1.0, 1.1)
    story.op("add", 1001, 1.0, 1.1)
    story.op("delete", 1000, 2.0, 2.1)
    story.op("delete", 1001, 2.0, 2.1)
    story.final_ids = [1001]
    result = story.check()
    assert result.lost_adds == []
    assert [entry["id"] for entry in result.resurrected] == [1001, 1001, 1001]
    assert not result.passed


def test_lost_register_version_is_found_unless_an_info_write_explains_it(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("write", [1, 1], 1.0, 1.1)
    story.op("write", [1, 2], 2.0, 2.1)
    story.op("write", [2, 1], 1.0, 6.0, outcome="info")
    story.op("write", [2, 2], 7.0, 7.1)
    story.registers = {"1": 1, "2": 1}  # key 1 lost version 2; key 2's late info write may land last
    result = story.check()
    assert {(entry["key"], entry["final_version"]) for entry in result.lost_registers} == {(1, 1)}
    assert not result.passed


def test_stale_primary_read_is_found_and_counted_at_that_level_only(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("write", [1, 1], 1.0, 1.1)
    story.op("write", [1, 2], 2.0, 2.1)
    story.op("read", 1, 3.0, 3.1, result=[1, 1], consistency="primary", node=2)
    story.op("read", 1, 3.0, 3.1, result=[1, 2], consistency="all")
    story.registers = {"1": 2}
    result = story.check()
    assert result.stale["primary"].count == 1
    assert result.stale["primary"].examples[0]["node"] == 2
    assert abs(result.stale["primary"].lag_s_max - 0.9) < 1e-9
    assert {level: result.stale[level].count for level in ("default", "majority", "all")} == \
        {"default": 0, "majority": 0, "all": 0}
    assert not result.passed


def test_stale_default_read_is_counted_but_does_not_fail(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("write", [1, 1], 1.0, 1.1)
    story.op("read", 1, 3.0, 3.1, result=[1, None])
    story.registers = {"1": 1}
    result = story.check()
    assert result.stale["default"].count == 1
    assert result.passed


def test_read_concurrent_with_a_write_is_not_stale(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("write", [1, 1], 1.0, 1.1)
    story.op("write", [1, 2], 2.0, 3.0)
    story.op("read", 1, 2.9, 3.2, result=[1, 1], consistency="all")  # invoked before version 2 was acknowledged
    story.op("read", 1, 2.5, 2.6, result=[1, 2], consistency="all")  # and one that already sees it
    story.registers = {"1": 2}
    result = story.check()
    assert result.stale["all"].count == 0
    assert result.phantom == []
    assert result.passed


def test_phantom_read_of_a_failed_write_is_found(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("write", [1, 1], 1.0, 1.1, outcome="fail")
    story.op("read", 1, 2.0, 2.1, result=[1, 1])
    result = story.check()
    assert len(result.phantom) == 1
    assert not result.passed


def test_get_missing_an_acknowledged_id_is_stale(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("add", 1000, 1.0, 1.1)
    story.op("get", 1000, 2.0, 2.1, result=[1000, False], consistency="majority")
    story.op("get", 1000, 1.05, 1.2, result=[1000, False], consistency="majority")  # concurrent with the add
    story.final_ids = [1000]
    result = story.check()
    assert result.stale["majority"].count == 1
    assert not result.passed


def test_divergent_digests_are_found(tmp_path: Path) -> None:
    story = Story(tmp_path)
    result = story.check(digests=(DIGEST, "f" * 32))
    assert result.is_diverged
    assert list(result.divergence["divergent_shards"]) == ["0"]
    assert not result.passed


def test_late_convergence_is_divergence(tmp_path: Path) -> None:
    result = Story(tmp_path).check(converged_after_s=45.0)
    assert result.is_diverged
    assert not result.passed


def test_availability_gap_for_a_fault_window(tmp_path: Path) -> None:
    story = Story(tmp_path)
    for second in range(0, 40):  # ok writes and reads every second, except from 12 to 19
        if 12 <= second < 19:
            continue
        story.op("add", 1000 + second, float(second), second + 0.5)
        story.op("read", 1, float(second), second + 0.5, result=[1, None])
    story.final_ids = [1000 + second for second in range(40) if not 12 <= second < 19]
    story.faults.append({"round": 1, "fault": "pause", "targets": [2], "target_kind": "random",
                         "start": 10.0, "end": 20.0, "detail": {}})
    story.faults.append({"skipped": "clock", "reason": "no faketime"})
    result = story.check()
    [episode] = result.availability
    assert abs(episode["write_gap_s"] - 8.0) < 1e-9  # ok at 11.5, next at 19.5
    assert abs(episode["read_gap_s"] - 8.0) < 1e-9
    assert abs(episode["write_recovery_s"] - 9.5) < 1e-9
    assert result.skipped_faults == [{"skipped": "clock", "reason": "no faketime"}]
    assert result.passed


def test_writes_failing_until_is_the_last_unacknowledged_write_of_the_fault(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("add", 1000, 11.0, 11.2, node=2)  # another shard: fine
    story.op("add", 1001, 12.0, 17.0, outcome="info", node=2)  # stalled on the faulted primary
    story.op("add", 1002, 14.5, 14.6, outcome="fail", node=3)
    story.op("add", 1003, 15.0, 15.2, node=2)
    story.op("add", 1005, 18.0, 18.1, outcome="fail", node=1)  # sent to the paused node: not counted
    story.op("add", 1004, 25.0, 25.1, outcome="fail", node=2)  # after the fault: not counted
    story.final_ids = [1000, 1003]
    story.faults.append({"round": 1, "fault": "pause", "targets": [1], "target_kind": "primaries",
                         "start": 10.0, "end": 20.0, "detail": {}})
    [episode] = story.check().availability
    assert abs(episode["writes_failing_s"] - 4.5) < 1e-9
    assert abs(episode["write_wait_s_max"] - 5.0) < 1e-9  # the stalled one


def test_views_that_never_agreed_after_a_heal_are_divergence(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("add", 1000, 1.0, 1.1)
    story.final_ids = [1000]
    episode = {"round": 1, "fault": "pause", "targets": [1], "target_kind": "random", "start": 10.0, "end": 20.0,
               "detail": {}, "views_agreed_after_s": 0.8}
    story.faults = [episode, {**episode, "round": 2, "views_agreed_after_s": None}]
    result = story.check()
    assert result.divergence["reasons"] == ["the nodes' cluster views still disagreed after the heal of round 2"]
    assert not result.passed


def test_read_success_counts_one_retry(tmp_path: Path) -> None:
    story = Story(tmp_path)
    first = story.op("read", 1, 11.0, 11.1, outcome="fail")
    story.op("read", 1, 11.1, 11.2, result=[1, None], retry_of=first, node=2)
    second = story.op("count", None, 12.0, 17.0, outcome="info")
    story.op("count", None, 17.0, 17.1, outcome="fail", retry_of=second, node=2)
    story.op("search", None, 13.0, 13.1, result=3)
    story.op("read", 1, 30.0, 30.1, outcome="fail")  # after the fault: not counted
    story.faults.append({"round": 1, "fault": "kill", "targets": [1], "target_kind": "leader",
                         "start": 10.0, "end": 20.0, "detail": {}})
    [episode] = story.check().availability
    assert episode["reads"] == 3
    assert episode["reads_succeeded"] == 2
    assert abs(episode["read_success_rate"] - 2 / 3) < 1e-9


def test_missing_final_read_fails_the_run(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.final()
    story.writer.close()
    document = json.loads((tmp_path / "final.json").read_text())
    document["nodes"]["2"] = {"ids": [], "registers": {}, "error": "ConnectError: refused"}
    (tmp_path / "final.json").write_text(json.dumps(document))
    result = check(tmp_path)
    assert result.final_errors == {"2": "ConnectError: refused"}
    assert not result.passed


def test_torn_last_history_line_is_skipped(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("add", 1000, 1.0, 1.1)
    story.final_ids = [1000]
    story.final()
    story.writer.close()
    with (tmp_path / "history.jsonl").open("a") as history:
        history.write('{"p": 0, "i": 9, "type": "inv')
    result = check(tmp_path)
    assert result.totals == {"add": {"ok": 1, "fail": 0, "info": 0}}
    assert result.passed


def test_report_files(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    story = Story(tmp_path / "run")
    story.op("add", 1000, 1.0, 1.1)
    story.op("read", 1, 2.0, 2.1, result=[1, None], consistency="all")
    story.faults.append({"round": 1, "fault": "kill", "targets": [1], "target_kind": "leader",
                         "start": 1.5, "end": 3.0, "detail": {}})
    story.final_ids = [1000]
    result = story.check()
    markdown, document, image = write_report(tmp_path / "run", result, tmp_path / "out")
    assert markdown.name == "1970-01-01-42.md"
    assert "PASSED" in markdown.read_text()
    assert json.loads(document.read_text())["passed"] is True
    assert image.stat().st_size > 1000


def test_node_logs_are_scanned_and_a_raft_conflict_fails_the_run(tmp_path: Path) -> None:
    story = Story(tmp_path)
    story.op("add", 1000, 1.0, 1.1)
    story.final_ids = [1000]
    (tmp_path / "n2.log").write_text('{"msg": "node ready"}\n')
    (tmp_path / "n1.log").write_text('{"msg": "truncating already-applied log entries from index 40"}\n')
    harmless = story.check()
    assert harmless.passed and harmless.log_findings["n1"]["raft-rewrite"] == 1
    assert set(harmless.log_findings["n2"].values()) == {0}
    with (tmp_path / "n1.log").open("a") as log:
        log.write('{"msg": "raft log conflict at applied index 40: this node applied an entry of term 3"}\n')
    conflicted = check(tmp_path)
    assert conflicted.raft_conflicts == 1 and not conflicted.passed
