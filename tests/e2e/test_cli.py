"""The ``qcluster`` client commands as a user runs them: real processes
against a real node, exit codes, --json output, and an import that is
interrupted (Ctrl-C, then kill -9) and resumed."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from tests.e2e.conftest import REPO_ROOT, Node, sigint_default

pytestmark = pytest.mark.e2e

ROWS = 60_000
DIM = 64
# Bounds of the interruption loops (the import itself takes a few seconds).
WAIT_PROGRESS_S = 60.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _command(node: Node, *arguments: str) -> list[str]:
    return [sys.executable, "-m", "qcluster", *arguments, "--url", node.url, "--grpc-port", str(node.grpc_port)]


def _run(node: Node, *arguments: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(node, *arguments), cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=300, check=False)


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _stop_after_progress(state_file: pathlib.Path, process: subprocess.Popen[str], *, beyond: int) -> int:
    """Poll the import's state file until it records more than ``beyond``
    rows, and return that row with the import stopped (SIGSTOP): it is
    stopped while each poll reads the file, so however slowly this test runs
    on a busy machine the import cannot finish before it is interrupted."""
    deadline = time.monotonic() + WAIT_PROGRESS_S
    while time.monotonic() < deadline:
        process.send_signal(signal.SIGSTOP)
        assert process.poll() is None, f"the import ended before it could be interrupted: {process.communicate()}"
        try:
            next_row = int(json.loads(state_file.read_text())["next_row"])
        except (OSError, ValueError, KeyError):
            next_row = 0
        if next_row > beyond:
            return next_row
        process.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"no progress beyond row {beyond} within {WAIT_PROGRESS_S} s")


@contextlib.contextmanager
def _import_process(node: Node, arguments: tuple[str, ...], cwd: pathlib.Path) -> Iterator[subprocess.Popen[str]]:
    """An import running in the background; killed at exit if still running."""
    process = subprocess.Popen(_command(node, *arguments), cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=60)


def test_import_interrupted_twice_then_resumed(node: Node, tmp_path: pathlib.Path) -> None:
    vectors = np.random.default_rng(11).normal(size=(ROWS, DIM)).astype(np.float32)
    np.save(tmp_path / "vectors.npy", vectors)
    with (tmp_path / "payloads.jsonl").open("w") as out:
        for row in range(ROWS):
            out.write(json.dumps({"i": row, "tag": f"t{row % 7}"}) + "\n")
    arguments = ("import", "--collection", "imported", "--vectors", "vectors.npy", "--payloads", "payloads.jsonl",
                 "--create", "--distance", "Dot", "--batch-size", "100", "--parallel", "1", "--no-progress")
    state_file = tmp_path / ".qcluster-import-imported.json"

    # 1. Ctrl-C: a clean stop, exit 130, and a message saying how to resume.
    with _import_process(node, arguments, tmp_path) as first:
        stopped_at = _stop_after_progress(state_file, first, beyond=1_000)
        first.send_signal(signal.SIGINT)
        first.send_signal(signal.SIGCONT)
        _out, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    assert "Run the same command again to resume" in err
    saved = json.loads(state_file.read_text())["next_row"]
    assert stopped_at <= saved < ROWS

    # 2. kill -9 part-way through the resumed run: the state file may lag behind
    #    what the node has; the next run sends those rows again (same ids).
    with _import_process(node, arguments, tmp_path) as second:
        _stop_after_progress(state_file, second, beyond=saved + 1_000)
        second.kill()
        second.communicate(timeout=60)
    resumed_from = json.loads(state_file.read_text())["next_row"]
    assert saved < resumed_from < ROWS

    # 3. Run to the end.
    third = _run(node, *arguments, "--json", cwd=tmp_path)
    summary = _json(third)
    assert f"resuming 'imported' at row {resumed_from}" in third.stderr
    assert summary["resumed_from"] == resumed_from and summary["written"] == ROWS - resumed_from
    assert summary["collection_points"] == ROWS
    assert not state_file.exists(), "a finished import removes its state"

    # No point missing or duplicated, every payload and vector as in the files.
    client = QdrantClient(url=node.url, timeout=60, check_compatibility=False)
    seen: dict[int, Any] = {}
    offset = None
    for _page in range(ROWS // 10_000 + 2):  # bounded paging
        records, offset = client.scroll("imported", limit=10_000, offset=offset, with_payload=True,
                                        with_vectors=True)
        for record in records:
            assert record.id not in seen
            seen[record.id] = record
        if offset is None:
            break
    client.close()
    assert sorted(seen) == list(range(ROWS))
    for row in (0, saved - 1, saved, resumed_from - 1, resumed_from, ROWS - 1):
        assert seen[row].payload == {"i": row, "tag": f"t{row % 7}"}
        np.testing.assert_allclose(seen[row].vector, vectors[row], rtol=1e-6)
    assert all(record.payload["i"] == point_id for point_id, record in seen.items())


def test_import_jsonl_and_collection_commands(node: Node, tmp_path: pathlib.Path) -> None:
    lines = [{"id": 100 + i, "vector": [float(i), 1.0, 0.5], "payload": {"n": i}} for i in range(25)]
    (tmp_path / "points.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    imported = _json(_run(node, "import", "--collection", "small", "--jsonl", "points.jsonl", "--create",
                          "--distance", "Euclid", "--json", cwd=tmp_path))
    assert imported["written"] == 25 and imported["collection_points"] == 25

    listed = _json(_run(node, "collections", "list", "--json", cwd=tmp_path))
    assert {"name": "small", "points": 25} in listed
    info = _json(_run(node, "collections", "info", "small", "--json", cwd=tmp_path))
    assert info["points_count"] == 25 and info["config"]["params"]["vectors"]["distance"] == "Euclid"
    hits = _json(_run(node, "query", "--collection", "small", "--vector", "[3, 1, 0.5]", "--limit", "2",
                      "--with-payload", "--json", cwd=tmp_path))
    assert [hit["id"] for hit in hits] == [103, 102] or [hit["id"] for hit in hits] == [103, 104]
    assert hits[0]["payload"] == {"n": 3}
    status = _run(node, "cluster", "status", cwd=tmp_path)
    assert status.returncode == 0 and "small" in status.stdout and "Active" in status.stdout

    assert _json(_run(node, "collections", "create", "made", "--size", "4", "--json", cwd=tmp_path)) == {
        "created": "made"}
    assert _json(_run(node, "collections", "delete", "made", "--json", cwd=tmp_path)) == {"deleted": "made"}


@pytest.mark.parametrize(("arguments", "exit_code", "message"), [
    (("collections", "info", "absent"), 4, "absent"),
    (("collections", "create", "dup", "--size", "2"), 5, "already exists"),
    (("query", "--collection", "dup", "--vector", "[1, 2, 3]"), 6, "expected 2 dimensions, got 3"),
    (("query", "--collection", "dup", "--vector", "[1, 2"), 2, "--vector"),
    (("import", "--collection", "dup", "--jsonl", "missing.jsonl"), 2, "missing.jsonl"),
    (("query", "--collection", "dup", "--vector-file", "missing.npy"), 2, "missing.npy"),
    (("import", "--collection", "dup", "--jsonl", "missing.jsonl", "--create", "--distance", "Cosinus"), 2,
     "--distance"),
])
def test_exit_codes(node: Node, tmp_path: pathlib.Path, arguments: tuple[str, ...], exit_code: int,
                    message: str) -> None:
    if arguments[:2] == ("collections", "create") or arguments[0] != "collections":
        _run(node, "collections", "create", "dup", "--size", "2", cwd=tmp_path)
    result = _run(node, *arguments, cwd=tmp_path)
    assert result.returncode == exit_code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob(".qcluster-import-*")), "a rejected import leaves no state behind"


def test_unreachable_node_exits_3(tmp_path: pathlib.Path) -> None:
    result = subprocess.run([sys.executable, "-m", "qcluster", "collections", "list", "--url", "http://127.0.0.1:9"],
                            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 3, result.stderr
    assert "cannot reach the node" in result.stderr
