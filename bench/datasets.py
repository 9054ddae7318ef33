"""Datasets of the harness: the real pypi MiniLM embeddings, read in place from
``../shared/datasets``, and the seeded synthetic L2 set generated into a temp
folder outside the repo by ``../shared/datasets/make_synthetic.py``.

A :class:`DatasetSpec` is small and JSON-serialisable so that each worker
process can load the same data itself; ground truth is computed once by the
harness and handed to workers as files.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
SHARED_DATASETS: Final = REPO_ROOT.parent / "shared" / "datasets"
PYPI_DIR: Final = SHARED_DATASETS / "pypi-minilm-100k"
MAKE_SYNTHETIC: Final = SHARED_DATASETS / "make_synthetic.py"
SYNTHETIC_DEFAULT_N: Final = 1_000_000
SYNTHETIC_DIM: Final = 128
SYNTHETIC_QUERIES: Final = 1000
SYNTHETIC_SEED: Final = 7

# Year histogram of pypi-minilm-100k (base.jsonl.gz): synthetic payloads draw
# from it so filtered search has the same skew on both datasets.
PYPI_YEAR_COUNTS: Final = {
    2005: 4, 2006: 24, 2007: 44, 2008: 97, 2009: 171, 2010: 255, 2011: 406, 2012: 554, 2013: 801,
    2014: 1068, 2015: 1408, 2016: 1801, 2017: 2209, 2018: 2933, 2019: 3823, 2020: 5119, 2021: 6067,
    2022: 6124, 2023: 7391, 2024: 8788, 2025: 13714, 2026: 37199,
}

Metric = Literal["cosine", "l2"]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Which data: ``name`` (pypi | synthetic), first ``n`` points, first ``n_queries`` queries."""

    name: str
    n: int
    n_queries: int
    synthetic_dir: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetSpec:
        return cls(**data)

    @property
    def label(self) -> str:
        return self.name


@dataclasses.dataclass
class Dataset:
    spec: DatasetSpec
    base: np.ndarray          # (n, d) float32
    queries: np.ndarray       # (nq, d) float32
    metric: Metric
    payloads: list[dict[str, Any]]
    years: np.ndarray         # (n,) int64
    names: list[str]

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])

    @property
    def n(self) -> int:
        return int(self.base.shape[0])


def synthetic_dir_for(n: int) -> Path:
    """Default cache folder for the synthetic set (outside the repo, reused across runs)."""
    return Path(tempfile.gettempdir()) / f"qcluster-bench-synthetic-n{n}-d{SYNTHETIC_DIM}-s{SYNTHETIC_SEED}"


def ensure_synthetic(out_dir: Path, n: int) -> Path:
    """Run make_synthetic.py into ``out_dir`` unless its four files are already there."""
    wanted = ["base.npy", "queries.npy", "gt_l2_top100.npy", "gt_l2_top100_dist.npy"]
    if all((out_dir / name).exists() for name in wanted):
        return out_dir
    if out_dir.resolve().is_relative_to(REPO_ROOT):
        raise ValueError(f"synthetic data must live outside the repo, not in {out_dir}")
    command = [sys.executable, str(MAKE_SYNTHETIC), str(out_dir), "--n", str(n), "--dim", str(SYNTHETIC_DIM),
               "--queries", str(SYNTHETIC_QUERIES), "--seed", str(SYNTHETIC_SEED)]
    subprocess.run(command, check=True, timeout=3600)
    return out_dir


def _pypi(spec: DatasetSpec) -> Dataset:
    base = np.load(PYPI_DIR / "base.f16.npy", mmap_mode="r")[: spec.n].astype(np.float32)
    queries = np.load(PYPI_DIR / "queries.f16.npy", mmap_mode="r")[: spec.n_queries].astype(np.float32)
    payloads: list[dict[str, Any]] = []
    with gzip.open(PYPI_DIR / "base.jsonl.gz", "rt") as handle:
        for line in handle:
            if len(payloads) >= base.shape[0]:
                break
            payloads.append(json.loads(line))
    years = np.array([row["year"] for row in payloads], dtype=np.int64)
    names = [row["name"] for row in payloads]
    return Dataset(spec, base, queries, "cosine", payloads, years, names)


def _synthetic(spec: DatasetSpec) -> Dataset:
    assert spec.synthetic_dir is not None
    folder = Path(spec.synthetic_dir)
    base = np.load(folder / "base.npy", mmap_mode="r")[: spec.n].astype(np.float32)
    queries = np.load(folder / "queries.npy", mmap_mode="r")[: spec.n_queries].astype(np.float32)
    rng = np.random.default_rng(SYNTHETIC_SEED)
    choices = np.array(list(PYPI_YEAR_COUNTS), dtype=np.int64)
    weights = np.array(list(PYPI_YEAR_COUNTS.values()), dtype=np.float64)
    years = rng.choice(choices, size=base.shape[0], p=weights / weights.sum())
    names = [f"synthetic-{i:07d}" for i in range(base.shape[0])]
    payloads = [{"year": int(year), "name": name} for year, name in zip(years, names, strict=True)]
    return Dataset(spec, base, queries, "l2", payloads, years, names)


def load(spec: DatasetSpec) -> Dataset:
    if spec.name == "pypi":
        return _pypi(spec)
    if spec.name == "synthetic":
        return _synthetic(spec)
    raise ValueError(f"unknown dataset {spec.name!r}")


def file_ground_truth(spec: DatasetSpec, full_n: int) -> np.ndarray | None:
    """The shipped exact top-100, when the spec covers the whole base set."""
    if spec.n != full_n:
        return None
    if spec.name == "pypi":
        return np.load(PYPI_DIR / "gt_ip_top100.npy")[: spec.n_queries]
    assert spec.synthetic_dir is not None
    return np.load(os.path.join(spec.synthetic_dir, "gt_l2_top100.npy"))[: spec.n_queries]


def full_size(name: str, synthetic_dir: str | None) -> int:
    if name == "pypi":
        return int(np.load(PYPI_DIR / "base.f16.npy", mmap_mode="r").shape[0])
    assert synthetic_dir is not None
    return int(np.load(os.path.join(synthetic_dir, "base.npy"), mmap_mode="r").shape[0])
