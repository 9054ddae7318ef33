"""The orchestrator of a chaos run: ``run(RunConfig) -> Path`` of the report.

Order: probe the kernel, build the namespaces, mount the data tmpfs, start
the nodes, ``workload setup``, ``workload run`` in the background, the seeded
rounds of faults (``faults.jsonl``), a full heal, ``RUN_DIR/stop``,
``workload final``, the checker and the report. Every exit path (exception,
SIGINT, SIGTERM, the wall-clock bound) heals the nemeses, stops the
processes, unmounts and deletes the namespaces.

The schedule (fault, target kind, duration per round) depends only on the
seed; which node a target kind resolves to depends on the live cluster and
a second generator seeded from the same seed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final

from chaos.cluster import GRPC_PORT, HTTP_PORT, REPO_ROOT, ChaosCluster
from chaos.nemesis import Nemesis, NemesisError, build_nemeses
from chaos.netns import FAKETIME_LIBRARY, Environment, NetnsError, node_address, probe_features, run_dir_of

__all__ = ["ALL_FAULTS", "RunAborted", "RunConfig", "Round", "plan_schedule", "run"]

log = logging.getLogger(__name__)

ALL_FAULTS: Final = ("kill", "pause", "partition", "client-cut", "loss", "slow", "disk", "clock")
COLLECTION: Final = "chaos"
READY_TIMEOUT_S: Final = 60.0
SETUP_TIMEOUT_S: Final = 180.0
WORKLOAD_STOP_TIMEOUT_S: Final = 60.0
FINAL_TIMEOUT_S: Final = 300.0
CONVERGE_TIMEOUT_S: Final = 60
VIEWS_AGREE_TIMEOUT_S: Final = 30.0
ACTIVE_TIMEOUT_S: Final = 60.0  # after a heal, for every replica to be active again
QUERY_TIMEOUT_S: Final = 30.0
_CLEANUP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)


@dataclass
class RunConfig:
    """What to run. Durations are seconds; ``seed`` None draws one (printed)."""

    nodes: int = 3
    rounds: int = 10
    seed: int | None = None
    faults: list[str] = field(default_factory=lambda: list(ALL_FAULTS))
    fault_duration_s_min: float = 5.0
    fault_duration_s_max: float = 30.0
    recovery_wait_s: float = 10.0
    rate: float = 40.0
    out_dir: Path = Path("chaos/results")
    tmpfs_mb: int = 256
    write_consistency_factor: int = 1
    workload_module: str = "chaos.workload"  # the module run as the workload; tests run a stub instead
    # Play exactly these faults, one per round, in this order (targets and
    # durations still from the seed); None: ``rounds`` faults drawn from ``faults``.
    sequence: list[str] | None = None

    def wall_clock_max_s(self) -> float:
        """The bound of the whole run: every phase at its own bound."""
        round_max_s = (self.fault_duration_s_max + READY_TIMEOUT_S + self.recovery_wait_s + 2 * QUERY_TIMEOUT_S
                       + VIEWS_AGREE_TIMEOUT_S + ACTIVE_TIMEOUT_S + 2 * QUERY_TIMEOUT_S)
        fixed_s = READY_TIMEOUT_S + SETUP_TIMEOUT_S + WORKLOAD_STOP_TIMEOUT_S + FINAL_TIMEOUT_S + 300.0
        return fixed_s + self.rounds * round_max_s


@dataclass(frozen=True)
class Round:
    """One planned fault episode."""

    number: int
    fault: str
    target_kind: str
    duration_s: float


class RunAborted(BaseException):
    """SIGTERM or the wall-clock bound; a BaseException so no ``except Exception`` swallows it."""


def plan_schedule(seed: int, rounds: int, nemeses: list[Nemesis], *, duration_s_min: float,
                  duration_s_max: float, sequence: list[str] | None = None) -> list[Round]:
    """The rounds of a run: a pure function of its arguments. With
    ``sequence``, round n plays the nemesis named ``sequence[n - 1]``."""
    assert nemeses, "no nemesis can run"
    assert 0 < duration_s_min <= duration_s_max, (duration_s_min, duration_s_max)
    assert sequence is None or len(sequence) == rounds, (sequence, rounds)
    by_name = {nemesis.name: nemesis for nemesis in nemeses}
    generator = random.Random(seed)
    schedule = []
    for number in range(1, rounds + 1):
        nemesis = generator.choice(nemeses) if sequence is None else by_name[sequence[number - 1]]
        kind = generator.choice(nemesis.target_kinds)
        duration_s = round(generator.uniform(duration_s_min, duration_s_max), 1)
        schedule.append(Round(number=number, fault=nemesis.name, target_kind=kind, duration_s=duration_s))
    assert len(schedule) == rounds
    return schedule


def _raise_aborted(signum: int, _frame: FrameType | None) -> None:
    raise RunAborted(f"{signal.Signals(signum).name}: the run was stopped")


class _Run:
    """The state of one run between ``run()``'s setup and its cleanup."""

    def __init__(self, config: RunConfig, seed: int, run_id: str) -> None:
        self.config = config
        self.seed = seed
        self.run_dir = run_dir_of(run_id)
        self.env = Environment(run_id, config.nodes)
        self.cluster = ChaosCluster(self.env, self.run_dir, config.nodes, secrets.token_hex(24), config.tmpfs_mb)
        self.nemeses = build_nemeses(config.faults, self.env, self.cluster)
        self.urls = [f"http://{node_address(node_id)}:{HTTP_PORT}" for node_id in self.cluster.node_ids]
        self.workload: subprocess.Popen[bytes] | None = None
        self.workload_log: IO[bytes] | None = None
        self.deadline = time.monotonic() + config.wall_clock_max_s()

    def client(self, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start a Python module in the client namespace, with the repo importable."""
        environ = dict(os.environ)
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environ.get("PYTHONPATH")]))
        return self.env.run_in(self.env.client_namespace, [sys.executable, "-m", *argv], cwd=REPO_ROOT,
                               env=environ, stdin=subprocess.DEVNULL, **popen_kwargs)

    def query(self, what: str) -> dict[str, Any]:
        """``chaos.query`` answers, keyed by node id."""
        process = self.client(["chaos.query", what, "--collection", COLLECTION, *self.urls],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = process.communicate(timeout=QUERY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=QUERY_TIMEOUT_S)
            raise
        if process.returncode != 0:
            raise NetnsError(f"chaos.query {what} exited {process.returncode}: {err.strip()}")
        answers = json.loads(out)
        return {node_id: answers[url] for node_id, url in zip(self.cluster.node_ids, self.urls, strict=True)}

    def wait_ready(self, timeout_s: float) -> bool:
        """Poll /readyz of every node (bounded); True once all answer 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(answer["ready"] for answer in self.query("ready").values()):
                return True
            time.sleep(1.0)
        return False

    def workload_argv(self, verb: str, *arguments: str) -> list[str]:
        return [self.config.workload_module, verb, "--config", str(self.run_dir / "config.json"), *arguments]

    def run_workload_step(self, verb: str, timeout_s: float, *arguments: str) -> None:
        """Run ``workload <verb>`` to completion in the client namespace (bounded)."""
        assert self.workload_log is not None
        process = self.client(self.workload_argv(verb, *arguments), stdout=self.workload_log,
                              stderr=subprocess.STDOUT)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=QUERY_TIMEOUT_S)
            raise RuntimeError(f"workload {verb} did not finish within {timeout_s} s") from None
        if code != 0:
            raise RuntimeError(f"workload {verb} exited {code}; see {self.run_dir / 'workload.log'}")

    def write_config(self, skipped: dict[str, str]) -> None:
        """config.json, the contract with the workload and the checker."""
        nodes = [{"id": node_id, "url": url, "grpc_port": GRPC_PORT}
                 for node_id, url in zip(self.cluster.node_ids, self.urls, strict=True)]
        document = {"run_id": self.env.run_id, "seed": self.seed, "nodes": nodes, "collection": COLLECTION,
                    "started_at": time.time(), "faults": [nemesis.name for nemesis in self.nemeses],
                    "skipped": skipped, "rounds": self.config.rounds, "rate": self.config.rate,
                    "write_consistency_factor": self.config.write_consistency_factor}
        (self.run_dir / "config.json").write_text(json.dumps(document, indent=2) + "\n")

    def start_workload(self) -> None:
        """``workload run`` in the background until RUN_DIR/stop (or the run's bound)."""
        assert self.workload is None and self.workload_log is not None
        duration_s = max(1.0, self.deadline - time.monotonic())
        argv = self.workload_argv("run", "--duration", f"{duration_s:.0f}", "--rate", str(self.config.rate),
                                  "--history", str(self.run_dir / "history.jsonl"))
        self.workload = self.client(argv, stdout=self.workload_log, stderr=subprocess.STDOUT)

    def stop_workload(self) -> None:
        """Touch RUN_DIR/stop and wait (bounded) for ``workload run``; kill it if it lingers."""
        (self.run_dir / "stop").touch()
        if self.workload is None:
            return
        try:
            self.workload.wait(timeout=WORKLOAD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("workload ignored RUN_DIR/stop for %.0f s; killing it", WORKLOAD_STOP_TIMEOUT_S)
            self.workload.kill()
            self.workload.wait(timeout=QUERY_TIMEOUT_S)

    def heal_all(self) -> None:
        """Heal every nemesis; logs a failure and goes on with the others."""
        for nemesis in self.nemeses:
            try:
                nemesis.heal()
            except (NemesisError, NetnsError, OSError, subprocess.SubprocessError) as exc:
                log.error("healing %s failed: %s", nemesis.name, exc)

    def teardown(self) -> None:
        """Heal, stop every process, unmount, delete the namespaces. Never raises."""
        self.heal_all()
        if self.workload is not None and self.workload.poll() is None:
            self.workload.kill()
            self.workload.wait(timeout=QUERY_TIMEOUT_S)
        self.cluster.stop_all()
        self.cluster.unmount()
        self.env.destroy()
        if self.workload_log is not None:
            self.workload_log.close()


def _leader(views: dict[int, dict[str, Any]]) -> int | None:
    """The leader most nodes name (None if none does)."""
    named = Counter(view["leader"] for view in views.values() if view.get("leader") is not None)
    return named.most_common(1)[0][0] if named else None


def _shards(views: dict[int, dict[str, Any]], leader: int | None) -> list[dict[str, Any]]:
    """The shard table as the leader sees it, else as the first node that answers."""
    ordered = sorted(views, key=lambda node_id: node_id != leader)
    for node_id in ordered:
        if views[node_id].get("shards"):
            return list(views[node_id]["shards"])
    return []


def candidates(kind: str, views: dict[int, dict[str, Any]], node_ids: list[int]) -> list[int]:
    """The nodes a target kind may pick, from the nodes' views of the cluster."""
    leader = _leader(views)
    shards = _shards(views, leader)
    primaries = sorted({shard["primary"] for shard in shards if shard.get("primary") in node_ids})
    holders = sorted({int(node) for shard in shards for node in (shard.get("replicas") or {})
                      if int(node) in node_ids})
    if kind == "leader":
        return [leader] if leader in node_ids else []
    if kind == "primaries":
        return primaries
    if kind == "replicas-only":
        return [node_id for node_id in holders if node_id not in primaries]
    assert kind == "random", kind
    return list(node_ids)


def resolve_target(kind: str, views: dict[int, dict[str, Any]], node_ids: list[int],
                   generator: random.Random) -> tuple[int, str, str | None]:
    """(node, kind used, why it fell back) — random when no node fits ``kind``."""
    fitting = candidates(kind, views, node_ids)
    if fitting:
        return generator.choice(fitting), kind, None
    return generator.choice(node_ids), "random", f"no node fits {kind!r}"


def _write_line(handle: IO[str], record: dict[str, Any]) -> None:
    handle.write(json.dumps(record) + "\n")
    handle.flush()


def _play_round(state: _Run, planned: Round, generator: random.Random, faults: IO[str]) -> None:
    """Resolve the target, apply, hold, heal and record one episode, then let the cluster recover."""
    nemesis = next(nemesis for nemesis in state.nemeses if nemesis.name == planned.fault)
    try:
        views = state.query("cluster")
    except (NetnsError, subprocess.TimeoutExpired, ValueError) as exc:
        log.warning("round %d: no cluster view (%s); targets are random", planned.number, exc)
        views = {}
    target, kind, fallback = resolve_target(planned.target_kind, views, state.cluster.node_ids, generator)
    targets = nemesis.targets_for(target)
    print(f"chaos: round {planned.number}: {planned.fault} on {targets} ({kind}) for {planned.duration_s} s",
          flush=True)
    start = time.time()
    detail: dict[str, Any] = {"duration_s": planned.duration_s}
    if fallback is not None:
        detail["fallback"] = fallback
    try:
        detail.update(nemesis.apply(targets))
        time.sleep(max(0.0, min(planned.duration_s, state.deadline - time.monotonic())))
    except (NemesisError, NetnsError, OSError, subprocess.SubprocessError) as exc:
        detail["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        nemesis.heal()
    end = time.time()
    if not state.wait_ready(READY_TIMEOUT_S):
        log.warning("round %d: not every node was ready %.0f s after the heal", planned.number, READY_TIMEOUT_S)
    agreed_at = _views_agree(state, VIEWS_AGREE_TIMEOUT_S)
    active_at = _all_replicas_active(state, ACTIVE_TIMEOUT_S)
    if active_at is None:
        log.warning("round %d: not every replica was active %.0f s after the heal", planned.number, ACTIVE_TIMEOUT_S)
    _write_line(faults, {"round": planned.number, "fault": planned.fault, "targets": targets,
                         "target_kind": kind, "start": start, "end": end, "detail": detail,
                         "views_agreed_after_s": None if agreed_at is None else round(agreed_at - end, 3),
                         "replicas_active_after_s": None if active_at is None else round(active_at - end, 3)})
    time.sleep(state.config.recovery_wait_s)


def _comparable(view: dict[str, Any]) -> Any:
    """What every node's view must hold alike once healed: the leader and each
    shard's primary, in-sync set and replica states."""
    shards = sorted(([shard.get("shard_id"), shard.get("primary"), sorted(shard.get("in_sync") or []),
                      sorted((shard.get("replicas") or {}).items())] for shard in view.get("shards") or []),
                    key=lambda row: row[0])
    return view.get("leader"), shards


def _views_agree(state: _Run, timeout_s: float) -> float | None:
    """Poll (bounded) until every node names the same leader and the same
    shard table; the time they did, or None."""
    return _poll_views(state, timeout_s, lambda views: True)


def _all_replicas_active(state: _Run, timeout_s: float) -> float | None:
    """Poll (bounded) until the views agree and every replica of every shard
    is active in them (recovery is over); the time it was, or None. The next
    fault waits for it: a fault while a replica still recovers would be two
    nodes out, not one."""
    def all_active(views: dict[int, dict[str, Any]]) -> bool:
        shards = next(iter(views.values())).get("shards") or []
        return bool(shards) and all(set((shard.get("replicas") or {}).values()) == {"active"} for shard in shards)

    return _poll_views(state, timeout_s, all_active)


def _poll_views(state: _Run, timeout_s: float, accept: Callable[[dict[int, dict[str, Any]]], bool]) -> float | None:
    """Poll the nodes' cluster views once a second (bounded) until they all
    answer, name a leader and agree, and ``accept`` holds; the time, or None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            views = state.query("cluster")
        except (NetnsError, subprocess.TimeoutExpired, ValueError):
            views = {}
        seen = {json.dumps(_comparable(view), sort_keys=True) for view in views.values()}
        if len(views) == len(state.cluster.node_ids) and len(seen) == 1 and \
                all(view.get("leader") is not None and view.get("error") is None for view in views.values()) \
                and accept(views):
            return time.time()
        time.sleep(1.0)
    return None


def _prepare(state: _Run, faults: IO[str]) -> None:
    """Probe, record skipped nemeses, build the environment and start the cluster and workload."""
    features = probe_features(state.env.run_id)
    skipped = {nemesis.name: reason for nemesis in state.nemeses
               if (reason := nemesis.probe(features)) is not None}
    for name, reason in skipped.items():
        print(f"chaos: skipping {name}: {reason}", flush=True)
        _write_line(faults, {"skipped": name, "reason": reason})
    state.nemeses = [nemesis for nemesis in state.nemeses if nemesis.name not in skipped]
    if not state.nemeses:
        raise RuntimeError(f"no requested fault can run here: {skipped}")
    if any(nemesis.name == "clock" for nemesis in state.nemeses):
        state.cluster.faketime_library = FAKETIME_LIBRARY
    state.write_config(skipped)
    state.env.create()
    state.cluster.mount()
    for node_id in state.cluster.node_ids:
        state.cluster.start(node_id)
    if not state.wait_ready(READY_TIMEOUT_S):
        raise RuntimeError(f"the nodes were not ready within {READY_TIMEOUT_S} s; logs in {state.run_dir}")
    state.run_workload_step("setup", SETUP_TIMEOUT_S)
    state.start_workload()


def _execute(state: _Run) -> Path:
    """Everything between the probes and the report; the caller tears down."""
    with (state.run_dir / "faults.jsonl").open("a") as faults:
        _prepare(state, faults)
        schedule = plan_schedule(state.seed, state.config.rounds, state.nemeses,
                                 duration_s_min=state.config.fault_duration_s_min,
                                 duration_s_max=state.config.fault_duration_s_max, sequence=state.config.sequence)
        generator = random.Random(f"{state.seed}-targets")
        for planned in schedule:
            _play_round(state, planned, generator, faults)
    state.heal_all()
    state.stop_workload()
    if not state.wait_ready(READY_TIMEOUT_S):
        log.warning("not every node was ready %.0f s after the final heal", READY_TIMEOUT_S)
    state.run_workload_step("final", FINAL_TIMEOUT_S, "--out", str(state.run_dir / "final.json"),
                            "--converge-timeout", str(CONVERGE_TIMEOUT_S))
    return _check_and_report(state)


def _check_and_report(state: _Run) -> Path:
    """The checker's verdict and the report; returns the markdown's path."""
    # Imported here: the report loads matplotlib, which the rest of a run never needs.
    from chaos import checker, report

    result = checker.check(state.run_dir)
    markdown, _, _ = report.write_report(state.run_dir, result, state.config.out_dir)
    print(f"chaos: {'PASSED' if result.passed else 'FAILED'}; report {markdown}", flush=True)
    return Path(markdown)


def run(config: RunConfig) -> Path:
    """Run the chaos experiment ``config`` describes; returns the report's markdown path.

    Installs SIGTERM and SIGALRM handlers (restored at the end) that raise
    RunAborted; SIGALRM fires at ``config.wall_clock_max_s()``.
    """
    assert 1 <= config.rounds, config.rounds
    seed = config.seed if config.seed is not None else secrets.randbits(32)
    state = _Run(config, seed, secrets.token_hex(3))
    print(f"chaos: seed {seed}, run {state.env.run_id}, files in {state.run_dir}", flush=True)
    state.run_dir.mkdir(parents=True, exist_ok=True)
    state.workload_log = (state.run_dir / "workload.log").open("ab")
    previous = {signum: signal.signal(signum, _raise_aborted) for signum in (signal.SIGTERM, signal.SIGALRM)}
    signal.alarm(int(config.wall_clock_max_s()) + 1)
    try:
        return _execute(state)
    finally:
        signal.alarm(0)
        # A second Ctrl-C or SIGTERM must not cut the cleanup short; it is bounded.
        ignored = {signum: signal.signal(signum, signal.SIG_IGN) for signum in _CLEANUP_SIGNALS}
        try:
            state.teardown()
        finally:
            for signum, handler in {**ignored, **previous}.items():
                signal.signal(signum, handler)
