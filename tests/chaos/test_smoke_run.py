"""The chaos harness end to end, short: three real nodes in namespaces of
their own, the workload, one partition, one pause and one kill, the checker
and the report. The checker must pass. (``make chaos`` runs the long one.)"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from chaos.netns import list_namespaces_quietly
from chaos.run import RunConfig, run

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables") is None,
                                reason="the chaos harness needs root, iproute2 and iptables")

SEQUENCE = ["partition-one", "pause", "kill"]


def test_a_partition_a_pause_and_a_kill_lose_nothing(tmp_path: Path) -> None:
    config = RunConfig(nodes=3, rounds=len(SEQUENCE), seed=20261207, faults=SEQUENCE, sequence=SEQUENCE,
                       fault_duration_s_min=5.0, fault_duration_s_max=8.0, recovery_wait_s=3.0, rate=30.0,
                       out_dir=tmp_path, tmpfs_mb=128)
    namespaces_before = set(list_namespaces_quietly())
    markdown = run(config)
    report = json.loads(markdown.with_suffix(".json").read_text())
    assert report["passed"], markdown.read_text()
    assert [episode["fault"] for episode in report["faults"]] == SEQUENCE
    assert markdown.with_suffix(".png").stat().st_size > 1000
    assert set(list_namespaces_quietly()) <= namespaces_before, "the run left namespaces behind"
