"""Table of contents: leftovers of interrupted creates and deletes, stray files."""

from __future__ import annotations

import shutil
from pathlib import Path

from qcluster.storage.toc import TableOfContents
from qcluster.types import CollectionConfig, Distance, VectorParams


def test_interrupted_create_and_delete_leave_nothing_behind(tmp_path: Path) -> None:
    config = CollectionConfig(vectors={"": VectorParams(size=2, distance=Distance.DOT)})
    toc = TableOfContents.open(tmp_path)
    toc.create_collection("kept", config)
    toc.create_collection("doomed", config)
    toc.close()
    collections = tmp_path / "collections"
    # A delete that crashed after its rename, a create that crashed before its rename, a stray file.
    (collections / "doomed").rename(collections / ".deleting-doomed")
    shutil.copytree(collections / "kept", collections / ".creating-half")
    (collections / "notes.txt").write_text("not a collection")
    reopened = TableOfContents.open(tmp_path)
    try:
        assert reopened.collection_names() == ["kept"]
        assert sorted(path.name for path in collections.iterdir()) == ["kept", "notes.txt"]
    finally:
        reopened.close()
