"""The layering rules of docs/architecture.md, checked on every module's imports.

Imports only go downward: foundation <- engine <- storage <- cluster <- api <- node/cli.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "qcluster"
FOUNDATION = {"types", "errors", "limits", "config", "operations", "sharding", "__init__"}
# layer -> the qcluster layers it may import (besides itself and the foundation)
ALLOWED: dict[str, set[str]] = {
    "foundation": set(),
    "proto": set(),  # generated from proto/
    "engine": set(),
    "storage": {"engine"},
    "cluster": set(),
    "consensus": {"cluster"},
    "replication": {"engine"},  # talks to peers and Raft only through its Protocols
    "transport": {"replication", "proto", "engine"},
    # cluster mode on one node: router, reconciler, recovery, controller (Raft only through callables)
    "distributed": {"engine", "storage", "cluster", "replication", "transport"},
    "telemetry": set(),
    "api": {"engine", "storage", "cluster", "telemetry", "proto"},
    "client": {"proto"},
    "cli": {"client", "node"},
    "node": {"engine", "storage", "cluster", "consensus", "replication", "transport", "distributed", "api",
             "telemetry"},
    "__main__": {"cli"},
    # helpers for tests and benchmarks (free ports); no production layer may import it
    "testing": set(),
}
# third-party modules only some layers may use
RESTRICTED = {"pysyncobj": {"consensus"}, "aiohttp": {"api", "node", "client", "cli"}, "grpc": {"api", "node", "client", "transport", "proto", "cli", "distributed"},
              # Qdrant's wire definitions, converters and client: the public API and the client side only.
              "qdrant_client": {"api", "client", "cli"}}


def _layer(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    top = relative.parts[0].removesuffix(".py")
    if len(relative.parts) == 1 and top in FOUNDATION:
        return "foundation"
    return top


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_go_downward(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED, f"{path}: layer {layer!r} is not in the layering table"
    for module in _imports(path):
        parts = module.split(".")
        if parts[0] == "qcluster" and len(parts) > 1:
            target = "foundation" if parts[1] in FOUNDATION else parts[1]
            if target in {layer, "foundation"}:
                continue
            assert target in ALLOWED[layer], f"{path.relative_to(PACKAGE)} ({layer}) imports {module}"
        elif parts[0] in RESTRICTED:
            assert layer in RESTRICTED[parts[0]], f"{path.relative_to(PACKAGE)} ({layer}) imports {module}"


def test_every_layer_is_known() -> None:
    assert MODULES, "the package has modules"
    assert {_layer(path) for path in MODULES} <= set(ALLOWED)
