"""The replicated state machine behind Raft's one ``apply(bytes)``: it never
raises (pysyncobj wedges the cluster on an apply that raises), its full dump
round-trips through our own file format and refuses damage, and the SyncObj
subclass has exactly one replicated method. No sockets, no threads."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Any

import msgpack
import pysyncobj
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pysyncobj import FAIL_REASON
from pysyncobj.node import TCPNode

from qcluster.cluster import transitions
from qcluster.cluster.commands import FORMAT_VERSION, AddNode, encode
from qcluster.cluster.state import ClusterState, ResultCode
from qcluster.config import ConfigError
from qcluster.consensus import raft_node
from qcluster.consensus._full_dump import FullDump, read_dump, write_dump
from qcluster.consensus._state_machine import APPLY_FAILED_MESSAGE, ReplicatedStateMachine
from qcluster.consensus.settings import RaftSettings
from qcluster.consensus.state_codec import encode_state
from qcluster.errors import DataCorruption, QclusterError


def add_node(node_id: int, request_id: str | None = None) -> bytes:
    return encode(AddNode(request_id=request_id or f"add-{node_id}", node_id=node_id, p2p_address=f"10.0.0.{node_id}:1",
                          http_address="h:1", grpc_address="g:1", at_ms=0))


class Recorder:
    def __init__(self) -> None:
        self.states: list[ClusterState] = []

    def __call__(self, state: ClusterState) -> None:
        self.states.append(state)


def machine_with(count: int) -> tuple[ReplicatedStateMachine, Recorder]:
    recorder = Recorder()
    machine = ReplicatedStateMachine(on_change=recorder)
    for node_id in range(1, count + 1):
        assert machine.apply(add_node(node_id)).is_accepted
    return machine, recorder


def test_apply_changes_the_state_and_notifies() -> None:
    machine, recorder = machine_with(2)
    assert machine.state.version == 2
    assert [state.version for state in recorder.states] == [1, 2]
    repeated = machine.apply(add_node(2))
    assert (repeated.code, repeated.version) == (ResultCode.OK, 2), "a repeated request id gets its first result"
    assert len(recorder.states) == 2, "no version change, no notification"


# Bytes from anywhere: random, truncated commands, msgpack maps with real kinds and wrong fields.
_kinds = st.sampled_from(["add_node", "remove_node", "create_collection", "set_replica_state", "promote_primary", "x"])
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8)
    | st.floats(allow_nan=True),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_structured = st.builds(
    lambda kind, fields: bytes([FORMAT_VERSION]) + msgpack.packb({"kind": kind, **fields}, use_bin_type=True),
    _kinds,
    st.dictionaries(st.sampled_from(["request_id", "node_id", "name", "placement", "shard_id", "state", "at_ms"]),
                    _values, max_size=7),
)
_garbage = st.binary(max_size=64) | _structured | st.builds(lambda n, cut: add_node(n)[:cut], st.integers(1, 9),
                                                            st.integers(0, 40))


@given(_garbage)
@settings(max_examples=400, deadline=None)
def test_apply_never_raises_on_garbage(data: bytes) -> None:
    machine, _ = machine_with(1)
    before = machine.state
    result = machine.apply(data)
    if result.code is not ResultCode.OK:
        assert machine.state.version == before.version
        assert result.version == before.version


@pytest.mark.parametrize("value", [None, "text", 7, [b"\x01"], {"kind": "add_node"}, bytearray(b"\x01")])
def test_apply_rejects_what_is_not_bytes(value: object) -> None:
    machine, _ = machine_with(1)
    result = machine.apply(value)
    assert result.code is ResultCode.INVALID
    assert machine.state.version == 1


def test_a_bug_in_transitions_becomes_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    machine, recorder = machine_with(1)

    def broken(state: ClusterState, data: bytes) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(transitions, "apply_encoded", broken)
    result = machine.apply(add_node(2))
    assert (result.code, result.message, result.version) == (ResultCode.INVALID, APPLY_FAILED_MESSAGE, 1)
    assert machine.state.version == 1
    assert len(recorder.states) == 1


def test_a_failing_listener_does_not_undo_an_applied_command() -> None:
    def failing(state: ClusterState) -> None:
        raise RuntimeError("listener bug")

    machine = ReplicatedStateMachine(on_change=failing)
    assert machine.apply(add_node(1)).is_accepted
    assert machine.state.version == 1, "applied exactly as on every other node"


# --- the full dump ---

ENTRIES = ((b"\x00pickled-by-pysyncobj", 41, 3), (b"\x01", 42, 3))


def test_the_dump_round_trips_through_the_pysyncobj_hooks(tmp_path: Path) -> None:
    machine, _ = machine_with(3)
    path = tmp_path / "cluster.dump"
    members = {TCPNode("127.0.0.1:2"), TCPNode("127.0.0.1:1")}
    machine.write_dump(str(path), (ENTRIES[1], ENTRIES[0], members))
    assert path.read_bytes().startswith(b"QCRAFTD")

    recorder = Recorder()
    restored = ReplicatedStateMachine(on_change=recorder)
    last, previous, addresses = restored.restore_dump(str(path))
    assert (last, previous) == (ENTRIES[1], ENTRIES[0])
    assert type(last) is tuple, "pysyncobj compares entries with its journal's tuples"
    assert addresses == {"127.0.0.1:1", "127.0.0.1:2"}
    assert restored.state == machine.state
    assert recorder.states == [machine.state]
    assert restored.restore_error is None


def test_a_damaged_dump_is_refused_and_remembered(tmp_path: Path) -> None:
    path = tmp_path / "cluster.dump"
    write_dump(path, FullDump(state=encode_state(ClusterState(version=5)), last_entry=ENTRIES[1],
                              previous_entry=ENTRIES[0], member_addresses=("a:1",)))
    assert read_dump(path).state == encode_state(ClusterState(version=5))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    machine, _ = machine_with(2)
    with pytest.raises(DataCorruption, match="checksum"):
        machine.restore_dump(str(path))
    assert machine.restore_error is not None
    assert machine.state.version == 2, "the state is left as it was (and reported stale)"


def test_a_pysyncobj_pickle_dump_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cluster.dump"
    path.write_bytes(gzip.compress(pickle.dumps(({"_state": b""}, ENTRIES[1], ENTRIES[0], set()))))
    with pytest.raises(DataCorruption, match="not a qcluster dump"):
        read_dump(path)
    path.write_bytes(b"QC")
    with pytest.raises(DataCorruption, match="shorter"):
        read_dump(path)


# --- the SyncObj subclass and the settings ---


def test_pysyncobj_can_encrypt() -> None:
    # pysyncobj's password needs the cryptography package; without it every
    # RaftNode fails to start (ImportError), so the dependency is pinned.
    assert pysyncobj.HAS_CRYPTO, "install cryptography (a dependency of qcluster's consensus layer)"


def test_the_syncobj_has_exactly_one_replicated_method() -> None:
    cls = raft_node._ClusterSyncObj
    replicated = sorted(name for name in dir(cls) if getattr(getattr(cls, name), "replicated", False))
    # pysyncobj registers a copy named <method>_v<version>; ids follow the sorted names.
    assert replicated == ["apply", "apply_v0"]


def test_every_pysyncobj_failure_maps_to_a_retryable_error() -> None:
    reasons = {name: value for name, value in vars(FAIL_REASON).items() if name.isupper() and name != "SUCCESS"}
    assert len(reasons) == 7
    for name, reason in reasons.items():
        error = raft_node._proposal_error(reason, leader_hint="127.0.0.1:1")
        assert isinstance(error, QclusterError)
        assert error.retryable or name == "REQUEST_DENIED", name
    assert "unknown" in raft_node._proposal_error(FAIL_REASON.LEADER_CHANGED, leader_hint=None).message


def settings(**changes: Any) -> RaftSettings:
    fields: dict[str, Any] = {
        "node_id": 1, "p2p_address": "127.0.0.1:7001", "peer_addresses": ("127.0.0.1:7002",),
        "cluster_secret": "secret", "data_dir": Path("/nonexistent"),
    }
    return RaftSettings(**{**fields, **changes})


@pytest.mark.parametrize(
    "changes",
    [
        {"cluster_secret": ""},
        {"p2p_address": "127.0.0.1"},
        {"p2p_address": "127.0.0.1:0"},
        {"peer_addresses": ("127.0.0.1:7001",)},
        {"peer_addresses": ("127.0.0.1:7002", "127.0.0.1:7002")},
        {"heartbeat_period_s": 0.2},
        {"connection_timeout_s": 1.0},
        {"leader_fallback_timeout_s": 0.05},
        {"node_id": -1},
        {"log_compaction_min_entries": 1},
    ],
)
def test_settings_refuse_what_pysyncobj_would_misuse(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        settings(**changes)


def test_settings_accept_a_cluster_of_one() -> None:
    assert settings(peer_addresses=()).peer_addresses == ()
