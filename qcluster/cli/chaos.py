"""``qcluster chaos run | check | cleanup``: the chaos harness (``chaos/``,
docs/chaos.md) against real nodes in network namespaces of its own.

    qcluster chaos run --nodes 3 --rounds 50 --seed 7 --faults kill,pause,partition
    qcluster chaos check /tmp/qcchaos-<run id>      check a run's files again
    qcluster chaos cleanup                          remove what killed runs left

``run`` needs root, iproute2 and iptables. It exits 0 when the checker
passes, 1 when it finds an anomaly, 2 on bad flags, 3 when the environment
cannot be built (not root, a tool missing).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
from typing import Any, Final

__all__ = ["add_parser"]

_EXIT_ANOMALY: Final = 1
_EXIT_USAGE: Final = 2
_EXIT_ENVIRONMENT: Final = 3
_TOOLS: Final = ("ip", "iptables", "tc", "mount", "umount")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("chaos", help="fault-injection runs against a local cluster (docs/chaos.md)",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="run a seeded schedule of faults with a workload, then check the history")
    run.add_argument("--nodes", type=int, default=3)
    run.add_argument("--rounds", type=int, default=10)
    run.add_argument("--seed", type=int, default=None, help="schedule seed (printed and recorded; random if absent)")
    run.add_argument("--faults", default=None,
                     help="comma-separated: kill,pause,partition,client-cut,loss,slow,disk,clock (default all); "
                          "partition stands for partition-one,partition-leader-minority,partition-bridge")
    run.add_argument("--fault-min-s", type=float, default=5.0, help="shortest fault episode")
    run.add_argument("--fault-max-s", type=float, default=30.0, help="longest fault episode")
    run.add_argument("--recovery-s", type=float, default=10.0, help="pause after each heal")
    run.add_argument("--rate", type=float, default=40.0, help="workload operations per second (open loop)")
    run.add_argument("--tmpfs-mb", type=int, default=256, help="size of each node's data tmpfs")
    run.add_argument("--write-consistency-factor", type=int, default=1)
    run.add_argument("--out", type=pathlib.Path, default=pathlib.Path("chaos/results"),
                     help="where the report goes (<date>-<seed>.md/.json/.png)")
    run.set_defaults(run=_run)
    check = verbs.add_parser("check", help="check a finished run's files again and rewrite its report")
    check.add_argument("run_dir", type=pathlib.Path)
    check.add_argument("--out", type=pathlib.Path, default=pathlib.Path("chaos/results"))
    check.set_defaults(run=_check)
    cleanup = verbs.add_parser("cleanup", help="remove the namespaces, mounts and processes killed runs left")
    cleanup.set_defaults(run=_cleanup)


def _environment_problem() -> str | None:
    if os.geteuid() != 0:
        return "the chaos harness needs root (network namespaces, iptables, tmpfs mounts)"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (Debian: apt-get install iproute2 iptables mount)"
    return None


def _run(args: argparse.Namespace) -> int:
    from chaos.nemesis import NEMESES  # noqa: PLC0415 - the harness loads only for this command
    from chaos.run import ALL_FAULTS, RunConfig, run  # noqa: PLC0415

    faults = list(ALL_FAULTS) if args.faults is None else [name.strip() for name in args.faults.split(",")]
    unknown = sorted(set(faults) - set(ALL_FAULTS) - {nemesis.name for nemesis in NEMESES})
    if unknown or not faults:
        print(f"qcluster: error: --faults: unknown {unknown or 'empty list'}; choose from {', '.join(ALL_FAULTS)}",
              file=sys.stderr)
        return _EXIT_USAGE
    if not 1 <= args.nodes <= 9 or args.rounds < 1 or not 0 < args.fault_min_s <= args.fault_max_s:
        print("qcluster: error: need 1 <= --nodes <= 9, --rounds >= 1 and 0 < --fault-min-s <= --fault-max-s",
              file=sys.stderr)
        return _EXIT_USAGE
    problem = _environment_problem()
    if problem is not None:
        print(f"qcluster: error: {problem}", file=sys.stderr)
        return _EXIT_ENVIRONMENT
    config = RunConfig(nodes=args.nodes, rounds=args.rounds, seed=args.seed, faults=faults,
                       fault_duration_s_min=args.fault_min_s, fault_duration_s_max=args.fault_max_s,
                       recovery_wait_s=args.recovery_s, rate=args.rate, out_dir=args.out, tmpfs_mb=args.tmpfs_mb,
                       write_consistency_factor=args.write_consistency_factor)
    report = run(config)
    return 0 if _passed(report) else _EXIT_ANOMALY


def _passed(report: pathlib.Path) -> bool:
    return bool(json.loads(report.with_suffix(".json").read_text())["passed"])


def _check(args: argparse.Namespace) -> int:
    from chaos import checker, report  # noqa: PLC0415

    result = checker.check(args.run_dir)
    markdown, _json, _png = report.write_report(args.run_dir, result, args.out)
    print(f"{'PASSED' if result.passed else 'FAILED'}: {markdown}")
    return 0 if result.passed else _EXIT_ANOMALY


def _cleanup(_args: argparse.Namespace) -> int:
    problem = _environment_problem()
    if problem is not None:
        print(f"qcluster: error: {problem}", file=sys.stderr)
        return _EXIT_ENVIRONMENT
    from chaos.netns import cleanup_all  # noqa: PLC0415

    removed = cleanup_all()
    for item in removed:
        print(f"removed {item}")
    print(f"{len(removed)} left-overs removed")
    return 0
