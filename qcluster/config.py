"""Node settings: defaults < YAML file < environment < command-line flags.

``Settings`` is a tree of frozen dataclasses with three sections (``service``,
``storage``, ``log``). Each layer is a partial mapping ``{section: {key:
value}}`` that is validated against the dataclass fields before it is merged,
so an unknown section or key is an error that names it (a typo in a config
file must not be silently ignored). Environment variables are spelled
``QCLUSTER__SECTION__KEY`` (case-insensitive), e.g.
``QCLUSTER__SERVICE__HTTP_PORT=7000``, and are converted to the field's type.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from qcluster import limits

__all__ = [
    "ClusterSettings",
    "ConfigError",
    "ENV_PREFIX",
    "LogSettings",
    "ServiceSettings",
    "Settings",
    "StorageSettings",
    "load_settings",
]

ENV_PREFIX: Final = "QCLUSTER__"
_MIB: Final = 1024 * 1024
_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_FORMATS: Final = ("json", "text")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    host: str = "0.0.0.0"
    http_port: int = 6333
    # Qdrant's public gRPC services and qcluster's extensions.
    grpc_port: int = 6334
    # When set, every request except the health probes must carry it in the
    # ``api-key`` header (as qdrant-client sends it) or as a Bearer token.
    api_key: str | None = None
    max_request_size_mb: int = limits.REQUEST_BODY_BYTES_MAX // _MIB
    # Threads that run blocking storage calls (FAISS releases the GIL).
    worker_threads: int = 8
    # Seconds a graceful shutdown waits for in-flight requests.
    shutdown_timeout_s: float = 7.0


@dataclass(frozen=True, slots=True)
class StorageSettings:
    data_dir: str = "./data"
    # Memory for contiguous copies of repeated filters' candidate vectors,
    # which let a mid-selectivity filter be scored exactly instead of through
    # filtered HNSW (qcluster/engine/scan_cache.py); 0 turns it off.
    filtered_scan_cache_mb: int = 128


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "INFO"
    format: str = "json"


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """Cluster mode is on when ``node_id`` is set (``qcluster serve --node-id``)."""

    # This node's identity, an unsigned integer like Qdrant's peer id. A node
    # restarted with the same id and data dir rejoins as itself.
    node_id: int | None = None
    # The address peers reach this node's Raft port at; default service.host
    # (which must then be a concrete address, not 0.0.0.0).
    p2p_host: str | None = None
    p2p_port: int = 6335
    # The other members of the initial cluster: "host:p2p_port,host:p2p_port".
    peers: str | None = None
    # A member of a running cluster ("host:p2p_port") this node joins through:
    # it asks that member for the current members and to be added
    # (consensus/join.py). With ``peers`` too, those are asked when it does not answer.
    join: str | None = None
    # Required in cluster mode: authenticates and encrypts Raft and internal traffic.
    secret: str | None = None
    # The Raft leader marks a node dead when it has had no connection to it
    # for this long, and alive again once it reconnects.
    dead_after_s: float = 2.0
    # A node dead this long is lost: its replicas are re-created on other nodes.
    replica_grace_s: float = 60.0
    # How long a write waits for its shards' primaries (through a failover) before it fails.
    write_timeout_s: float = 20.0
    # Deadline of one node-to-node call (replicate a write, read a shard).
    internal_deadline_s: float = 3.0

    @property
    def is_enabled(self) -> bool:
        return self.node_id is not None

    def peer_addresses(self) -> tuple[str, ...]:
        return tuple(sorted({item.strip() for item in (self.peers or "").split(",") if item.strip()}))

    def join_address(self) -> str | None:
        """``join`` without surrounding blanks; None when not joining."""
        return None if self.join is None else self.join.strip()


@dataclass(frozen=True, slots=True)
class Settings:
    service: ServiceSettings = field(default_factory=ServiceSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    log: LogSettings = field(default_factory=LogSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    @property
    def p2p_address(self) -> str:
        """host:port of this node's Raft port (cluster mode only)."""
        host = self.cluster.p2p_host or self.service.host
        return f"{host}:{self.cluster.p2p_port}"

    @property
    def data_dir(self) -> pathlib.Path:
        return pathlib.Path(self.storage.data_dir)


Layer = Mapping[str, Mapping[str, Any]]

_SECTIONS: Final[dict[str, type]] = {
    "service": ServiceSettings,
    "storage": StorageSettings,
    "log": LogSettings,
    "cluster": ClusterSettings,
}


def _field_types(section_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


def _convert(value: Any, target: Any, *, key: str, from_text: bool) -> Any:
    """Convert ``value`` to ``target`` (int, float, bool, str or X | None)."""
    if typing.get_origin(target) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(target) if arg is not type(None)]
        assert len(members) == 1, f"{key}: only Optional[X] fields are supported"
        if value is None or (from_text and value.strip().lower() in ("", "null", "none")):
            return None
        return _convert(value, members[0], key=key, from_text=from_text)
    if target is bool:
        if isinstance(value, bool):
            return value
        if from_text and value.strip().lower() in ("true", "1", "yes", "on"):
            return True
        if from_text and value.strip().lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected a boolean, got {value!r}")
    if target in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)) and not (target is int and isinstance(value, float)):
            return target(value)
        if from_text or isinstance(value, str):
            try:
                return target(str(value).strip())
            except ValueError as exc:
                raise ConfigError(f"{key}: expected {target.__name__}, got {value!r}") from exc
        raise ConfigError(f"{key}: expected {target.__name__}, got {value!r}")
    if target is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise AssertionError(f"{key}: unsupported field type {target!r}")


def _normalize_layer(layer: Layer, *, origin: str, from_text: bool) -> dict[str, dict[str, Any]]:
    """Check every section and key of one layer and convert its values."""
    result: dict[str, dict[str, Any]] = {}
    for section, values in layer.items():
        section_cls = _SECTIONS.get(section)
        if section_cls is None:
            raise ConfigError(f"{origin}: unknown section {section!r} (known: {', '.join(_SECTIONS)})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: section {section!r} must be a mapping")
        types_by_key = _field_types(section_cls)
        converted: dict[str, Any] = {}
        for key, value in values.items():
            if key not in types_by_key:
                raise ConfigError(f"{origin}: unknown key {section}.{key}")
            converted[key] = _convert(value, types_by_key[key], key=f"{origin}: {section}.{key}", from_text=from_text)
        result[section] = converted
    return result


def _read_yaml(path: pathlib.Path) -> Layer:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    return loaded


def _env_layer(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    layer: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX):].split("__")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"environment variable {name}: expected {ENV_PREFIX}SECTION__KEY")
        layer.setdefault(parts[0].lower(), {})[parts[1].lower()] = value
    return layer


def _validate(settings: Settings) -> None:
    service = settings.service
    for key in ("http_port", "grpc_port"):
        port = getattr(service, key)
        if not 0 <= port <= 65535:
            raise ConfigError(f"service.{key}: {port} is not a TCP port")
    if service.http_port != 0 and service.http_port == service.grpc_port:
        raise ConfigError("service.grpc_port: must differ from service.http_port")
    if not 1 <= service.max_request_size_mb <= limits.REQUEST_BODY_BYTES_MAX // _MIB:
        raise ConfigError(
            f"service.max_request_size_mb: must be between 1 and {limits.REQUEST_BODY_BYTES_MAX // _MIB}"
        )
    if not 1 <= service.worker_threads <= 256:
        raise ConfigError("service.worker_threads: must be between 1 and 256")
    if not 0 < service.shutdown_timeout_s <= 60:
        raise ConfigError("service.shutdown_timeout_s: must be in (0, 60]")
    if not settings.storage.data_dir:
        raise ConfigError("storage.data_dir: must not be empty")
    if not 0 <= settings.storage.filtered_scan_cache_mb <= _SCAN_CACHE_MB_MAX:
        raise ConfigError(f"storage.filtered_scan_cache_mb: must be between 0 and {_SCAN_CACHE_MB_MAX}")
    if settings.log.level.upper() not in _LOG_LEVELS:
        raise ConfigError(f"log.level: {settings.log.level!r} is not one of {', '.join(_LOG_LEVELS)}")
    if settings.log.format not in _LOG_FORMATS:
        raise ConfigError(f"log.format: {settings.log.format!r} is not one of {', '.join(_LOG_FORMATS)}")
    _validate_cluster(settings)


_SCAN_CACHE_MB_MAX: Final = 1024 * 1024
_CLUSTER_SECRET_LENGTH_MIN: Final = 8
_WILDCARD_HOSTS: Final = frozenset(("", "0.0.0.0", "::", "[::]"))


def _check_address(address: str, *, key: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{key}: {address!r} is not host:port")


def _validate_cluster(settings: Settings) -> None:
    cluster = settings.cluster
    if not cluster.is_enabled:
        if cluster.join is not None:
            raise ConfigError("cluster.join: joining a cluster needs cluster.node_id (--node-id) and "
                              "cluster.secret (--cluster-secret)")
        if cluster.peers or cluster.secret or cluster.p2p_host:
            raise ConfigError("cluster.node_id: required when cluster.peers, cluster.secret or cluster.p2p_host "
                              "is set (cluster mode starts with --node-id)")
        return
    assert cluster.node_id is not None
    if cluster.node_id < 0:
        raise ConfigError("cluster.node_id: must be an unsigned integer")
    if not 0.5 <= cluster.dead_after_s <= 3600:
        raise ConfigError("cluster.dead_after_s: must be between 0.5 and 3600 seconds")
    if not 1 <= cluster.replica_grace_s <= 86_400:
        raise ConfigError("cluster.replica_grace_s: must be between 1 and 86400 seconds")
    if not 1 <= cluster.write_timeout_s <= 600:
        raise ConfigError("cluster.write_timeout_s: must be between 1 and 600 seconds")
    if not 0.1 <= cluster.internal_deadline_s <= 60:
        raise ConfigError("cluster.internal_deadline_s: must be between 0.1 and 60 seconds")
    if not 1 <= cluster.p2p_port <= 65535:
        raise ConfigError(f"cluster.p2p_port: {cluster.p2p_port} is not a TCP port")
    if cluster.p2p_port in (settings.service.http_port, settings.service.grpc_port):
        raise ConfigError("cluster.p2p_port: must differ from service.http_port and service.grpc_port")
    if cluster.join is not None and not cluster.secret:
        raise ConfigError("cluster.join: joining a cluster needs cluster.secret (--cluster-secret), the secret "
                          "the members' Raft ports accept")
    if not cluster.secret or len(cluster.secret) < _CLUSTER_SECRET_LENGTH_MIN:
        raise ConfigError(f"cluster.secret: cluster mode needs a shared secret of at least "
                          f"{_CLUSTER_SECRET_LENGTH_MIN} characters (--cluster-secret): without it anyone who "
                          "reaches the Raft port could change the cluster")
    if (cluster.p2p_host or settings.service.host) in _WILDCARD_HOSTS:
        raise ConfigError("cluster.p2p_host: set the address peers reach this node at (--p2p-host); "
                          f"service.host {settings.service.host!r} listens everywhere and names no address")
    _check_address(settings.p2p_address, key="cluster.p2p_host")
    for peer in cluster.peer_addresses():
        _check_address(peer, key="cluster.peers")
    join = cluster.join_address()
    if join is not None:
        _check_address(join, key="cluster.join")
        if join == settings.p2p_address:
            raise ConfigError(f"cluster.join: {join!r} is this node's own p2p address; give the address of a "
                              "member of the running cluster")


def load_settings(
    *,
    config_file: pathlib.Path | None,
    environ: Mapping[str, str],
    overrides: Layer,
) -> Settings:
    """Merge defaults < ``config_file`` < ``environ`` < ``overrides`` (CLI flags).

    ``overrides`` uses the same ``{section: {key: value}}`` shape; None values
    in it mean "flag not given" and are skipped.
    """
    layers = []
    if config_file is not None:
        layers.append(_normalize_layer(_read_yaml(config_file), origin=str(config_file), from_text=False))
    layers.append(_normalize_layer(_env_layer(environ), origin="environment", from_text=True))
    given = {section: {k: v for k, v in values.items() if v is not None} for section, values in overrides.items()}
    layers.append(_normalize_layer(given, origin="command line", from_text=False))
    merged: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
    for layer in layers:
        for section, values in layer.items():
            merged[section].update(values)
    settings = Settings(
        service=ServiceSettings(**merged["service"]),
        storage=StorageSettings(**merged["storage"]),
        log=LogSettings(**merged["log"]),
        cluster=ClusterSettings(**merged["cluster"]),
    )
    _validate(settings)
    return settings


def log_level_number(settings: Settings) -> int:
    level = logging.getLevelName(settings.log.level.upper())
    assert isinstance(level, int)
    return level
