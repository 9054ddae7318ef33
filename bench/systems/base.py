"""What a benchmarked system implements. The worker drives it:
``ingest`` once, then load runs through ``run_load`` (in-process by default,
see bench/load.py), then ``memory`` / ``disk_bytes``, then ``close``."""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench import load
from bench.datasets import Dataset
from bench.workload import FilterSpec, RunConfig

K = 10


def tree_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (like ``du``)."""
    total = 0
    if path.is_file():
        return path.stat().st_blocks * 512
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def proc_status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def descendants(pid: int) -> list[int]:
    """All live descendant pids of ``pid`` (scans /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


class System(abc.ABC):
    name: ClassVar[str]
    knob: ClassVar[str] = "ef"               # what the sweep value means for this system
    sweeps: ClassVar[bool] = True            # False: the knob does nothing (brute force)
    in_process: ClassVar[bool] = True        # memory is the worker's own (+ its children)
    max_points: ClassVar[int | None] = None  # above this the worker reports "skipped" instead of running
    max_points_reason: ClassVar[str] = ""
    # A filter listing more names than this is skipped (one query would run for minutes).
    filter_names_max: ClassVar[int | None] = None
    # False: the concurrent phase is skipped with ``unsafe_reason`` instead of run.
    is_thread_safe: ClassVar[bool] = True
    unsafe_reason: ClassVar[str] = ""

    def __init__(self, workdir: Path, dataset: Dataset, config: RunConfig) -> None:
        self.workdir = workdir
        self.dataset = dataset
        self.config = config
        self.notes: list[str] = []

    # -- lifecycle -----------------------------------------------------------------
    @abc.abstractmethod
    def versions(self) -> dict[str, str]: ...

    @abc.abstractmethod
    def ingest(self) -> dict[str, Any]:
        """Load every point; return ``upload_s`` (acknowledged) and ``indexed_s``
        (from the start of ingest until fully indexed) plus any details."""

    def close(self) -> None:
        return None

    def data_path(self) -> Path:
        return self.workdir

    def disk_bytes(self) -> int:
        return tree_bytes(self.data_path())

    def memory_kb(self) -> dict[str, Any] | None:
        """Peak RSS of an out-of-process server, if any (else the worker measures)."""
        return None

    # -- search --------------------------------------------------------------------
    def set_knob(self, value: int) -> None:
        """Called before each load run; systems whose knob is per collection set it here."""
        self.knob_value = value

    def native_filter(self, spec: FilterSpec | None) -> Any:
        return spec

    @abc.abstractmethod
    def search(self, query: np.ndarray, ef: int, flt: Any) -> Sequence[int]: ...

    def search_many(self, queries: np.ndarray, ef: int, flt: Any) -> list[Sequence[int]]:
        return [self.search(query, ef, flt) for query in queries]

    def run_load(self, *, mode: str, queries: np.ndarray, queries_path: Path, ef: int,
                 spec: FilterSpec | None, max_seconds: float) -> load.LoadResult:
        """mode: single | concurrent | batched."""
        self.set_knob(ef)
        flt = self.native_filter(spec)
        if mode == "single":
            return load.run_single(lambda q: self.search(q, ef, flt), queries, max_seconds)
        if mode == "concurrent":
            return load.run_concurrent(lambda q: self.search(q, ef, flt), queries,
                                       self.config.concurrency, max_seconds)
        assert mode == "batched"
        return load.run_batched(lambda qs: self.search_many(qs, ef, flt), queries,
                                self.config.batch_size, max_seconds)

    # -- helpers -------------------------------------------------------------------
    def batches(self, size: int | None = None) -> list[tuple[int, int]]:
        step = size or self.config.ingest_batch
        return [(start, min(start + step, self.dataset.n)) for start in range(0, self.dataset.n, step)]
