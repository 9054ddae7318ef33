"""Regenerate the Python modules from ``proto/``: ``python -m qcluster.proto.generate [OUT_DIR]``.

Writes ``<OUT_DIR>/qcluster/proto/v1/*_pb2.py``, ``*_pb2.pyi`` and
``*_pb2_grpc.py`` (OUT_DIR defaults to the repository root, i.e. into this
package). ``tests/unit/test_proto.py`` generates into a temporary directory
and compares, so committed code cannot drift from the ``.proto`` files.
"""

from __future__ import annotations

import pathlib
import sys

from grpc_tools import protoc

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"


def proto_files() -> list[pathlib.Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Run protoc (grpcio-tools) on every ``.proto``; returns the files written."""
    sources = [str(path.relative_to(PROTO_ROOT)) for path in proto_files()]
    out_dir.mkdir(parents=True, exist_ok=True)
    arguments = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
                 f"--grpc_python_out={out_dir}", *sources]
    if protoc.main(arguments) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(arguments)}")
    written = []
    for source in sources:
        stem = source.removesuffix(".proto")
        written += [out_dir / f"{stem}_pb2.py", out_dir / f"{stem}_pb2.pyi", out_dir / f"{stem}_pb2_grpc.py"]
    return written


def main() -> int:
    out_dir = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT
    for path in generate(out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
