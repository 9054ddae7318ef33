"""Benchmark ONE system in this process: ``python -m bench.worker SYSTEM WORKLOAD_DIR WORKDIR``.

Prints one JSON object (the system's results) as the last line of stdout.
Running each system in its own process keeps peak RSS per system and lets a
crashing or missing peer fail alone. Each phase records its own error and the
others still run; the system is closed in ``finally``.

A server benchmarked over the network (``in_process`` False) is compared with
raw FAISS timed in this worker in the same minute (``reference``): an
``IndexHNSWFlat`` with the FAISS system's parameters is built after the
server's ingest, and its one-at-a-time and batched runs go right before the
server's 8-client and batched runs. The FAISS worker's own figures come from
another minute, and this VM's speed drifts by 15-25 % between minutes.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets import load as load_dataset
from bench.load import LoadResult
from bench.metrics import cpu_ticks, recall_at_k, steal_percent
from bench.systems import system_class
from bench.systems.base import System, descendants, proc_status_kb
from bench.workload import Workload


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:2000]


def _memory(system: System, baseline_kb: int) -> dict[str, Any]:
    server = system.memory_kb()
    if server is not None:
        return server
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = {pid: proc_status_kb(pid, "VmHWM") or 0 for pid in descendants(os.getpid())}
    return {"peak_rss_kb": own_peak - baseline_kb + sum(children.values()),
            "worker_peak_rss_kb": own_peak, "dataset_baseline_kb": baseline_kb,
            "children_vmhwm_kb": sum(children.values()),
            "source": "worker peak RSS minus its RSS after loading the dataset, plus child processes' VmHWM"}


PARTIAL_NAME = "partial-result.json"


def save_partial(result: dict[str, Any], workdir: Path) -> None:
    """After each phase: if the harness must kill this worker (time limit), it keeps what was measured."""
    temporary = workdir / (PARTIAL_NAME + ".tmp")
    temporary.write_text(json.dumps(result, default=_json_default))
    os.replace(temporary, workdir / PARTIAL_NAME)


def _json_default(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)


def run(system_name: str, workload: Workload, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"system": system_name, "errors": {}}
    dataset = load_dataset(workload.spec)
    baseline_kb = proc_status_kb(os.getpid(), "VmRSS") or 0
    config = workload.config
    gt = workload.gt()
    try:
        cls = system_class(system_name)
    except Exception as exc:
        result["errors"]["import"] = _error(exc)
        failed = Path(sys.prefix) / f"install-{system_name}.failed"  # written by `make bench-venv`
        if failed.exists():
            result["errors"]["install"] = failed.read_text(errors="replace")[-2000:]
        return result
    result.update(knob=cls.knob, sweeps=cls.sweeps)
    if cls.max_points is not None and dataset.n > cls.max_points:
        result["errors"]["skipped"] = (f"not run: {dataset.n} points is above this harness's cap of "
                                       f"{cls.max_points} for {system_name} ({cls.max_points_reason})")
        return result
    try:
        system = cls(workdir, dataset, config)
    except Exception as exc:
        result["errors"]["start"] = _error(exc)
        return result
    try:
        try:
            result["versions"] = system.versions()
        except Exception as exc:
            result["errors"]["versions"] = _error(exc)
        started = time.perf_counter()
        ingest = system.ingest()
        ingest["points"] = dataset.n
        ingest["ingest_pts_per_s"] = dataset.n / ingest["upload_s"]
        ingest.setdefault("index_s", ingest["indexed_s"] - ingest["upload_s"])
        result["ingest"] = ingest
        save_partial(result, workdir)
        print(f"[{system_name}] ingest {ingest['upload_s']:.1f} s, indexed after {ingest['indexed_s']:.1f} s "
              f"(wall {time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
        queries = dataset.queries
        qpath = workload.queries_path
        max_s = config.max_seconds_per_load

        reference: System | None = None
        if not cls.in_process and config.same_minute_reference:
            try:
                reference = _reference(workdir, dataset, config)
            except Exception as exc:
                result["errors"]["reference"] = _error(exc)

        def measure(label: str, truth: np.ndarray, target: System = system, **kwargs: Any) -> dict[str, Any] | None:
            """The best of up to ``config.repeats`` runs (ann-benchmarks' rule): a
            run is repeated while this measurement has taken less than
            ``config.repeat_within_s``, so a slow system runs once. Every
            run's QPS and CPU steal are kept (``qps_runs``, ``steal_pct_runs``)."""
            runs: list[tuple[LoadResult, float]] = []  # (outcome, CPU steal % during it)
            while len(runs) < config.repeats and sum(run.wall_s for run, _ in runs) < config.repeat_within_s:
                before = cpu_ticks()
                try:
                    outcome = target.run_load(**kwargs)
                except Exception as exc:
                    result["errors"][label] = _error(exc)
                    traceback.print_exc()
                    return None
                runs.append((outcome, steal_percent(before, cpu_ticks())))
            best, best_steal = max(runs, key=lambda run: run[0].qps or 0.0)  # the first of equals
            summary = best.summary()
            summary["qps_runs"] = [run.qps for run, _ in runs]
            summary["steal_pct_runs"] = [steal for _, steal in runs]
            summary["steal_pct"] = best_steal
            summary["recall_at_10"] = recall_at_k(best.ids, truth)
            print(f"[{system_name}] {label}: qps {summary['qps']} (runs {summary['qps_runs']}, "
                  f"steal % {summary['steal_pct_runs']}), "
                  f"recall {summary['recall_at_10']}", file=sys.stderr, flush=True)
            return summary

        def checkpoint(key: str, value: Any) -> None:
            result[key] = value
            save_partial(result, workdir)

        sweep = []
        for ef in (config.efs if cls.sweeps else (config.default_ef,)):
            entry = measure(f"sweep ef={ef}", mode="single", queries=queries, queries_path=qpath, ef=ef,
                            spec=None, max_seconds=max_s, truth=gt)
            if entry is not None:
                sweep.append({"ef": ef, **entry})
                checkpoint("sweep", sweep)
        result["sweep"] = sweep
        # Throughput runs: the queries repeated (config.throughput_passes), each row with its truth.
        passes = config.throughput_passes
        repeated = np.concatenate([queries] * passes)
        repeated_path = workdir / f"queries-x{passes}.npy"
        np.save(repeated_path, repeated)
        repeated_gt = np.concatenate([gt] * passes)
        references: dict[str, Any] = {}
        if reference is not None:
            references["single"] = measure("reference single", target=reference, mode="single", queries=queries,
                                           queries_path=qpath, ef=config.default_ef, spec=None, max_seconds=max_s,
                                           truth=gt)
            checkpoint("reference", references)
        if system.is_thread_safe:
            result["concurrent"] = measure("concurrent", mode="concurrent", queries=repeated,
                                           queries_path=repeated_path, ef=config.default_ef, spec=None,
                                           max_seconds=max_s, truth=repeated_gt)
        else:
            result["errors"]["concurrent"] = f"skipped: {system.unsafe_reason}"
        if reference is not None:
            references["batched"] = measure("reference batched", target=reference, mode="batched", queries=repeated,
                                            queries_path=repeated_path, ef=config.default_ef, spec=None,
                                            max_seconds=max_s, truth=repeated_gt)
            checkpoint("reference", references)
            reference.close()
            reference = None  # its index is freed before the filtered runs
        result["batched"] = measure("batched", mode="batched", queries=repeated, queries_path=repeated_path,
                                    ef=config.default_ef, spec=None, max_seconds=max_s, truth=repeated_gt)
        save_partial(result, workdir)
        filtered: list[dict[str, Any]] = []
        fcount = workload.filtered_query_count()
        for index, spec in enumerate(workload.filters):
            if system.filter_names_max is not None and len(spec.names) > system.filter_names_max:
                result["errors"][f"filter {spec.label}"] = (
                    f"skipped: {len(spec.names)} names exceed this system's bound of {system.filter_names_max} "
                    "(a single query would run for minutes)")
                continue
            entry = measure(f"filter {spec.label}", mode="single", queries=queries[:fcount], queries_path=qpath,
                            ef=config.default_ef, spec=spec, max_seconds=max_s, truth=workload.filtered_gt(index))
            if entry is not None:
                filtered.append({"label": spec.label, "kind": spec.kind, "filter": spec.describe(),
                                 "selectivity": spec.selectivity, **entry})
                checkpoint("filtered", filtered)
        result["filtered"] = filtered
        result["memory"] = _memory(system, baseline_kb)
        result["disk_bytes"] = system.disk_bytes()
    except Exception as exc:
        result["errors"]["run"] = _error(exc)
        traceback.print_exc()
    finally:
        try:
            system.close()
        except Exception as exc:
            result["errors"]["close"] = _error(exc)
        result["notes"] = system.notes
    return result


def _reference(workdir: Path, dataset: Any, config: Any) -> System:
    """Raw FAISS in this worker, built now (the server's ingest is over)."""
    from bench.systems.faiss_hnsw import FaissHnsw  # noqa: PLC0415 - only servers need it

    folder = workdir / "faiss-reference"
    folder.mkdir(exist_ok=True)
    reference = FaissHnsw(folder, dataset, config)
    built = reference.ingest()
    (folder / "hnsw.faiss").unlink(missing_ok=True)  # written only to report a size on disk
    print(f"same-minute FAISS reference built in {built['upload_s']:.1f} s", file=sys.stderr, flush=True)
    return reference


def main() -> None:
    system_name, workload_dir, workdir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    workdir.mkdir(parents=True, exist_ok=True)
    result = run(system_name, Workload.read(workload_dir), workdir)
    print(json.dumps(result, default=_json_default))


if __name__ == "__main__":
    main()
