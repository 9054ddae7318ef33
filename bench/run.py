"""Benchmark harness CLI.

    python -m bench.run [--quick] [--dataset pypi|synthetic|pypi,synthetic]
                        [--systems faiss,qcluster,...] [--out bench/results]

Each system runs in its own worker process (bench/worker.py) on the same data
and queries; results go to ``<out>/<dataset>-<YYYY-MM-DD>.{json,md}`` and a
recall/QPS plot next to them. ``--quick``: first 5 000 pypi points, 100
queries, faiss, qcluster and qcluster-grpc only, written to a temp dir unless ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import datasets, report
from bench.datasets import REPO_ROOT, DatasetSpec
from bench.systems import ALL
from bench.worker import PARTIAL_NAME
from bench.workload import RunConfig, write_workload

QUICK_SYSTEMS = ("faiss", "qcluster", "qcluster-grpc", "qcluster-cluster")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="5 000 pypi points, 100 queries, faiss + qcluster + qcluster-grpc")
    parser.add_argument("--dataset", default="pypi", help="pypi, synthetic, or both comma-separated")
    parser.add_argument("--systems", default=None, help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--out", default=None, help="output folder (default bench/results; a temp dir with --quick)")
    parser.add_argument("--n", type=int, default=None, help="use the first N points")
    parser.add_argument("--queries", type=int, default=None, help="use the first N queries")
    parser.add_argument("--synthetic-n", type=int, default=datasets.SYNTHETIC_DEFAULT_N,
                        help="points generated for the synthetic set (cached in a temp folder)")
    parser.add_argument("--synthetic-dir", default=None, help="existing or wanted make_synthetic.py output folder")
    parser.add_argument("--max-seconds", type=float, default=None, help="time bound of each load run")
    parser.add_argument("--keep", action="store_true", help="keep the systems' work folders")
    return parser.parse_args(argv)


def _spec(args: argparse.Namespace, name: str) -> tuple[DatasetSpec, int]:
    synthetic_dir = None
    if name == "synthetic":
        folder = Path(args.synthetic_dir) if args.synthetic_dir else datasets.synthetic_dir_for(args.synthetic_n)
        synthetic_dir = str(datasets.ensure_synthetic(folder, args.synthetic_n))
    elif name != "pypi":
        raise SystemExit(f"unknown dataset {name!r}")
    full = datasets.full_size(name, synthetic_dir)
    n = args.n or (5000 if args.quick else full)
    queries = args.queries or (100 if args.quick else 1000)
    return DatasetSpec(name, min(n, full), queries, synthetic_dir), full


def _run_worker(system: str, workload_dir: Path, workdir: Path, log_path: Path, timeout_s: float) -> dict[str, Any]:
    """Start the worker in its own process group; on timeout, kill that group (its server too)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("ANONYMIZED_TELEMETRY", "False")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("LANCE_LOG", "error")
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bench.worker", system, str(workload_dir), str(workdir)],
                                   cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=log,
                                   start_new_session=True)
        try:
            stdout, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            return _partial(system, workdir, f"timed out after {timeout_s:.0f} s (killed); figures measured "
                                             "before that are kept")
        finally:
            # Also after a crash: a server the worker started lives in its process group.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if process.poll() is None:
                process.wait(timeout=30)
    lines = [line for line in stdout.decode(errors="replace").splitlines() if line.startswith("{")]
    if process.returncode == 0 and lines:
        result: dict[str, Any] = json.loads(lines[-1])
        return result
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    return _partial(system, workdir, f"exit code {process.returncode}: {tail}")


def _partial(system: str, workdir: Path, error: str) -> dict[str, Any]:
    """What a killed or crashed worker had measured (bench/worker.py saves after each phase)."""
    result: dict[str, Any] = {"system": system, "errors": {}}
    partial = workdir / PARTIAL_NAME
    if partial.exists():
        try:
            result = json.loads(partial.read_text())
        except ValueError:
            pass
    result.setdefault("errors", {})["worker"] = error
    return result


def run_dataset(args: argparse.Namespace, name: str, systems: list[str], out_dir: Path) -> dict[str, Path]:
    spec, full = _spec(args, name)
    config = RunConfig(quick=args.quick)
    if args.quick:
        config = RunConfig(quick=True, max_seconds_per_load=5.0, filtered_queries=50, worker_timeout_s=150.0,
                           index_timeout_s=90.0, throughput_passes=1, repeats=2)
    if args.max_seconds is not None:
        config = RunConfig(**{**config.to_json(), "efs": config.efs, "max_seconds_per_load": args.max_seconds})
    scratch = Path(tempfile.mkdtemp(prefix=f"qcluster-bench-{name}-"))
    started = datetime.datetime.now()
    try:
        dataset = datasets.load(spec)
        workload = write_workload(scratch / "workload", dataset, config, full)
        dataset_info = {"name": name, "label": name, "points": dataset.n, "dim": dataset.dim,
                        "queries": int(dataset.queries.shape[0]), "metric": dataset.metric,
                        "source": str(datasets.PYPI_DIR if name == "pypi" else spec.synthetic_dir)}
        del dataset
        gc.collect()
        results = []
        for system in systems:
            began = time.perf_counter()
            print(f"== {name}: {system}", file=sys.stderr, flush=True)
            result = _run_worker(system, workload.folder, scratch / system, scratch / f"{system}.log",
                                 config.worker_timeout_s)
            result["worker_wall_s"] = time.perf_counter() - began
            for phase, error in (result.get("errors") or {}).items():
                print(f"   {system} {phase}: {error.splitlines()[0][:300] if error else error}",
                      file=sys.stderr, flush=True)
            results.append(result)
        run = {"started": started.isoformat(timespec="seconds"), "machine": report.machine(),
               "dataset": dataset_info, "config": config.to_json(),
               "filtered_queries": workload.filtered_query_count(),
               "filters": [{**spec.to_json(), "names": len(spec.names), "describe": spec.describe()}
                           for spec in workload.filters],
               "versions": {result["system"]: result.get("versions") for result in results},
               "results": results}
        return report.write_all(run, out_dir, f"{name}-{started.date().isoformat()}")
    finally:
        if args.keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _stop_on_sigterm(signum: int, _frame: Any) -> None:
    # SystemExit unwinds through _run_worker's finally, which kills the worker's process group.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    args = _parse(argv)
    systems = (args.systems.split(",") if args.systems else list(QUICK_SYSTEMS if args.quick else ALL))
    unknown = [system for system in systems if system not in ALL]
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; known: {', '.join(ALL)}")
    if args.out:
        out_dir = Path(args.out)
    elif args.quick:
        out_dir = Path(tempfile.mkdtemp(prefix="qcluster-bench-quick-"))
    else:
        out_dir = REPO_ROOT / "bench" / "results"
    for name in args.dataset.split(","):
        paths = run_dataset(args, name.strip(), systems, out_dir)
        for kind, path in paths.items():
            print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
