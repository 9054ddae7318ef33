"""``qcluster dev-cluster --nodes 3``: a local cluster to try, one
``qcluster serve`` process per node on 127.0.0.1.

Node i (1-based) serves REST on ``base_port + 10*(i-1)``, gRPC one above,
Raft two above; data under ``DATA_DIR/node-i``. The cluster secret is
generated once and kept in ``DATA_DIR/cluster-secret``, so a restart rejoins
the same cluster. Ctrl-C (or SIGTERM) stops every node.
"""

from __future__ import annotations

import argparse
import pathlib
import secrets
import signal
import subprocess
import sys
import time
from typing import Any, Final

import httpx

__all__ = ["add_parser"]

_READY_TIMEOUT_S: Final = 60.0
_STOP_TIMEOUT_S: Final = 15.0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("dev-cluster", help="run a local cluster of N nodes on 127.0.0.1, for trying out",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=6333)
    parser.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path("./data-cluster"))
    parser.set_defaults(run=run)


def _secret(data_dir: pathlib.Path) -> str:
    path = data_dir / "cluster-secret"
    if not path.exists():
        path.write_text(secrets.token_hex(24))  # hex: never begins with "-"
        path.chmod(0o600)
    return path.read_text().strip()


def _wait_ready(urls: list[str], processes: list[subprocess.Popen[bytes]]) -> bool:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    pending = set(urls)
    while pending and time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            return False
        for url in list(pending):
            try:
                if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                    pending.discard(url)
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    return not pending


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=_STOP_TIMEOUT_S)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 9:
        print("qcluster: error: --nodes must be between 1 and 9", file=sys.stderr)
        return 2
    args.data_dir.mkdir(parents=True, exist_ok=True)
    secret = _secret(args.data_dir)
    ports = [(args.base_port + 10 * index, args.base_port + 10 * index + 1, args.base_port + 10 * index + 2)
             for index in range(args.nodes)]
    peers = ",".join(f"127.0.0.1:{p2p}" for _http, _grpc, p2p in ports)
    processes: list[subprocess.Popen[bytes]] = []
    urls = [f"http://127.0.0.1:{http}" for http, _grpc, _p2p in ports]
    try:
        for index, (http, grpc_port, p2p) in enumerate(ports):
            node_dir = args.data_dir / f"node-{index + 1}"
            log = (args.data_dir / f"node-{index + 1}.log").open("ab")
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "qcluster", "serve", "--data-dir", str(node_dir), "--host", "127.0.0.1",
                 "--http-port", str(http), "--grpc-port", str(grpc_port), "--node-id", str(index + 1),
                 "--p2p-port", str(p2p), "--peers", peers, f"--cluster-secret={secret}"],
                stdout=log, stderr=subprocess.STDOUT))
        if not _wait_ready(urls, processes):
            print(f"qcluster: error: the nodes did not all start; see {args.data_dir}/node-*.log", file=sys.stderr)
            return 3
        print(f"{args.nodes} nodes (logs in {args.data_dir}/node-*.log); REST:")
        for url in urls:
            print(f"  {url}")
        print("Ctrl-C stops them.", flush=True)
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        print("qcluster: a node exited; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(processes)
