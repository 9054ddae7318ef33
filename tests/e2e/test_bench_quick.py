"""The benchmark harness end to end: ``python -m bench.run --quick`` (raw FAISS,
a real qcluster server over REST and over its dense gRPC extension, and a
three-node qcluster cluster, on 5 000 pypi points) into a tmp dir. It takes
well under a minute on an idle machine; the time is printed, not asserted
(a busy machine may take longer), and the run is bounded by ``RUN_TIMEOUT_S``."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 300.0


@pytest.mark.e2e
def test_bench_quick(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "bench.run", "--quick", "--out", str(out)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:  # SIGTERM lets the harness stop its workers and their servers
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    elapsed = time.monotonic() - started
    assert process.returncode == 0, f"harness failed:\n{stdout}\n{stderr[-4000:]}"
    print(f"bench --quick took {elapsed:.1f} s")

    (json_path,) = out.glob("pypi-*.json")
    run = json.loads(json_path.read_text())
    assert run["dataset"]["points"] == 5000
    assert run["machine"]["cores"] >= 1 and run["machine"]["python"]
    results = {result["system"]: result for result in run["results"]}
    assert set(results) == {"faiss", "qcluster", "qcluster-grpc", "qcluster-cluster"}
    default_ef = run["config"]["default_ef"]
    for name, result in results.items():
        assert result["errors"] == {}, (name, result["errors"])
        assert result["versions"], name
        at_default = next(entry for entry in result["sweep"] if entry["ef"] == default_ef)
        assert at_default["recall_at_10"] >= 0.9, (name, at_default)
        assert at_default["qps"] > 0 and at_default["p99_ms"] > 0, (name, at_default)
        assert [entry["ef"] for entry in result["sweep"]] == run["config"]["efs"]
        assert result["concurrent"]["qps"] > 0 and result["batched"]["qps"] > 0, name
        for entry in (at_default, result["concurrent"], result["batched"]):
            # best of the repeated runs (a quick run repeats each load twice: each lasts well under a second)
            assert len(entry["qps_runs"]) == run["config"]["repeats"] == 2, (name, entry)
            assert entry["qps"] == max(entry["qps_runs"]), (name, entry)
            assert len(entry["steal_pct_runs"]) == 2 and 0.0 <= entry["steal_pct"] <= 100.0, (name, entry)
        assert result["ingest"]["ingest_pts_per_s"] > 0, name
        assert len(result["filtered"]) == len(run["filters"]) == 6, name
        assert all(entry["qps"] > 0 for entry in result["filtered"]), name
        assert result["memory"]["peak_rss_kb"] > 0 and result["disk_bytes"] > 0, name
    for name in ("qcluster", "qcluster-grpc", "qcluster-cluster"):
        assert results[name]["ingest"]["indexed_s"] >= results[name]["ingest"]["upload_s"], name
        # raw FAISS timed in the server's worker, the same minute as its throughput runs
        reference = results[name]["reference"]
        assert reference["single"]["qps"] > 0 and reference["batched"]["qps"] > 0, (name, reference)
        assert reference["build_s"] > 0, (name, reference)
        assert reference["single"]["recall_at_10"] >= 0.9, (name, reference)
        assert len(reference["single"]["qps_runs"]) == len(results[name]["concurrent"]["qps_runs"]) == 2
    assert "reference" not in results["faiss"]
    assert json_path.with_suffix(".md").is_file()
    summary = json_path.with_suffix(".md").read_text()
    assert "| qcluster |" in summary and "| qcluster-grpc |" in summary
    assert "## Issue 3 targets" in summary and "same-minute FAISS" in summary
    (png,) = out.glob("pypi-*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
