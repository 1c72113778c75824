"""Settings (flag > env > file > default) and the ``roomcast`` command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

import roomcast
from roomcast.config import Config, ConfigError, load_config
from support import LineClient, free_port, start_node

NO_ENV: dict[str, str] = {}


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}


# defaults -------------------------------------------------------------------------------


def test_defaults_match_the_spec() -> None:
    config = load_config({}, env=NO_ENV)
    assert (config.bind, config.socket_port, config.web_port) == ("127.0.0.1", 5000, 8080)
    assert config.redis_url is None and config.pubsub_url is None
    assert config.actions == [] and config.public is None
    assert config.server_token == "change-me"
    assert config.tls_cert is None and config.tls_key is None
    assert config.log_level == "info"
    assert config.simultaneous_actions == 5
    assert config.socket.max_data_length == 1024 * 1024
    assert config.socket.welcome == "Hello! Welcome to the roomcast api"
    assert config.chat.starting_chat_rooms == ["defaultRoom"]
    assert config.cluster.key_prefix == "roomcast:"
    assert config.cluster.rpc_timeout == 5.0
    assert config.cluster.presence_ttl == 15.0


def test_default_id_is_hostname_and_pid() -> None:
    assert load_config({}, env=NO_ENV).id == f"{socket.gethostname()}-{os.getpid()}"


# precedence -----------------------------------------------------------------------------


def test_file_overrides_default(tmp_path: Path) -> None:
    file = write_toml(tmp_path / "c.toml", 'id = "from-file"\nsocket_port = 6001\n')
    config = load_config({}, env=NO_ENV, config_file=file)
    assert (config.id, config.socket_port) == ("from-file", 6001)


def test_env_overrides_file(tmp_path: Path) -> None:
    file = write_toml(tmp_path / "c.toml", 'id = "from-file"\nsocket_port = 6001\n')
    env = {"ROOMCAST_ID": "from-env", "ROOMCAST_SOCKET_PORT": "6002"}
    config = load_config({}, env=env, config_file=file)
    assert (config.id, config.socket_port) == ("from-env", 6002)


def test_flag_overrides_env(tmp_path: Path) -> None:
    file = write_toml(tmp_path / "c.toml", 'id = "from-file"\n')
    config = load_config({"id": "from-flag"}, env={"ROOMCAST_ID": "from-env"}, config_file=file)
    assert config.id == "from-flag"


def test_unset_flag_does_not_override(tmp_path: Path) -> None:
    config = load_config(
        {"id": None, "socket_port": None}, env={"ROOMCAST_ID": "from-env"}, config_file=None
    )
    assert (config.id, config.socket_port) == ("from-env", 5000)


def test_each_layer_fills_only_what_it_sets(tmp_path: Path) -> None:
    file = write_toml(tmp_path / "c.toml", 'bind = "0.0.0.0"\nweb_port = 7001\n')
    config = load_config(
        {"web_port": 7003}, env={"ROOMCAST_SERVER_TOKEN": "s3cret"}, config_file=file
    )
    assert (config.bind, config.web_port, config.server_token) == ("0.0.0.0", 7003, "s3cret")
    assert config.socket_port == 5000


def test_env_numbers_are_coerced_to_int() -> None:
    config = load_config({}, env={"ROOMCAST_SOCKET_PORT": "0", "ROOMCAST_WEB_PORT": "9"})
    assert (config.socket_port, config.web_port) == (0, 9)


def test_env_actions_split_on_the_path_separator() -> None:
    env = {"ROOMCAST_ACTIONS": os.pathsep.join(["one", "two"])}
    assert load_config({}, env=env).actions == ["one", "two"]


def test_every_flag_has_an_env_variable(tmp_path: Path) -> None:
    # The certificate and key must be real: they are checked when the settings load.
    issued = trustme.CA().issue_cert("127.0.0.1")
    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    env = {
        "ROOMCAST_ID": "n",
        "ROOMCAST_BIND": "0.0.0.0",
        "ROOMCAST_SOCKET_PORT": "1",
        "ROOMCAST_WEB_PORT": "2",
        "ROOMCAST_REDIS_URL": "redis://a",
        "ROOMCAST_PUBSUB_URL": "redis://b",
        "ROOMCAST_ACTIONS": "acts",
        "ROOMCAST_PUBLIC": "pub",
        "ROOMCAST_SERVER_TOKEN": "tok",
        "ROOMCAST_TLS_CERT": cert,
        "ROOMCAST_TLS_KEY": key,
        "ROOMCAST_LOG_LEVEL": "debug",
    }
    config = load_config({}, env=env)
    assert config == Config(
        id="n",
        bind="0.0.0.0",
        socket_port=1,
        web_port=2,
        redis_url="redis://a",
        pubsub_url="redis://b",
        actions=["acts"],
        public="pub",
        server_token="tok",
        tls_cert=cert,
        tls_key=key,
        log_level="debug",
    )


def test_roomcast_config_env_names_the_file(tmp_path: Path) -> None:
    file = write_toml(tmp_path / "c.toml", 'id = "via-env-file"\n')
    assert load_config({}, env={"ROOMCAST_CONFIG": str(file)}).id == "via-env-file"


# the TOML file --------------------------------------------------------------------------


def test_tables_set_the_other_settings(tmp_path: Path) -> None:
    file = write_toml(
        tmp_path / "c.toml",
        textwrap_toml(
            "[socket]",
            "max_data_length = 64",
            'welcome = "hi"',
            "[chat]",
            'starting_chat_rooms = ["a", "b"]',
            "[cluster]",
            'key_prefix = "x:"',
        ),
    )
    config = load_config({}, env=NO_ENV, config_file=file)
    assert (config.socket.max_data_length, config.socket.welcome) == (64, "hi")
    assert config.chat.starting_chat_rooms == ["a", "b"]
    assert config.cluster.key_prefix == "x:"


def test_a_table_keeps_defaults_for_what_it_omits(tmp_path: Path) -> None:
    file = write_toml(tmp_path / "c.toml", "[socket]\nmax_data_length = 64\n")
    config = load_config({}, env=NO_ENV, config_file=file)
    assert config.socket.welcome == "Hello! Welcome to the roomcast api"


def test_unknown_top_level_key_is_an_error(tmp_path: Path) -> None:
    file = write_toml(tmp_path / "c.toml", "colour = 1\n")
    with pytest.raises(ConfigError, match="colour"):
        load_config({}, env=NO_ENV, config_file=file)


def test_unknown_key_in_a_table_is_an_error(tmp_path: Path) -> None:
    file = write_toml(tmp_path / "c.toml", "[socket]\ncolour = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) in \[socket\]: colour"):
        load_config({}, env=NO_ENV, config_file=file)


def test_non_numeric_port_is_an_error() -> None:
    with pytest.raises(ConfigError, match="socket_port must be a number"):
        load_config({}, env={"ROOMCAST_SOCKET_PORT": "lots"})


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[cluster]\nrpc_timeout = 0\n", r"\[cluster\] rpc_timeout must be greater than 0"),
        ("[cluster]\npresence_ttl = -1.5\n", r"\[cluster\] presence_ttl must be greater than 0"),
        ('[cluster]\nwatchdog_interval = "5"\n', r"watchdog_interval must be a number"),
        ("[cluster]\nkey_prefix = 3\n", r"key_prefix must be a string"),
        ("[socket]\nmax_data_length = 1.5\n", r"max_data_length must be a whole number"),
        ("[web]\ncompress = 1\n", r"compress must be true or false"),
        ("[web]\nheartbeat = -1\n", r"heartbeat must be greater than 0 \(or 0 for off\)"),
        ('[chat]\nstarting_chat_rooms = "lobby"\n', r"must be a list of strings"),
    ],
)
def test_a_section_value_of_the_wrong_kind_is_refused(
    tmp_path: Path, toml: str, message: str
) -> None:
    file = write_toml(tmp_path / "c.toml", toml)
    with pytest.raises(ConfigError, match=message):
        load_config({}, env=NO_ENV, config_file=file)


def test_a_zero_heartbeat_turns_pings_off(tmp_path: Path) -> None:
    file = write_toml(tmp_path / "c.toml", "[web]\nheartbeat = 0\n")
    assert load_config({}, env=NO_ENV, config_file=file).web.heartbeat == 0


def textwrap_toml(*lines: str) -> str:
    return "\n".join(lines) + "\n"


# the command line -----------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, env=clean_env())


def test_roomcast_version_prints_the_version() -> None:
    script = Path(sys.executable).parent / "roomcast"
    result = run_cli(str(script), "--version")
    assert (result.returncode, result.stdout) == (0, f"roomcast {roomcast.__version__}\n")


def test_python_m_roomcast_version_prints_the_version() -> None:
    result = run_cli(sys.executable, "-m", "roomcast", "--version")
    assert (result.returncode, result.stdout) == (0, f"roomcast {roomcast.__version__}\n")


def test_version_is_the_distribution_version() -> None:
    from importlib.metadata import version

    assert roomcast.__version__ == version("roomcast")


def test_no_command_prints_help_and_exits_2() -> None:
    result = run_cli(sys.executable, "-m", "roomcast")
    assert result.returncode == 2
    assert "start" in result.stdout


def test_bad_config_file_exits_2_with_the_reason(tmp_path: Path) -> None:
    file = write_toml(tmp_path / "c.toml", "colour = 1\n")
    result = run_cli(sys.executable, "-m", "roomcast", "start", "--config", str(file))
    assert result.returncode == 2
    assert result.stderr.startswith("roomcast: unknown setting 'colour'")


def test_start_applies_flag_over_env_over_file(tmp_path: Path) -> None:
    file_port, env_port = free_port(), free_port()
    file = write_toml(
        tmp_path / "c.toml",
        textwrap_toml(
            f"socket_port = {file_port}",
            'log_level = "error"',
            "[socket]",
            'welcome = "welcome from the file"',
        ),
    )
    # The ready line is logged at info: it only appears if the env's level beats the file's.
    node = start_node(
        "--config",
        str(file),
        web_port=0,
        env={"ROOMCAST_SOCKET_PORT": str(env_port), "ROOMCAST_LOG_LEVEL": "info"},
    )
    try:
        client = LineClient(node.socket_port)  # the --socket-port flag start_node passes
        assert client.read() == {"welcome": "welcome from the file", "context": "api"}
        client.close()
        assert f"roomcast ready {node.node_id} socket={node.socket_port}" in node.log
        for unused in (file_port, env_port):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", unused), timeout=1).close()
    finally:
        assert node.stop() == 0
