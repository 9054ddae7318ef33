"""Write a run's results: JSON, a markdown summary and the recall/QPS plot."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench import targets


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_kb = int(line.split()[1])
    except OSError:
        pass
    return {"cpu_model": cpu, "cores": os.cpu_count(), "ram_gb": round(ram_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "os": platform.platform(), "python": sys.version.split()[0],
            "numpy": np.__version__}


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if digits == 0 and abs(value) < 10:
            return f"{value:.2g}"  # a slow system's 0.4 QPS must not print as 0
        return f"{value:,.{digits}f}"
    return str(value)


def _at_default(result: dict[str, Any], ef: int) -> dict[str, Any] | None:
    sweep = result.get("sweep") or []
    for entry in sweep:
        if entry["ef"] == ef:
            return entry
    return sweep[0] if sweep else None


def write_plot(results: list[dict[str, Any]], path: Path, title: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(8, 5.5))
    markers = "osD^v<>p*h"
    for index, result in enumerate(results):
        sweep = [entry for entry in result.get("sweep") or [] if entry.get("qps") and entry.get("recall_at_10")]
        if not sweep:
            continue
        recalls = [entry["recall_at_10"] for entry in sweep]
        qps = [entry["qps"] for entry in sweep]
        label = result["system"] + ("" if result.get("sweeps", True) else " (brute force)")
        axes.plot(recalls, qps, marker=markers[index % len(markers)], label=label)
        if result.get("sweeps", True):
            for entry in sweep:
                axes.annotate(str(entry["ef"]), (entry["recall_at_10"], entry["qps"]), fontsize=7,
                              textcoords="offset points", xytext=(3, 3))
    axes.set_yscale("log")
    axes.set_xlabel("recall@10")
    axes.set_ylabel("queries per second, one client (log scale)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def markdown(run: dict[str, Any], plot_name: str | None) -> str:
    config = run["config"]
    ef = config["default_ef"]
    lines = [f"# Benchmark: {run['dataset']['label']} ({run['dataset']['points']:,} points × "
             f"{run['dataset']['dim']}, {run['dataset']['queries']} queries, {run['dataset']['metric']})", "",
             f"Run {run['started']} {'(--quick)' if config['quick'] else ''} on {run['machine']['cpu_model']}, "
             f"{run['machine']['cores']} cores, {run['machine']['ram_gb']} GB RAM, kernel "
             f"{run['machine']['kernel']}, Python {run['machine']['python']}.", "",
             "## Summary", "",
             f"Recall@10, 1-client QPS and latencies at ef = {ef} (the sweep point); 8-client and batched "
             f"({config['batch_size']} queries per call) also at ef = {ef}. Latency percentiles are of one-client "
             "requests.", "",
             "| system | ingest pts/s | index s | indexed after s | recall@10 | QPS 1 | QPS 8 | QPS batched "
             "| p50 ms | p95 ms | p99 ms | RSS MB | disk MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in run["results"]:
        ingest = result.get("ingest") or {}
        single = _at_default(result, ef) or {}
        concurrent = result.get("concurrent") or {}
        batched = result.get("batched") or {}
        memory = (result.get("memory") or {}).get("peak_rss_kb")
        disk = result.get("disk_bytes")
        lines.append("| " + " | ".join([
            result["system"] + ("" if result.get("sweeps", True) else " ¹"),
            _fmt(ingest.get("ingest_pts_per_s")), _fmt(ingest.get("index_s"), 1), _fmt(ingest.get("indexed_s"), 1),
            _fmt(single.get("recall_at_10"), 3), _fmt(single.get("qps")), _fmt(concurrent.get("qps")),
            _fmt(batched.get("qps")), _fmt(single.get("p50_ms"), 2), _fmt(single.get("p95_ms"), 2),
            _fmt(single.get("p99_ms"), 2), _fmt(memory / 1024 if memory is not None else None),
            _fmt(disk / 2**20 if disk is not None else None, 1)]) + " |")
    lines.append("")
    if any(not result.get("sweeps", True) for result in run["results"]):
        lines += ["¹ qdrant-client local mode has no index: every search is brute force (numpy), "
                  "its `hnsw_ef` is ignored.", ""]
    lines += targets.markdown_lines(run)
    if plot_name:
        lines += [f"![recall@10 vs QPS]({plot_name})", ""]
    lines += ["## ef sweep (one client)", "", "| system | knob | " +
              " | ".join(str(value) for value in config["efs"]) + " |",
              "|---|---|" + "---:|" * len(config["efs"])]
    for result in run["results"]:
        by_ef = {entry["ef"]: entry for entry in result.get("sweep") or []}
        cells = []
        for value in config["efs"]:
            entry = by_ef.get(value)
            cells.append("—" if entry is None else
                         f"{_fmt(entry.get('recall_at_10'), 3)} @ {_fmt(entry.get('qps'))}/s")
        lines.append(f"| {result['system']} | {result.get('knob', 'ef')} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: recall@10 @ queries per second.", "",
              f"## Filtered search (one client, ef = {ef}, first {run['filtered_queries']} queries, "
              "exact filtered ground truth)", ""]
    filters = run["filters"]
    lines.append("| system | " + " | ".join(f"{spec['label']} ({spec['describe']}, {spec['selectivity']:.1%})"
                                             for spec in filters) + " |")
    lines.append("|---|" + "---:|" * len(filters))
    for result in run["results"]:
        by_label = {entry["label"]: entry for entry in result.get("filtered") or []}
        cells = []
        for spec in filters:
            entry = by_label.get(spec["label"])
            cells.append("—" if entry is None else
                         f"{_fmt(entry.get('recall_at_10'), 3)} @ {_fmt(entry.get('qps'))}/s")
        lines.append(f"| {result['system']} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: recall@10 @ queries per second.", "", "## Systems", ""]
    for result in run["results"]:
        versions = ", ".join(f"{key} {value}" for key, value in (result.get("versions") or {}).items()) or "—"
        lines.append(f"- **{result['system']}** ({versions})")
        for note in result.get("notes") or []:
            lines.append(f"  - {note}")
        for phase, error in (result.get("errors") or {}).items():
            lines.append(f"  - ERROR in {phase}: `{error.splitlines()[0][:400] if error else error}`")
        stolen = _stolen(result)
        if stolen:
            lines.append(f"  - CPU steal above {STEAL_NOTE_PCT:g} % during the run reported: " + ", ".join(stolen))
    lines += ["", "## Method", "",
              "- Each system runs in its own worker process (`bench/worker.py`); RSS is that system's: qcluster's "
              "server VmHWM, or the worker's peak RSS minus its RSS after loading the dataset plus the VmHWM of "
              "any child process (milvus-lite's server).",
              "- qcluster is a real `python -m qcluster serve` subprocess. Its load client (`bench/http_client.py`) "
              "is a separate process built as a load generator (like wrk, so that it takes as little as it can "
              "of the 2 cores from the server it measures): N keep-alive HTTP/1.1 connections (1 for one client, "
              "8 for 8 clients) on uvloop, responses parsed by httptools, requests (head and orjson body) "
              "encoded before the clock starts, status checked and JSON answers decoded with orjson in the "
              "timed loop; untimed warm-up requests first, N at a time, so every connection is "
              "open before the clock starts. Batched = `/points/query/batch` with "
              f"{config['batch_size']} searches per request.",
              "- qcluster-grpc is the same server over qcluster's dense gRPC extension (`qcluster.proto.v1."
              "DensePoints`, raw float32 matrices): ingest with the SDK's `Client.upload`, searches from "
              "`bench/grpc_client.py` (a separate process: grpc.aio, one channel shared by N tasks; with one "
              "call in flight — 1 client, batched — a blocking stub as the SDK's `Client` uses; request "
              "messages built before the clock starts, replies decoded with `np.frombuffer` in the timed loop). "
              f"Batched = one `Query` with {config['batch_size']} query rows.",
              "- qcluster-cluster is three `qcluster serve` nodes in cluster mode on this same machine (3 shards "
              "x replication factor 2): the qcluster REST sequence and load client, writes to node 1, query "
              "connections spread over the three nodes; each query fans out to one replica per shard over the "
              "internal gRPC. RSS is the sum of the nodes' peaks, disk the sum of their data dirs. The nodes "
              "share the machine's cores: this is the cost of sharding and replication on one box.",
              "- In-process systems: 8 clients = 8 threads sharing the system object.",
              "- The floor under the network figures on this machine (minimal aiohttp servers with the same "
              "load client) is measured by `python -m bench.floor`: `floor-<date>.md`.",
              "- Ingest: batches of 1 000 points with payloads; ingest pts/s = points / time until the last batch "
              "was acknowledged; 'indexed after' = from the first batch until the index is complete; "
              "'index s' = indexed after − upload.",
              f"- Every load run stops after {config['max_seconds_per_load']} s or when its queries run out; "
              f"8-client and batched runs go through the queries {config.get('throughput_passes', 1)} times "
              "(recall over every answer).",
              f"- Every QPS figure (and the latencies and recall beside it) is from the best of up to "
              f"{config.get('repeats', 1)} runs of the same load, as ann-benchmarks reports: a run is repeated "
              f"while the figure has taken under {config.get('repeat_within_s', 0):g} s, so slow systems run once; "
              "the JSON keeps every run's QPS (`qps_runs`). On this shared 2-core VM one run of the same load varies "
              "by ±15 % and more from one minute to the next. The CPU steal (time the hypervisor gave this VM's "
              "vCPUs to others, from /proc/stat) during every run is kept too (`steal_pct_runs`); a reported "
              f"figure taken under more than {STEAL_NOTE_PCT:g} % steal is named in its system's notes above.",
              ""]
    return "\n".join(lines)


# A reported figure whose run lost more than this share of the machine to
# other VMs (CPU steal) is named in the system's notes.
STEAL_NOTE_PCT: Final = 5.0


def _stolen(result: dict[str, Any]) -> list[str]:
    """'phase N %' for each reported figure taken under notable CPU steal."""
    entries = [(f"ef {entry['ef']}", entry) for entry in result.get("sweep") or []]
    entries += [(phase, result[phase]) for phase in ("concurrent", "batched") if result.get(phase)]
    entries += [(entry["label"], entry) for entry in result.get("filtered") or []]
    return [f"{phase} {entry['steal_pct']:g} %" for phase, entry in entries
            if (entry.get("steal_pct") or 0.0) > STEAL_NOTE_PCT]


def write_all(run: dict[str, Any], out_dir: Path, stem: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_path = out_dir / f"{stem}-recall-qps.png"
    title = (f"{run['dataset']['label']}: {run['dataset']['points']:,} × {run['dataset']['dim']}, "
             f"recall@10 vs QPS (1 client), {run['machine']['cores']} cores")
    plotted = write_plot(run["results"], plot_path, title)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(run, indent=1))
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(markdown(run, plot_path.name if plotted else None))
    paths = {"json": json_path, "markdown": md_path}
    if plotted:
        paths["plot"] = plot_path
    return paths
