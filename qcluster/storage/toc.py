"""Table of contents: the collections and aliases of one node, on disk.

::

    <data_dir>/
      aliases.json
      collections/<name>/config.json
      collections/<name>/shards/<shard id>/      (see engine.shard)

Metadata files are replaced atomically (write, fsync, rename, fsync dir).
A collection being created is written under ``collections/.creating-<name>``
and renamed into place, so a crash never leaves half a collection.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Container, Mapping
from pathlib import Path
from typing import Any, Final, final

from qcluster.engine.optimizer import Optimizer
from qcluster.engine.shard import LocalShard
from qcluster.engine.wal import fsync_directory
from qcluster.errors import AlreadyExists, DataCorruption, InvalidRequest, NotFound
from qcluster.limits import COLLECTION_NAME_LENGTH_MAX
from qcluster.storage.collection import Collection
from qcluster.storage.config_codec import apply_patch, config_from_json, config_to_json
from qcluster.storage.interface import AliasAction
from qcluster.types import CollectionConfig, CollectionPatch

__all__ = ["TableOfContents", "apply_alias_actions"]

logger = logging.getLogger(__name__)

_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9_\-.]+$")
_CREATING_PREFIX: Final = ".creating-"
_DELETING_PREFIX: Final = ".deleting-"
_OPTIMIZER_POLL_S: Final = 0.5
_OPTIMIZER_STOP_S: Final = 8.0


def _write_json_atomically(path: Path, value: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(json.dumps(value, sort_keys=True, indent=1).encode())
        handle.flush()
        os.fsync(handle.fileno())
    temporary.rename(path)
    fsync_directory(path.parent)


def validate_name(name: str, *, path: str) -> None:
    if not name or len(name) > COLLECTION_NAME_LENGTH_MAX:
        raise InvalidRequest(f"{path}: must be 1 to {COLLECTION_NAME_LENGTH_MAX} characters")
    if not _NAME_PATTERN.match(name) or name in {".", ".."}:
        raise InvalidRequest(f"{path}: {name!r} may contain only letters, digits, '_', '-' and '.'")


@final
class TableOfContents:
    """Thread-safe registry of collections; opens them at start, optimizes them in the background."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._collections_dir = data_dir / "collections"
        self._collections_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._collections: dict[str, Collection] = {}
        self._aliases: dict[str, str] = {}
        self._ready = False
        self._optimizer = Optimizer(self._all_shards, poll_interval_s=_OPTIMIZER_POLL_S)

    @classmethod
    def open(cls, data_dir: Path) -> TableOfContents:
        """Load every collection (recovering its shards) and start the optimizer."""
        toc = cls(data_dir)
        toc._load()
        toc._optimizer.start()
        toc._ready = True
        return toc

    def _load(self) -> None:
        for path in sorted(self._collections_dir.iterdir()):
            if path.name.startswith((_CREATING_PREFIX, _DELETING_PREFIX)):
                logger.warning("removing %s left by an interrupted create or delete", path.name)
                shutil.rmtree(path)
                continue
            if not path.is_dir() or path.name.startswith("."):
                logger.warning("ignoring %s in the collections directory", path.name)
                continue
            try:
                raw = json.loads((path / "config.json").read_bytes())
            except (OSError, ValueError) as exc:
                raise DataCorruption(f"collection {path.name}: config.json is missing or not valid JSON") from exc
            self._collections[path.name] = Collection(
                name=path.name,
                directory=path,
                config=config_from_json(raw["config"]),
                created_at=datetime.datetime.fromisoformat(raw["created_at"]),
                distributed=bool(raw.get("distributed", False)),
            )
        aliases_path = self.data_dir / "aliases.json"
        if aliases_path.exists():
            self._aliases = {
                alias: target
                for alias, target in json.loads(aliases_path.read_bytes()).items()
                if target in self._collections
            }

    def _all_shards(self) -> list[LocalShard]:
        with self._lock:
            return [shard for collection in self._collections.values() for shard in collection.shards.values()]

    def is_ready(self) -> bool:
        return self._ready

    def close(self) -> None:
        """Stop the optimizer, then flush and close every shard."""
        self._ready = False
        self._optimizer.stop(timeout_s=_OPTIMIZER_STOP_S)
        with self._lock:
            for collection in self._collections.values():
                collection.close()

    # ------------------------------------------------------------ collections

    def create_collection(self, name: str, config: CollectionConfig, *, distributed: bool = False) -> None:
        """Create ``name`` with every shard, or (``distributed``, cluster mode)
        with none: the reconciler adds the shards placed on this node."""
        validate_name(name, path="collection_name")
        if config.custom_sharding and not distributed:
            raise InvalidRequest("sharding_method: custom sharding needs cluster mode (a single node has one "
                                 "set of shards; filter on a tenant-keyed payload index instead)")
        with self._lock:
            if name in self._collections:
                raise AlreadyExists(f"Collection `{name}` already exists!")
            if name in self._aliases:
                raise AlreadyExists(f"Collection `{name}` would shadow an alias with the same name")
            staging = self._collections_dir / (_CREATING_PREFIX + name)
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir()
            created_at = datetime.datetime.now(datetime.UTC)
            _write_json_atomically(
                staging / "config.json", {"config": config_to_json(config), "created_at": created_at.isoformat(),
                                          "distributed": distributed}
            )
            final_path = self._collections_dir / name
            staging.rename(final_path)
            fsync_directory(self._collections_dir)
            self._collections[name] = Collection(name=name, directory=final_path, config=config,
                                                 created_at=created_at, distributed=distributed)

    def delete_collection(self, name: str) -> bool:
        with self._lock:
            collection = self._collections.pop(name, None)
            if collection is None:
                return False
            collection.close()
            doomed = self._collections_dir / (_DELETING_PREFIX + name)
            collection.directory.rename(doomed)
            fsync_directory(self._collections_dir)
            shutil.rmtree(doomed)
            stale = [alias for alias, target in self._aliases.items() if target == name]
            if stale:
                for alias in stale:
                    del self._aliases[alias]
                self._save_aliases()
            return True

    def resolve(self, name_or_alias: str) -> str:
        """The collection an alias names, or the name itself."""
        with self._lock:
            return self._aliases.get(name_or_alias, name_or_alias)

    def collection(self, name_or_alias: str) -> Collection:
        with self._lock:
            name = self._aliases.get(name_or_alias, name_or_alias)
            collection = self._collections.get(name)
        if collection is None:
            raise NotFound(f"Collection `{name_or_alias}` doesn't exist!")
        return collection

    def collection_names(self) -> list[str]:
        with self._lock:
            return sorted(self._collections)

    def exists(self, name: str) -> bool:
        with self._lock:
            return name in self._collections or name in self._aliases

    def update_collection(self, name: str, patch: CollectionPatch) -> None:
        with self._lock:
            collection = self.collection(name)
            self.replace_config(collection.name, apply_patch(collection.config, patch))

    def replace_config(self, name: str, config: CollectionConfig) -> None:
        """Give collection ``name`` a new config (a PATCH, or the cluster's config)."""
        with self._lock:
            collection = self.collection(name)
            _write_json_atomically(
                collection.directory / "config.json",
                {"config": config_to_json(config), "created_at": collection.created_at.isoformat(),
                 "distributed": collection.distributed},
            )
            collection.set_config(config)
        self._optimizer.wake()

    # ---------------------------------------------------------------- aliases

    def _save_aliases(self) -> None:
        _write_json_atomically(self.data_dir / "aliases.json", self._aliases)

    def update_aliases(self, actions: list[AliasAction]) -> None:
        """Apply every action or none."""
        with self._lock:
            self._aliases = apply_alias_actions(self._aliases, actions, collections=self._collections)
            self._save_aliases()

    def aliases(self, collection_name: str | None = None) -> list[tuple[str, str]]:
        with self._lock:
            if collection_name is not None and collection_name not in self._collections:
                raise NotFound(f"Collection `{collection_name}` doesn't exist!")
            return sorted(
                (alias, target)
                for alias, target in self._aliases.items()
                if collection_name is None or target == collection_name
            )


def apply_alias_actions(aliases: Mapping[str, str], actions: list[AliasAction], *,
                        collections: Container[str]) -> dict[str, str]:
    """The aliases after ``actions``, in order (Qdrant's semantics); raises on
    the first action that cannot apply, leaving ``aliases`` as they were."""
    updated = dict(aliases)
    for position, action in enumerate(actions):
        path = f"actions[{position}]"
        match action.kind:
            case "create":
                assert action.alias_name is not None and action.collection_name is not None
                validate_name(action.alias_name, path=f"{path}.create_alias.alias_name")
                if action.collection_name not in collections:
                    raise NotFound(f"Collection `{action.collection_name}` doesn't exist!")
                if action.alias_name in collections:
                    raise AlreadyExists(f"{path}: alias {action.alias_name!r} is the name of a collection")
                updated[action.alias_name] = action.collection_name
            case "delete":
                assert action.alias_name is not None
                if updated.pop(action.alias_name, None) is None:
                    raise NotFound(f"Alias {action.alias_name} does not exist!")
            case "rename":
                assert action.old_alias_name is not None and action.new_alias_name is not None
                validate_name(action.new_alias_name, path=f"{path}.rename_alias.new_alias_name")
                target = updated.pop(action.old_alias_name, None)
                if target is None:
                    raise NotFound(f"Alias {action.old_alias_name} does not exist!")
                updated[action.new_alias_name] = target
            case _:
                raise InvalidRequest(f"{path}: unknown alias action {action.kind!r}")
    return updated
