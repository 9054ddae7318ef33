"""Settings precedence, typed conversion and unknown-key errors."""

from __future__ import annotations

import pathlib

import pytest

from qcluster.config import ConfigError, Settings, load_settings

NO_FLAGS: dict[str, dict[str, object]] = {}


def _load(tmp_path: pathlib.Path, *, yaml_text: str | None = None, env: dict[str, str] | None = None,
          flags: dict[str, dict[str, object]] | None = None) -> Settings:
    config_file = None
    if yaml_text is not None:
        config_file = tmp_path / "config.yaml"
        config_file.write_text(yaml_text)
    return load_settings(config_file=config_file, environ=env or {}, overrides=flags or NO_FLAGS)


def test_defaults(tmp_path: pathlib.Path) -> None:
    settings = _load(tmp_path)
    assert settings.service.http_port == 6333
    assert settings.service.grpc_port == 6334
    assert settings.service.api_key is None
    assert settings.storage.data_dir == "./data"
    assert settings.log.level == "INFO"


def test_precedence_defaults_file_env_flags(tmp_path: pathlib.Path) -> None:
    yaml_text = "service:\n  http_port: 7000\n  grpc_port: 7001\n  host: 10.0.0.1\nstorage:\n  data_dir: /from/file\n"
    settings = _load(tmp_path, yaml_text=yaml_text)
    assert (settings.service.http_port, settings.service.host, settings.storage.data_dir) == (7000, "10.0.0.1", "/from/file")
    env = {"QCLUSTER__SERVICE__HTTP_PORT": "7100", "QCLUSTER__STORAGE__DATA_DIR": "/from/env"}
    settings = _load(tmp_path, yaml_text=yaml_text, env=env)
    assert (settings.service.http_port, settings.storage.data_dir) == (7100, "/from/env")
    assert settings.service.grpc_port == 7001  # file value survives where env is silent
    flags = {"service": {"http_port": 7200, "host": None}, "storage": {"data_dir": "/from/flag"}}
    settings = _load(tmp_path, yaml_text=yaml_text, env=env, flags=flags)
    assert (settings.service.http_port, settings.storage.data_dir) == (7200, "/from/flag")
    assert settings.service.host == "10.0.0.1"  # a flag that is None was not given


def test_env_is_typed_and_case_insensitive(tmp_path: pathlib.Path) -> None:
    env = {
        "qcluster__service__http_port": "7000",
        "QCLUSTER__SERVICE__API_KEY": "secret",
        "QCLUSTER__SERVICE__SHUTDOWN_TIMEOUT_S": "2.5",
        "QCLUSTER__LOG__LEVEL": "debug",
        "UNRELATED": "x",
    }
    settings = _load(tmp_path, env=env)
    assert settings.service.http_port == 7000
    assert settings.service.api_key == "secret"
    assert settings.service.shutdown_timeout_s == 2.5
    assert settings.log.level == "debug"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"QCLUSTER__SERVICE__HTTP_PROT": "1"}, "service.http_prot"),
        ({"QCLUSTER__SERVCE__HTTP_PORT": "1"}, "servce"),
        ({"QCLUSTER__SERVICE__HTTP_PORT": "abc"}, "service.http_port"),
        ({"QCLUSTER__SERVICE__HTTP_PORT": "70000"}, "service.http_port"),
        ({"QCLUSTER__SERVICE": "1"}, "QCLUSTER__SERVICE"),
        ({"QCLUSTER__LOG__LEVEL": "loud"}, "log.level"),
    ],
)
def test_bad_env_names_the_key(tmp_path: pathlib.Path, env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        _load(tmp_path, env=env)


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("service:\n  bogus: 1\n", "service.bogus"),
        ("nope:\n  a: 1\n", "nope"),
        ("service:\n  http_port: [1]\n", "service.http_port"),
        ("service:\n  http_port: true\n", "service.http_port"),
        ("service: 3\n", "service"),
        ("- a\n", "top level"),
        ("service: {http_port: 1\n", "YAML"),
    ],
)
def test_bad_file_names_the_key(tmp_path: pathlib.Path, yaml_text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        _load(tmp_path, yaml_text=yaml_text)


def test_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(config_file=tmp_path / "absent.yaml", environ={}, overrides=NO_FLAGS)


def test_unknown_flag_key_is_an_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="service.nope"):
        _load(tmp_path, flags={"service": {"nope": 1}})


def test_settings_are_frozen(tmp_path: pathlib.Path) -> None:
    settings = _load(tmp_path)
    with pytest.raises(AttributeError):
        settings.service.http_port = 1  # type: ignore[misc]


def test_cluster_mode_settings() -> None:
    from qcluster.config import load_settings

    settings = load_settings(config_file=None, environ={
        "QCLUSTER__CLUSTER__NODE_ID": "7", "QCLUSTER__CLUSTER__SECRET": "s3cret-s3cret",
        "QCLUSTER__CLUSTER__PEERS": "10.0.0.2:6335, 10.0.0.1:6335,10.0.0.2:6335"},
        overrides={"service": {"host": "10.0.0.1"}})
    assert settings.cluster.is_enabled and settings.cluster.node_id == 7
    assert settings.p2p_address == "10.0.0.1:6335"
    assert settings.cluster.peer_addresses() == ("10.0.0.1:6335", "10.0.0.2:6335")
    assert not load_settings(config_file=None, environ={}, overrides={}).cluster.is_enabled


@pytest.mark.parametrize(("cluster", "message"), [
    ({"node_id": 1, "secret": "short"}, "cluster.secret"),
    ({"node_id": 1, "secret": "long-enough", "p2p_port": 6333}, "cluster.p2p_port"),
    ({"node_id": 1, "secret": "long-enough", "peers": "nohost"}, "cluster.peers"),
    ({"node_id": -1, "secret": "long-enough"}, "cluster.node_id"),
    ({"secret": "long-enough"}, "cluster.node_id"),
    ({"node_id": 1, "secret": "long-enough", "unknown": 1}, "cluster.unknown"),
    ({"node_id": 1, "secret": "long-enough", "dead_after_s": 0.1}, "cluster.dead_after_s"),
])
def test_cluster_mode_errors_name_the_key(cluster: dict[str, object], message: str) -> None:
    from qcluster.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=message):
        load_settings(config_file=None, environ={}, overrides={"service": {"host": "127.0.0.1"}, "cluster": cluster})


def test_cluster_join_from_flag_file_and_env(tmp_path: pathlib.Path) -> None:
    base: dict[str, dict[str, object]] = {"service": {"host": "10.0.0.4"},
                                          "cluster": {"node_id": 4, "secret": "s3cret-s3cret"}}
    by_flag = _load(tmp_path, flags={**base, "cluster": {**base["cluster"], "join": " 10.0.0.1:6335 "}})
    assert by_flag.cluster.join_address() == "10.0.0.1:6335"
    assert by_flag.cluster.peer_addresses() == ()  # --join instead of --peers
    by_file = _load(tmp_path, yaml_text="cluster:\n  join: 10.0.0.2:6335\n  peers: 10.0.0.1:6335\n", flags=base)
    assert by_file.cluster.join_address() == "10.0.0.2:6335"
    assert by_file.cluster.peer_addresses() == ("10.0.0.1:6335",)  # together with --peers
    by_env = _load(tmp_path, env={"QCLUSTER__CLUSTER__JOIN": "10.0.0.3:6335"}, flags=base)
    assert by_env.cluster.join_address() == "10.0.0.3:6335"
    assert _load(tmp_path, flags=base).cluster.join_address() is None
    assert _load(tmp_path, env={"QCLUSTER__CLUSTER__JOIN": ""}, flags=base).cluster.join_address() is None


@pytest.mark.parametrize(("cluster", "message"), [
    ({"join": "10.0.0.1:6335"}, "cluster.join: joining a cluster needs cluster.node_id"),
    ({"join": "10.0.0.1:6335", "secret": "long-enough"}, "cluster.join: joining a cluster needs cluster.node_id"),
    ({"join": "10.0.0.1:6335", "node_id": 4}, "cluster.join: joining a cluster needs cluster.secret"),
    ({"join": "10.0.0.1", "node_id": 4, "secret": "long-enough"}, "cluster.join: '10.0.0.1' is not host:port"),
    ({"join": "10.0.0.1:0", "node_id": 4, "secret": "long-enough"}, "cluster.join"),
    ({"join": ":6335", "node_id": 4, "secret": "long-enough"}, "cluster.join"),
    ({"join": "", "node_id": 4, "secret": "long-enough"}, "cluster.join"),
    ({"join": "127.0.0.1:6335", "node_id": 4, "secret": "long-enough"}, "cluster.join: .* own p2p address"),
    ({"join": "10.0.0.1:6335", "node_id": 4, "secret": "short"}, "cluster.secret"),
])
def test_cluster_join_errors_name_the_key(cluster: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(config_file=None, environ={}, overrides={"service": {"host": "127.0.0.1"}, "cluster": cluster})


def test_cluster_join_must_be_text(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="cluster.join"):
        _load(tmp_path, yaml_text="cluster:\n  node_id: 4\n  secret: long-enough\n  join: [a]\n",
              flags={"service": {"host": "127.0.0.1"}})
