"""The committed modules in qcluster/proto are what `make proto` generates
from proto/ right now."""

from __future__ import annotations

import pathlib

from qcluster.proto import generate


def test_generated_code_is_current(tmp_path: pathlib.Path) -> None:
    written = generate.generate(tmp_path)
    assert written, "proto/ has .proto files"
    for fresh in written:
        committed = generate.REPO_ROOT / fresh.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run `make proto`"
        assert committed.read_bytes() == fresh.read_bytes(), f"{committed} is stale: run `make proto`"


def test_every_proto_has_generated_code() -> None:
    for source in generate.proto_files():
        stem = source.relative_to(generate.PROTO_ROOT).with_suffix("")
        assert (generate.REPO_ROOT / f"{stem}_pb2.py").exists(), f"no generated code for {source}: run `make proto`"
