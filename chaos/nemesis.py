"""Faults (nemeses) against the nodes of a chaos run.

Each nemesis has a ``name`` (as in ``faults.jsonl``), ``probe(features)``
(None when it can run here, else the reason it is skipped), ``apply(targets)``
(returns the episode's detail) and ``heal()``: idempotent, safe to call in a
``finally`` whether or not ``apply`` ran, and raising NemesisError only when
something it applied could not be undone.

Network faults are iptables rules in chains of their own (``QC_<NAME>_IN`` /
``QC_<NAME>_OUT``, jumped to from INPUT / OUTPUT), so healing one fault
flushes only its rules; deleting the namespaces removes them all.
"""

from __future__ import annotations

import abc
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, Final

from chaos.cluster import ChaosCluster, faketime_environ, write_clock_offset
from chaos.netns import FAKETIME_LIBRARY, Environment, NetnsError, command, in_namespace, node_address

__all__ = ["NEMESES", "TARGET_KINDS", "Nemesis", "NemesisError", "build_nemeses"]

log = logging.getLogger(__name__)

TARGET_KINDS: Final = ("leader", "primaries", "replicas-only", "random")
LOSS_PROBABILITY: Final = 0.3
CLOCK_OFFSET_S: Final = 120
_PROBE_TIMEOUT_S: Final = 20.0


class NemesisError(Exception):
    """A fault could not be applied or undone."""


class Nemesis(abc.ABC):
    """One kind of fault; ``apply`` and ``heal`` alternate, one episode at a time."""

    name: ClassVar[str]
    target_kinds: ClassVar[tuple[str, ...]] = TARGET_KINDS
    required_features: ClassVar[tuple[str, ...]] = ()

    def __init__(self, env: Environment, cluster: ChaosCluster) -> None:
        self.env = env
        self.cluster = cluster

    def probe(self, features: dict[str, str | None]) -> str | None:
        """None when this nemesis can run here, else why not."""
        for feature in self.required_features:
            reason = features.get(feature, f"feature {feature} was not probed")
            if reason is not None:
                return f"{feature}: {reason}"
        return None

    def targets_for(self, target: int) -> list[int]:
        """The nodes one episode acts on, given the node target selection chose."""
        assert target in self.cluster.node_ids, target
        return [target]

    @abc.abstractmethod
    def apply(self, targets: list[int]) -> dict[str, Any]:
        """Start the fault on ``targets``; returns its detail for faults.jsonl."""

    @abc.abstractmethod
    def heal(self) -> None:
        """Undo every effect of ``apply`` (no-op when there is none)."""


class Kill(Nemesis):
    """kill -9 the targets; healing starts them again on their data dirs."""

    name = "kill"

    def __init__(self, env: Environment, cluster: ChaosCluster) -> None:
        super().__init__(env, cluster)
        self._killed: set[int] = set()

    def apply(self, targets: list[int]) -> dict[str, Any]:
        for node_id in targets:
            self._killed.add(node_id)
            self.cluster.kill(node_id)
        return {"signal": "SIGKILL"}

    def heal(self) -> None:
        for node_id in sorted(self._killed):
            if not self.cluster.is_running(node_id):
                self.cluster.start(node_id)
            self._killed.discard(node_id)


class Pause(Nemesis):
    """SIGSTOP the targets; healing sends SIGCONT."""

    name = "pause"

    def __init__(self, env: Environment, cluster: ChaosCluster) -> None:
        super().__init__(env, cluster)
        self._paused: set[int] = set()

    def apply(self, targets: list[int]) -> dict[str, Any]:
        for node_id in targets:
            self._paused.add(node_id)
            self.cluster.pause(node_id)
        return {"signal": "SIGSTOP"}

    def heal(self) -> None:
        for node_id in sorted(self._paused):
            self.cluster.resume(node_id)
            self._paused.discard(node_id)


class _IptablesNemesis(Nemesis):
    """Rules in this nemesis's own chains, in the namespaces it touched."""

    required_features = ("bridge-veth", "iptables")
    chain: ClassVar[str]

    def __init__(self, env: Environment, cluster: ChaosCluster) -> None:
        super().__init__(env, cluster)
        self._touched: set[str] = set()

    def _iptables(self, namespace: str, *arguments: str) -> None:
        command(in_namespace(namespace, ["iptables", *arguments]))

    def _has(self, namespace: str, *arguments: str) -> bool:
        argv = in_namespace(namespace, ["iptables", *arguments])
        return subprocess.run(argv, capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False).returncode == 0

    def _ensure_chains(self, namespace: str) -> None:
        for hook, chain in (("INPUT", f"{self.chain}_IN"), ("OUTPUT", f"{self.chain}_OUT")):
            if not self._has(namespace, "-n", "-L", chain):
                self._iptables(namespace, "-N", chain)
            if not self._has(namespace, "-C", hook, "-j", chain):
                self._iptables(namespace, "-I", hook, "1", "-j", chain)

    def _add(self, namespace: str, *, inbound: list[str], outbound: list[str]) -> None:
        """Append one inbound and one outbound rule (match arguments; -j DROP is added)."""
        self._touched.add(namespace)
        self._ensure_chains(namespace)
        self._iptables(namespace, "-A", f"{self.chain}_IN", *inbound, "-j", "DROP")
        self._iptables(namespace, "-A", f"{self.chain}_OUT", *outbound, "-j", "DROP")

    def _block(self, namespace: str, peer_address: str) -> None:
        """Drop everything between ``namespace`` and ``peer_address``, both ways."""
        self._add(namespace, inbound=["-s", peer_address], outbound=["-d", peer_address])

    def heal(self) -> None:
        failures: list[str] = []
        for namespace in sorted(self._touched):
            try:
                for chain in (f"{self.chain}_IN", f"{self.chain}_OUT"):
                    if self._has(namespace, "-n", "-L", chain):
                        self._iptables(namespace, "-F", chain)
                self._touched.discard(namespace)
            except (NetnsError, subprocess.TimeoutExpired) as exc:
                failures.append(f"{namespace}: {exc}")
        if failures:
            raise NemesisError(f"{self.name}: rules left in place: {'; '.join(failures)}")


class _Partition(_IptablesNemesis):
    """Cut the node pairs ``cut_pairs`` returns, on both ends of each pair."""

    chain = "QC_PART"

    @abc.abstractmethod
    def cut_pairs(self, targets: list[int]) -> list[tuple[int, int]]:
        """Pairs of nodes that must not reach each other."""

    def apply(self, targets: list[int]) -> dict[str, Any]:
        pairs = self.cut_pairs(targets)
        assert pairs, f"{self.name}: nothing to cut for {targets}"
        for first, second in pairs:
            assert first != second, (first, second)
            self._block(self.env.node_namespace(first), node_address(second))
            self._block(self.env.node_namespace(second), node_address(first))
        return {"cut": [list(pair) for pair in pairs]}


class PartitionOne(_Partition):
    """Isolate the target from every other node (clients still reach it)."""

    name = "partition-one"

    def cut_pairs(self, targets: list[int]) -> list[tuple[int, int]]:
        others = [node_id for node_id in self.cluster.node_ids if node_id not in targets]
        return [(target, other) for target in targets for other in others]


class PartitionLeaderMinority(_Partition):
    """Split the nodes into a minority holding the Raft leader and a majority."""

    name = "partition-leader-minority"
    target_kinds = ("leader",)

    def targets_for(self, target: int) -> list[int]:
        """The leader plus the lowest other ids, (n - 1) // 2 nodes in all."""
        assert target in self.cluster.node_ids, target
        others = [node_id for node_id in self.cluster.node_ids if node_id != target]
        minority_size = (len(self.cluster.node_ids) - 1) // 2
        assert minority_size >= 1, "a split needs at least 3 nodes"
        return [target, *others[: minority_size - 1]]

    def cut_pairs(self, targets: list[int]) -> list[tuple[int, int]]:
        majority = [node_id for node_id in self.cluster.node_ids if node_id not in targets]
        assert len(majority) > len(targets), (targets, majority)
        return [(minority, member) for minority in targets for member in majority]

    def probe(self, features: dict[str, str | None]) -> str | None:
        if len(self.cluster.node_ids) < 3:
            return "a majority/minority split needs at least 3 nodes"
        return super().probe(features)


class PartitionBridge(_Partition):
    """The other nodes, in two halves, cannot reach each other; all reach the target."""

    name = "partition-bridge"
    target_kinds = ("leader", "random")

    def cut_pairs(self, targets: list[int]) -> list[tuple[int, int]]:
        others = [node_id for node_id in self.cluster.node_ids if node_id not in targets]
        half = len(others) // 2
        return [(first, second) for first in others[:half] for second in others[half:]]

    def probe(self, features: dict[str, str | None]) -> str | None:
        if len(self.cluster.node_ids) < 3:
            return "a bridge partition needs at least 3 nodes"
        return super().probe(features)


class ClientCut(_IptablesNemesis):
    """The clients cannot reach the target; the nodes still can."""

    name = "client-cut"
    chain = "QC_CLIENT"

    def apply(self, targets: list[int]) -> dict[str, Any]:
        for node_id in targets:
            self._block(self.env.client_namespace, node_address(node_id))
        return {"namespace": self.env.client_namespace}


class Loss(_IptablesNemesis):
    """Drop a random LOSS_PROBABILITY share of the target's packets on eth0, both ways."""

    name = "loss"
    chain = "QC_LOSS"
    required_features = ("bridge-veth", "iptables", "iptables-statistic")

    def apply(self, targets: list[int]) -> dict[str, Any]:
        statistic = ["-m", "statistic", "--mode", "random", "--probability", str(LOSS_PROBABILITY)]
        for node_id in targets:
            self._add(self.env.node_namespace(node_id), inbound=["-i", "eth0", *statistic],
                      outbound=["-o", "eth0", *statistic])
        return {"probability": LOSS_PROBABILITY}


class Slow(Nemesis):
    """A token bucket on the target's eth0: 256 kbit/s out of it."""

    name = "slow"
    required_features = ("bridge-veth", "tc-tbf")
    TBF: ClassVar[tuple[str, ...]] = ("tbf", "rate", "256kbit", "burst", "16kb", "latency", "400ms")

    def __init__(self, env: Environment, cluster: ChaosCluster) -> None:
        super().__init__(env, cluster)
        self._touched: set[str] = set()

    def apply(self, targets: list[int]) -> dict[str, Any]:
        for node_id in targets:
            namespace = self.env.node_namespace(node_id)
            self._touched.add(namespace)
            command(in_namespace(namespace, ["tc", "qdisc", "replace", "dev", "eth0", "root", *self.TBF]))
        return {"qdisc": " ".join(self.TBF)}

    def heal(self) -> None:
        for namespace in sorted(self._touched):
            shown = command(in_namespace(namespace, ["tc", "qdisc", "show", "dev", "eth0"])).stdout
            if "tbf" in shown:
                command(in_namespace(namespace, ["tc", "qdisc", "del", "dev", "eth0", "root"]))
            self._touched.discard(namespace)


class Disk(Nemesis):
    """Fill the target's data tmpfs; healing deletes the filler."""

    name = "disk"
    required_features = ("tmpfs",)

    def __init__(self, env: Environment, cluster: ChaosCluster) -> None:
        super().__init__(env, cluster)
        self._filled: set[int] = set()

    def apply(self, targets: list[int]) -> dict[str, Any]:
        written: dict[str, int] = {}
        for node_id in targets:
            self._filled.add(node_id)
            written[str(node_id)] = self.cluster.fill_disk(node_id)
        return {"filler_bytes": written}

    def heal(self) -> None:
        for node_id in sorted(self._filled):
            self.cluster.free_disk(node_id)
            self._filled.discard(node_id)


class Clock(Nemesis):
    """Step the target's wall clock CLOCK_OFFSET_S ahead (libfaketime); healing steps it back."""

    name = "clock"
    required_features = ("faketime",)

    def __init__(self, env: Environment, cluster: ChaosCluster) -> None:
        super().__init__(env, cluster)
        self._skewed: set[int] = set()

    def probe(self, features: dict[str, str | None]) -> str | None:
        return super().probe(features) or probe_live_clock_offset()

    def apply(self, targets: list[int]) -> dict[str, Any]:
        for node_id in targets:
            self._skewed.add(node_id)
            self.cluster.set_clock_offset(node_id, CLOCK_OFFSET_S)
        return {"offset_s": CLOCK_OFFSET_S}

    def heal(self) -> None:
        for node_id in sorted(self._skewed):
            self.cluster.set_clock_offset(node_id, 0)
            self._skewed.discard(node_id)


_CLOCK_PROBE_SCRIPT: Final = """
import sys, time
print(time.time(), flush=True)
sys.stdin.readline()
time.sleep(0.3)
print(time.time(), flush=True)
"""


def probe_live_clock_offset() -> str | None:
    """Whether libfaketime, preloaded the way nodes get it, shifts a running
    Python's wall clock when the offset file changes, while time.sleep (which
    sleeps on CLOCK_MONOTONIC) keeps working. None if so, else what was measured."""
    with tempfile.TemporaryDirectory(prefix="qcchaos-clock-") as scratch:
        clock_file = Path(scratch) / "offset"
        write_clock_offset(clock_file, 0)
        child = subprocess.Popen([sys.executable, "-c", _CLOCK_PROBE_SCRIPT], text=True, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env={"PATH": "/usr/bin:/bin", **faketime_environ(FAKETIME_LIBRARY, clock_file)})
        try:
            assert child.stdout is not None
            before_s = float(child.stdout.readline() or "nan") - time.time()
            write_clock_offset(clock_file, CLOCK_OFFSET_S)
            out, err = child.communicate("\n", timeout=_PROBE_TIMEOUT_S)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=_PROBE_TIMEOUT_S)
    if child.returncode != 0:
        where_and_what = " / ".join(line.strip() for line in (err.strip().splitlines() or ["no output"])[-2:])
        return (f"with libfaketime faking only the wall clock (faking CLOCK_MONOTONIC too would step it back "
                f"on heal), a Python process failed: {where_and_what}")
    after_s = float(out.strip() or "nan") - time.time()
    if not (abs(before_s) < 1.0 and abs(after_s - CLOCK_OFFSET_S) < 1.0):
        return f"libfaketime did not apply a changed offset live (skew {before_s:.1f} s, then {after_s:.1f} s)"
    return None


NEMESES: Final[tuple[type[Nemesis], ...]] = (
    Kill, Pause, PartitionOne, PartitionLeaderMinority, PartitionBridge, ClientCut, Loss, Slow, Disk, Clock)


def build_nemeses(names: list[str], env: Environment, cluster: ChaosCluster) -> list[Nemesis]:
    """The nemeses called ``names`` (``partition`` stands for all three partitions)."""
    by_name = {nemesis.name: nemesis for nemesis in NEMESES}
    expanded: list[str] = []
    for name in names:
        group = [known for known in by_name if known.startswith("partition-")] if name == "partition" else [name]
        expanded.extend(known for known in group if known not in expanded)
    unknown = [name for name in expanded if name not in by_name]
    if unknown:
        raise ValueError(f"unknown faults {unknown}; known: partition, {', '.join(by_name)}")
    return [by_name[name](env, cluster) for name in expanded]
