"""Network namespaces of a chaos run: a bridge, one namespace per node, one client.

Topology of run ``<id>`` (6 hex characters)::

    qc<id>-n1 [eth0 198.18.0.11] ──veth── v1 ┐
    qc<id>-n2 [eth0 198.18.0.12] ──veth── v2 ├─ br0 in qc<id>-br
    ...                                      │
    qc<id>-c  [eth0 198.18.0.100] ─veth── vc ┘

No namespace has a default route, so nothing in them can reach beyond the
bridge, and the host namespace has no address on it. Every name carries the
``qc`` prefix and the run id, so ``cleanup_all()`` finds what a killed run
left. Every subprocess runs under a timeout.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CLIENT_ADDRESS", "Environment", "NetnsError", "cleanup_all", "node_address", "probe_features",
    "require_netns", "run_dir_of",
]

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S: Final = 15.0
NODE_COUNT_MAX: Final = 9  # node addresses 198.18.0.11 .. .19 stay below the client's .100
CLIENT_ADDRESS: Final = "198.18.0.100"
PREFIX_LENGTH: Final = 24
RUN_ROOT: Final = Path("/tmp")
FAKETIME_LIBRARY: Final = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
_RUN_ID_PATTERN: Final = re.compile(r"[0-9a-f]{6}")
_HARNESS_NAMESPACE: Final = re.compile(r"qc[0-9a-f]{6}-\S+")
_HARNESS_DATA_MOUNT: Final = re.compile(r"/tmp/qcchaos-[0-9a-f]{6}/n[0-9]+/data")
_PIDS_GONE_TIMEOUT_S: Final = 5.0


class NetnsError(Exception):
    """A namespace, link, address or probe command failed."""


def node_address(node_id: int) -> str:
    """The node's address on the bridge: 198.18.0.<10 + id>."""
    assert 1 <= node_id <= NODE_COUNT_MAX, node_id
    return f"198.18.0.{10 + node_id}"


def run_dir_of(run_id: str) -> Path:
    """Where a run keeps its data dirs, logs and histories."""
    assert _RUN_ID_PATTERN.fullmatch(run_id), run_id
    return RUN_ROOT / f"qcchaos-{run_id}"


def command(argv: list[str], *, timeout_s: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion (bounded); raise NetnsError with its stderr on failure."""
    assert argv, "empty command"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"{' '.join(argv)}: no answer within {timeout_s} s") from exc
    except OSError as exc:
        raise NetnsError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def in_namespace(namespace: str, argv: list[str]) -> list[str]:
    """``argv`` prefixed so that it runs inside ``namespace``."""
    assert _HARNESS_NAMESPACE.fullmatch(namespace), namespace
    return ["ip", "netns", "exec", namespace, *argv]


def require_netns() -> None:
    """Refuse to go on unless this process is inside a harness network
    namespace: a client must never send a packet from the host namespace.

    ``/proc/1/ns/net`` (the host's) cannot be read without ptrace rights over
    pid 1, which a container's root may lack, so the positive check decides:
    this namespace must be one of the ``qc<id>-*`` namespaces in /run/netns.
    """
    own = os.stat("/proc/self/ns/net")
    try:
        host = os.stat("/proc/1/ns/net")
    except PermissionError:
        host = None
    if host is not None and (host.st_dev, host.st_ino) == (own.st_dev, own.st_ino):
        raise SystemExit("chaos: refusing to run in the host network namespace; a chaos client runs only "
                         "inside a harness namespace (ip netns exec qc<run id>-c ...)")
    if current_harness_namespace() is None:
        raise SystemExit("chaos: this process is not inside a harness network namespace (qc<run id>-*); a chaos "
                         "client runs only there (ip netns exec qc<run id>-c ...), never in the host namespace")


def current_harness_namespace() -> str | None:
    """The name of the ``qc<id>-*`` namespace this process is in, if any."""
    own = os.stat("/proc/self/ns/net")
    registry = Path("/run/netns")
    names = sorted(entry.name for entry in registry.iterdir()) if registry.is_dir() else []
    for name in names:
        if not _HARNESS_NAMESPACE.fullmatch(name):
            continue
        try:
            registered = os.stat(registry / name)
        except OSError:
            continue
        if (registered.st_dev, registered.st_ino) == (own.st_dev, own.st_ino):
            return name
    return None


class Environment:
    """The namespaces, bridge and veth pairs of one run.

    ``create()`` and ``destroy()`` are idempotent; ``destroy()`` never raises
    and logs what it could not remove.
    """

    def __init__(self, run_id: str, node_count: int) -> None:
        assert _RUN_ID_PATTERN.fullmatch(run_id), f"run id must be 6 hex characters, not {run_id!r}"
        assert 1 <= node_count <= NODE_COUNT_MAX, node_count
        self.run_id = run_id
        self.node_count = node_count
        self.bridge_namespace = f"qc{run_id}-br"
        self.client_namespace = f"qc{run_id}-c"

    def node_namespace(self, node_id: int) -> str:
        assert 1 <= node_id <= self.node_count, node_id
        return f"qc{self.run_id}-n{node_id}"

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of the run, the bridge's first."""
        nodes = [self.node_namespace(node_id) for node_id in range(1, self.node_count + 1)]
        return [self.bridge_namespace, *nodes, self.client_namespace]

    def _members(self) -> list[tuple[str, str, str]]:
        """(namespace, bridge-side veth name, address) of every node and the client."""
        members = [(self.node_namespace(node_id), f"v{node_id}", node_address(node_id))
                   for node_id in range(1, self.node_count + 1)]
        return [*members, (self.client_namespace, "vc", CLIENT_ADDRESS)]

    def create(self) -> None:
        """Build the topology; parts that already exist are kept."""
        existing = set(list_namespaces())
        for namespace in self.namespaces:
            if namespace not in existing:
                command(["ip", "netns", "add", namespace])
            command(["ip", "-n", namespace, "link", "set", "lo", "up"])
        if not _has_link(self.bridge_namespace, "br0"):
            command(["ip", "-n", self.bridge_namespace, "link", "add", "br0", "type", "bridge"])
        command(["ip", "-n", self.bridge_namespace, "link", "set", "br0", "up"])
        for namespace, veth, address in self._members():
            self._attach(namespace, veth, address)
        for namespace in self.namespaces:
            assert not has_default_route(namespace), f"{namespace} has a default route"

    def _attach(self, namespace: str, veth: str, address: str) -> None:
        """Wire ``namespace``'s eth0 to the bridge and give it ``address``/24."""
        if not _has_link(self.bridge_namespace, veth):
            command(["ip", "-n", self.bridge_namespace, "link", "add", veth, "type", "veth",
                     "peer", "name", "eth0", "netns", namespace])
        command(["ip", "-n", self.bridge_namespace, "link", "set", veth, "master", "br0"])
        command(["ip", "-n", self.bridge_namespace, "link", "set", veth, "up"])
        addresses = command(["ip", "-n", namespace, "-o", "addr", "show", "dev", "eth0"]).stdout
        if f" {address}/" not in addresses:
            command(["ip", "-n", namespace, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", "eth0"])
        command(["ip", "-n", namespace, "link", "set", "eth0", "up"])

    def run_in(self, namespace: str, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside one of this run's namespaces. ``ip netns exec``
        execs, so the returned process's pid is the program's own."""
        assert namespace in self.namespaces, f"{namespace} is not a namespace of run {self.run_id}"
        return subprocess.Popen(in_namespace(namespace, argv), **popen_kwargs)

    def destroy(self) -> None:
        """Kill what runs in the namespaces and delete them; never raises."""
        existing = set(list_namespaces_quietly())
        for namespace in self.namespaces:
            if namespace in existing:
                remove_namespace(namespace)


def list_namespaces() -> list[str]:
    """Names of all network namespaces (``ip netns list`` prints ``name (id: n)``)."""
    listing = command(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def list_namespaces_quietly() -> list[str]:
    """``list_namespaces()``, or [] (logged) when ``ip`` fails."""
    try:
        return list_namespaces()
    except NetnsError as exc:
        log.error("cannot list network namespaces: %s", exc)
        return []


def has_default_route(namespace: str) -> bool:
    return bool(command(["ip", "-n", namespace, "route", "show", "default"]).stdout.strip())


def _has_link(namespace: str, name: str) -> bool:
    done = subprocess.run(["ip", "-n", namespace, "link", "show", "dev", name], capture_output=True,
                          timeout=COMMAND_TIMEOUT_S, check=False)
    return done.returncode == 0


def namespace_pids(namespace: str) -> list[int]:
    return [int(word) for word in command(["ip", "netns", "pids", namespace]).stdout.split()]


def remove_namespace(namespace: str) -> bool:
    """SIGKILL every process in a harness namespace, then delete it. Logs and
    returns False on failure instead of raising."""
    assert _HARNESS_NAMESPACE.fullmatch(namespace), f"refusing to remove {namespace}"
    try:
        _kill_namespace_pids(namespace)
        command(["ip", "netns", "del", namespace])
    except NetnsError as exc:
        log.error("could not remove namespace %s: %s", namespace, exc)
        return False
    return True


def _kill_namespace_pids(namespace: str) -> None:
    """SIGKILL the processes ``ip netns pids`` lists, and wait (bounded) until they are gone."""
    deadline = time.monotonic() + _PIDS_GONE_TIMEOUT_S
    pids = namespace_pids(namespace)
    while pids and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
        pids = namespace_pids(namespace)
    if pids:
        raise NetnsError(f"processes {pids} in {namespace} survived SIGKILL for {_PIDS_GONE_TIMEOUT_S} s")


def harness_mounts() -> list[Path]:
    """Mounted node data dirs of any run (``/tmp/qcchaos-<id>/n<i>/data``)."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    return [Path(point) for point in points if _HARNESS_DATA_MOUNT.fullmatch(point)]


def unmount(path: Path) -> bool:
    """Unmount ``path`` (lazily if busy); logs and returns False on failure."""
    try:
        command(["umount", str(path)])
    except NetnsError as exc:
        log.warning("umount %s failed (%s); detaching it lazily", path, exc)
        try:
            command(["umount", "-l", str(path)])
        except NetnsError as lazy_exc:
            log.error("could not unmount %s: %s", path, lazy_exc)
            return False
    return True


def probe_features(run_id: str) -> dict[str, str | None]:
    """Try every kernel feature the nemeses need in a throwaway namespace
    ``qc<run id>-probe``: name -> None when it works, else why not. The
    namespace and mount are removed before returning."""
    namespace = f"qc{run_id}-probe"
    features: dict[str, str | None] = {}
    try:
        features["bridge-veth"] = _attempt(
            ["ip", "netns", "add", namespace],
            ["ip", "-n", namespace, "link", "add", "br0", "type", "bridge"],
            ["ip", "-n", namespace, "link", "add", "pa", "type", "veth", "peer", "name", "pb"],
            ["ip", "-n", namespace, "link", "set", "pa", "master", "br0"],
            ["ip", "-n", namespace, "link", "set", "pb", "up"])
        ruled = in_namespace(namespace, ["iptables", "-A", "OUTPUT", "-d", "198.18.0.250"])
        features["iptables"] = _attempt([*ruled, "-j", "DROP"])
        features["iptables-statistic"] = _attempt(
            [*ruled, "-m", "statistic", "--mode", "random", "--probability", "0.5", "-j", "DROP"])
        features["tc-tbf"] = _attempt(["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "pb", "root",
                                       "tbf", "rate", "256kbit", "burst", "16kb", "latency", "400ms"])
    finally:
        if namespace in list_namespaces_quietly():
            remove_namespace(namespace)
    features["tmpfs"] = _probe_tmpfs(run_id)
    features["faketime"] = None if FAKETIME_LIBRARY.is_file() else f"{FAKETIME_LIBRARY} is not installed"
    return features


def _attempt(*argvs: list[str]) -> str | None:
    """Run the commands in order; None if all succeed, else the first failure."""
    for argv in argvs:
        try:
            command(argv)
        except NetnsError as exc:
            return str(exc)
    return None


def _probe_tmpfs(run_id: str) -> str | None:
    """Mount and unmount a 1 MiB tmpfs. It sits where a node's data dir would
    (node 0 never exists), so ``cleanup_all()`` finds it if this process dies."""
    point = run_dir_of(run_id) / "n0" / "data"
    point.mkdir(parents=True, exist_ok=True)
    reason = _attempt(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(point)])
    if point.is_mount() and not unmount(point):
        reason = f"could not unmount the probe tmpfs at {point}"
    shutil.rmtree(point.parent, ignore_errors=True)
    return reason


def cleanup_all(*, run_id: str | None = None) -> list[str]:
    """Remove what runs left: every ``qc??????-*`` namespace (its processes
    killed first) and every node data mount with its directory, or only those
    of ``run_id``. Logs and histories stay for inspection. Returns what was removed."""
    assert run_id is None or _RUN_ID_PATTERN.fullmatch(run_id), run_id
    tag = "" if run_id is None else f"qc{run_id}-"
    removed: list[str] = []
    for namespace in list_namespaces_quietly():
        if _HARNESS_NAMESPACE.fullmatch(namespace) and namespace.startswith(tag) and remove_namespace(namespace):
            removed.append(f"namespace {namespace}")
    pattern = "qcchaos-*" if run_id is None else f"qcchaos-{run_id}"
    for mount in harness_mounts():
        if mount.is_relative_to(RUN_ROOT) and mount.relative_to(RUN_ROOT).match(f"{pattern}/n*/data") \
                and unmount(mount):
            removed.append(f"mount {mount}")
    for data_dir in RUN_ROOT.glob(f"{pattern}/n*/data"):
        if _HARNESS_DATA_MOUNT.fullmatch(str(data_dir)) and not data_dir.is_mount():
            shutil.rmtree(data_dir, ignore_errors=True)
            removed.append(f"directory {data_dir}")
    return removed
