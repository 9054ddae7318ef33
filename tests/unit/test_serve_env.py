"""``qcluster serve`` sets OMP_WAIT_POLICY before FAISS (and libgomp) load:
libgomp reads it once, at load, so it only takes effect if nothing on the
command's import path has loaded FAISS already."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# serve.run up to the node's start, with a stand-in node module that prints
# the policy: what serve does to the environment is what a real start does.
_SERVE_WITH_STUB_NODE = """
import os, sys, types
stub = types.ModuleType("qcluster.node")
stub.serve = lambda settings: print(os.environ.get("OMP_WAIT_POLICY")) or 0
sys.modules["qcluster.node"] = stub
from qcluster.cli import main
sys.exit(main(["serve", "--data-dir", sys.argv[1]]))
"""


def test_the_command_line_does_not_load_faiss_before_serve_runs() -> None:
    code = "import sys, qcluster.cli, qcluster.cli.serve; print('faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_serve_sets_a_passive_wait_policy_unless_one_is_given(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        run_env = env if given is None else {**env, "OMP_WAIT_POLICY": given}
        out = subprocess.run([sys.executable, "-c", _SERVE_WITH_STUB_NODE, str(tmp_path)], capture_output=True,
                             text=True, env=run_env, timeout=60, check=True)
        assert out.stdout.strip() == expected


_SERVE_PRINTING_THE_SECRET = """
import sys, types
stub = types.ModuleType("qcluster.node")
stub.serve = lambda settings: print(settings.cluster.secret) or 0
sys.modules["qcluster.node"] = stub
from qcluster.cli import main
sys.exit(main(["serve", "--data-dir", sys.argv[1], "--host", "127.0.0.1", "--node-id", "1", "--p2p-port", "7999",
               "--peers", "127.0.0.1:7999", "--cluster-secret=" + sys.argv[2]]))
"""


def test_a_secret_beginning_with_a_dash_is_taken_in_the_equals_form(tmp_path: Path) -> None:
    # secrets.token_urlsafe begins with "-" one time in 64; the launchers
    # (dev-cluster, the bench, the e2e harness) pass it as --cluster-secret=S.
    secret = "-Xq3_dash-first-secret-0123456789"
    out = subprocess.run([sys.executable, "-c", _SERVE_PRINTING_THE_SECRET, str(tmp_path), secret],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == secret
