"""Benchmark ONE system in this process: ``python -m bench.worker SYSTEM WORKLOAD_DIR WORKDIR``.

Prints one JSON object (the system's results) as the last line of stdout.
Running each system in its own process keeps peak RSS per system and lets a
crashing or missing peer fail alone. Each phase records its own error and the
others still run; the system is closed in ``finally``.

A server benchmarked over the network (``in_process`` False) is compared with
raw FAISS timed in this worker in the same minute (``reference``): an
``IndexHNSWFlat`` with the FAISS system's parameters is built after the
server's ingest, and its one-at-a-time and batched runs take turns with the
server's 8-client and batched runs (reference, server, reference, server...).
The FAISS worker's own figures come from another minute, and this VM's speed
drifts by 15-25 % between minutes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets import Dataset
from bench.datasets import load as load_dataset
from bench.load import LoadResult
from bench.metrics import cpu_ticks, recall_at_k, steal_percent
from bench.systems import system_class
from bench.systems.base import System, descendants, proc_status_kb
from bench.workload import RunConfig, Workload


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
                reference, build_s = _reference(workdir, dataset, config)
                result["reference"] = {"build_s": build_s}  # the same graph, built right after the server's
            except Exception as exc:
                result["errors"]["reference"] = _error(exc)

        def measure(label: str, truth: np.ndarray, **kwargs: Any) -> dict[str, Any] | None:
            return measure_together([Load(label, system, truth, kwargs)])[0]

        def measure_together(loads: list[Load]) -> list[dict[str, Any] | None]:
            outcome = _best_of_rounds(loads, config, system_name)
            for load in loads:
                if load.error is not None:
                    result["errors"][load.label] = load.error
            return outcome

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
        throughput = {"queries": repeated, "queries_path": repeated_path, "ef": config.default_ef, "spec": None,
                      "max_seconds": max_s}
        # 8 clients, then batched; with a same-minute reference each round runs raw FAISS's
        # matching load (one query at a time, batched) right before the server's.
        for phase, reference_mode in (("concurrent", "single"), ("batched", "batched")):
            loads = []
            if reference is not None:
                loads.append(Load(f"reference {reference_mode}", reference, repeated_gt,
                                  {"mode": reference_mode, **throughput}))
            if phase == "concurrent" and not system.is_thread_safe:
                result["errors"]["concurrent"] = f"skipped: {system.unsafe_reason}"
            else:
                loads.append(Load(phase, system, repeated_gt, {"mode": phase, **throughput}))
            for load, summary in zip(loads, measure_together(loads), strict=True):
                if load.target is system:
                    result[phase] = summary
                else:
                    result.setdefault("reference", {})[reference_mode] = summary
            save_partial(result, workdir)
        if reference is not None:
            reference.close()
            reference = None  # its index is freed before the filtered runs
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


@dataclasses.dataclass
class Load:
    """One load to measure: ``target.run_load(**kwargs)``, scored against ``truth``."""

    label: str
    target: System
    truth: np.ndarray
    kwargs: dict[str, Any]
    runs: list[tuple[LoadResult, float]] = dataclasses.field(default_factory=list)  # (outcome, CPU steal %)
    error: str | None = None

    @property
    def spent_s(self) -> float:
        return sum(run.wall_s for run, _steal in self.runs)


def _best_of_rounds(loads: list[Load], config: RunConfig, system_name: str) -> list[dict[str, Any] | None]:
    """The best of up to ``config.repeats`` runs of each load (ann-benchmarks'
    rule). The loads take turns, one run each per round, so loads measured
    together see the same minutes of this VM. Rounds go on while every load
    has taken less than ``config.repeat_within_s``, so a slow system runs
    once. Every run's QPS and CPU steal are kept (``qps_runs``,
    ``steal_pct_runs``); a load that raises is dropped with its error."""
    for _round in range(config.repeats):
        live = [load for load in loads if load.error is None]
        if not live or any(load.spent_s >= config.repeat_within_s for load in live):
            break
        for load in live:
            before = cpu_ticks()
            try:
                outcome = load.target.run_load(**load.kwargs)
            except Exception as exc:
                load.error = _error(exc)
                traceback.print_exc()
                continue
            load.runs.append((outcome, steal_percent(before, cpu_ticks())))
    summaries: list[dict[str, Any] | None] = []
    for load in loads:
        if load.error is not None or not load.runs:
            summaries.append(None)
            continue
        best, best_steal = max(load.runs, key=lambda run: run[0].qps or 0.0)  # the first of equals
        summary = best.summary()
        summary["qps_runs"] = [run.qps for run, _ in load.runs]
        summary["steal_pct_runs"] = [steal for _, steal in load.runs]
        summary["steal_pct"] = best_steal
        summary["recall_at_10"] = recall_at_k(best.ids, load.truth)
        print(f"[{system_name}] {load.label}: qps {summary['qps']} (runs {summary['qps_runs']}, "
              f"steal % {summary['steal_pct_runs']}), recall {summary['recall_at_10']}", file=sys.stderr, flush=True)
        summaries.append(summary)
    return summaries


def _reference(workdir: Path, dataset: Dataset, config: RunConfig) -> tuple[System, float]:
    """Raw FAISS in this worker, built now (the server's ingest is over), and its build time."""
    from bench.systems.faiss_hnsw import FaissHnsw  # noqa: PLC0415 - only servers need it

    folder = workdir / "faiss-reference"
    folder.mkdir(exist_ok=True)
    reference = FaissHnsw(folder, dataset, config)
    built = reference.ingest()
    (folder / "hnsw.faiss").unlink(missing_ok=True)  # written only to report a size on disk
    print(f"same-minute FAISS reference built in {built['upload_s']:.1f} s", file=sys.stderr, flush=True)
    return reference, built["upload_s"]


def main() -> None:
    system_name, workload_dir, workdir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    workdir.mkdir(parents=True, exist_ok=True)
    result = run(system_name, Workload.read(workload_dir), workdir)
    print(json.dumps(result, default=_json_default))


if __name__ == "__main__":
    main()
