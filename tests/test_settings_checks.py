"""Settings checked at start, the ``[limits]`` table, start-time warnings and the
settings reference.

Refusals run a real ``roomcast start``: exit status 2 and one ``roomcast: <reason>``
line on stderr that names the setting.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from roomcast import Api
from roomcast.config import (
    Config,
    ConfigError,
    LimitsSettings,
    SocketSettings,
    WebSettings,
    load_config,
    settings_reference,
    unknown_environment_variables,
)
from support import LOOPBACK, NodeProcess, RedisProcess, free_port, start_node, wait_until

NO_ENV: dict[str, str] = {}

LIMIT_DEFAULTS = {
    "max_rooms_per_connection": 100,
    "room_name_max_length": 255,
    "say_rate": 100,
    "action_rate": 200,
    "max_message_length": 65536,
    "max_connections": 0,
    "max_connections_per_ip": 0,
    "connection_rate": 0,
    "idle_timeout": 0,
    "max_params": 64,
    "max_param_length": 4096,
    "max_rooms": 100000,
    "handshake_timeout": 10,
}
FLOAT_LIMITS = ("say_rate", "action_rate", "connection_rate", "idle_timeout", "handshake_timeout")
WHOLE_LIMITS = tuple(key for key in LIMIT_DEFAULTS if key not in FLOAT_LIMITS)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}


def roomcast_start(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``roomcast start`` on free ports with ``args``; it is expected to exit at once."""
    command = [sys.executable, "-m", "roomcast", "start", "--bind", LOOPBACK]
    command += ["--socket-port", str(free_port()), "--web-port", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, env=clean_env())


def load_toml(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "roomcast.toml"
    path.write_text(text)
    return load_config({}, env=NO_ENV, config_file=path)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate chain and its key, both PEM, issued by a test CA."""
    directory = tmp_path_factory.mktemp("tls")
    issued = trustme.CA().issue_cert(LOOPBACK)
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


# refusals at start, end to end ----------------------------------------------------------


def test_tls_cert_without_tls_key_stops_start(tls_files: tuple[Path, Path]) -> None:
    result = roomcast_start("--tls-cert", str(tls_files[0]))
    assert (result.returncode, result.stderr) == (
        2,
        "roomcast: --tls-cert is set but --tls-key is not: give both, or neither\n",
    )


def test_tls_key_without_tls_cert_stops_start(tls_files: tuple[Path, Path]) -> None:
    result = roomcast_start("--tls-key", str(tls_files[1]))
    assert (result.returncode, result.stderr) == (
        2,
        "roomcast: --tls-key is set but --tls-cert is not: give both, or neither\n",
    )


def test_unknown_log_level_stops_start() -> None:
    result = roomcast_start("--log-level", "verbose")
    assert (result.returncode, result.stderr) == (
        2,
        "roomcast: --log-level must be one of debug, info, warning, error, critical, "
        "not 'verbose'\n",
    )


def test_redis_url_with_another_scheme_stops_start() -> None:
    result = roomcast_start("--redis-url", "http://127.0.0.1:6379/0")
    assert (result.returncode, result.stderr) == (
        2,
        "roomcast: --redis-url must be a redis://, rediss:// or unix:// URL, not http://…\n",
    )


def test_pubsub_url_with_another_scheme_stops_start() -> None:
    result = roomcast_start("--redis-url", "redis://127.0.0.1:1/0", "--pubsub-url", "amqp://x")
    assert (result.returncode, result.stderr) == (
        2,
        "roomcast: --pubsub-url must be a redis://, rediss:// or unix:// URL, not amqp://…\n",
    )


def test_redis_url_without_a_scheme_stops_start() -> None:
    result = roomcast_start("--redis-url", "127.0.0.1:6379")
    assert (result.returncode, result.stderr) == (
        2,
        "roomcast: --redis-url must be a redis://, rediss:// or unix:// URL; it has no scheme\n",
    )


def test_missing_certificate_file_stops_start_naming_setting_and_path(
    tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "none.pem"
    result = roomcast_start("--tls-cert", str(missing), "--tls-key", str(tls_files[1]))
    assert (result.returncode, result.stderr) == (
        2,
        f"roomcast: cannot read the --tls-cert file '{missing}': No such file or directory\n",
    )


def test_unreadable_key_file_stops_start_naming_setting_and_path(
    tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    # A directory cannot be read as a file, even by root.
    result = roomcast_start("--tls-cert", str(tls_files[0]), "--tls-key", str(tmp_path))
    assert (result.returncode, result.stderr) == (
        2,
        f"roomcast: cannot read the --tls-key file '{tmp_path}': Is a directory\n",
    )


def test_files_that_are_not_pem_stop_start_naming_both_settings(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    result = roomcast_start("--tls-cert", str(cert), "--tls-key", str(key))
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"roomcast: --tls-cert '{cert}' and --tls-key '{key}' are not a PEM certificate chain"
    )


def test_a_key_of_another_certificate_stops_start(
    tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    other_key = tmp_path / "other.key"
    trustme.CA().issue_cert(LOOPBACK).private_key_pem.write_to_path(str(other_key))
    result = roomcast_start("--tls-cert", str(tls_files[0]), "--tls-key", str(other_key))
    assert result.returncode == 2
    assert result.stderr.startswith(f"roomcast: --tls-cert '{tls_files[0]}' and --tls-key")


def test_a_bad_setting_from_the_environment_stops_start_too() -> None:
    command = [sys.executable, "-m", "roomcast", "start", "--socket-port", "0", "--web-port", "0"]
    env = {**clean_env(), "ROOMCAST_TLS_CERT": "cert.pem"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)
    assert (result.returncode, result.stderr) == (
        2,
        "roomcast: --tls-cert is set but --tls-key is not: give both, or neither\n",
    )


# the same checks in code ----------------------------------------------------------------


async def test_api_start_refuses_a_tls_cert_without_a_key() -> None:
    api = Api(Config(socket_port=0, web_port=0, tls_cert="cert.pem"))
    with pytest.raises(ConfigError, match="--tls-cert is set but --tls-key is not"):
        await api.start()
    await api.stop()


def test_load_config_refuses_an_unknown_log_level() -> None:
    with pytest.raises(ConfigError, match="--log-level must be one of"):
        load_config({"log_level": "loud"}, env=NO_ENV)


@pytest.mark.parametrize("level", ["DEBUG", "Warning", "critical"])
def test_log_level_is_case_insensitive(level: str) -> None:
    assert load_config({"log_level": level}, env=NO_ENV).log_level == level


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://h:6380/1", "unix:///tmp/redis.sock"]
)
def test_redis_unix_and_rediss_urls_are_accepted(url: str) -> None:
    assert load_config({"redis_url": url, "pubsub_url": url}, env=NO_ENV).pubsub_url == url


def test_a_refused_redis_url_does_not_show_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({"redis_url": "https://:hunter2@redis.example.com/0"}, env=NO_ENV)
    assert "hunter2" not in str(refused.value)


def test_certificate_and_key_that_match_are_accepted(tls_files: tuple[Path, Path]) -> None:
    cert, key = map(str, tls_files)
    config = load_config({"tls_cert": cert, "tls_key": key}, env=NO_ENV)
    assert (config.tls_cert, config.tls_key) == (cert, key)


# [limits] -------------------------------------------------------------------------------


def test_limits_defaults_match_the_spec() -> None:
    limits = load_config({}, env=NO_ENV).limits
    assert dataclasses.asdict(limits) == LIMIT_DEFAULTS


def test_limits_table_has_exactly_the_spec_keys() -> None:
    assert [f.name for f in dataclasses.fields(LimitsSettings)] == list(LIMIT_DEFAULTS)


def test_limits_table_sets_the_limits(tmp_path: Path) -> None:
    config = load_toml(tmp_path, "[limits]\nmax_rooms = 10\nsay_rate = 2.5\nidle_timeout = 30\n")
    assert (config.limits.max_rooms, config.limits.say_rate, config.limits.idle_timeout) == (
        10,
        2.5,
        30.0,
    )


@pytest.mark.parametrize("key", list(LIMIT_DEFAULTS))
def test_zero_is_accepted_for_every_limit(tmp_path: Path, key: str) -> None:
    assert getattr(load_toml(tmp_path, f"[limits]\n{key} = 0\n").limits, key) == 0


@pytest.mark.parametrize("key", list(LIMIT_DEFAULTS))
def test_a_negative_limit_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"\[limits\] {key} must be greater than 0 \(or 0 for off\), not -1"
    ):
        load_toml(tmp_path, f"[limits]\n{key} = -1\n")


@pytest.mark.parametrize("key", FLOAT_LIMITS)
def test_rates_and_timeouts_accept_fractions(tmp_path: Path, key: str) -> None:
    assert getattr(load_toml(tmp_path, f"[limits]\n{key} = 0.5\n").limits, key) == 0.5


@pytest.mark.parametrize("key", FLOAT_LIMITS)
def test_a_whole_rate_or_timeout_is_kept_as_a_float(tmp_path: Path, key: str) -> None:
    assert type(getattr(load_toml(tmp_path, f"[limits]\n{key} = 3\n").limits, key)) is float


@pytest.mark.parametrize("key", WHOLE_LIMITS)
def test_counts_and_sizes_refuse_fractions(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[limits\] {key} must be a whole number"):
        load_toml(tmp_path, f"[limits]\n{key} = 1.5\n")


def test_a_limit_that_is_not_a_number_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[limits\] say_rate must be a number, not 'fast'"):
        load_toml(tmp_path, '[limits]\nsay_rate = "fast"\n')


def test_an_unknown_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) in \[limits\]: max_users"):
        load_toml(tmp_path, "[limits]\nmax_users = 3\n")


# [socket] and [web] write_delay ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-5", "must be greater than 0 (or 0 for off), not -5"),
        ('"soon"', "must be a number, not 'soon'"),
        ("1000.5", "must be from 0 (off) to 1000 milliseconds, not 1000.5"),
        ("nan", "must be a number of milliseconds, not nan"),
    ],
)
@pytest.mark.parametrize("table", ["socket", "web"])
def test_a_write_delay_that_is_not_0_to_1000_ms_stops_start(
    tmp_path: Path, table: str, value: str, reason: str
) -> None:
    settings = tmp_path / "roomcast.toml"
    settings.write_text(f"[{table}]\nwrite_delay = {value}\n")
    result = roomcast_start("--config", str(settings))
    assert (result.returncode, result.stderr) == (2, f"roomcast: [{table}] write_delay {reason}\n")


def test_write_delays_default_to_off() -> None:
    config = load_config({}, env=NO_ENV)
    assert (config.socket.write_delay, config.web.write_delay) == (0, 0)


def test_write_delays_accept_whole_and_fractional_milliseconds(tmp_path: Path) -> None:
    config = load_toml(tmp_path, "[socket]\nwrite_delay = 20\n[web]\nwrite_delay = 2.5\n")
    assert (config.socket.write_delay, config.web.write_delay) == (20.0, 2.5)
    assert isinstance(config.socket.write_delay, float)
    assert load_toml(tmp_path, "[web]\nwrite_delay = 1000\n").web.write_delay == 1000


@pytest.mark.parametrize("delay", [-1.0, 1001.0, float("inf")])
async def test_api_start_refuses_a_write_delay_out_of_range(delay: float) -> None:
    api = Api(Config(socket_port=0, web_port=0, socket=SocketSettings(write_delay=delay)))
    with pytest.raises(ConfigError, match=r"\[socket\] write_delay must be from 0 \(off\) to 1000"):
        await api.start()
    await api.stop()


async def test_api_start_refuses_a_write_delay_that_is_not_a_number() -> None:
    api = Api(Config(socket_port=0, web_port=0, web=WebSettings(write_delay="5")))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\[web\] write_delay must be a number of milliseconds"):
        await api.start()
    await api.stop()


# [web] allowed_origins and send buffers -------------------------------------------------


def test_send_buffer_limits_default_to_one_mebibyte() -> None:
    config = load_config({}, env=NO_ENV)
    assert (config.socket.send_buffer_limit, config.web.send_buffer_limit) == (1048576, 1048576)


def test_allowed_origins_default_to_none_listed() -> None:
    assert load_config({}, env=NO_ENV).web.allowed_origins == []


def test_allowed_origins_are_read_from_the_web_table(tmp_path: Path) -> None:
    config = load_toml(
        tmp_path, '[web]\nallowed_origins = ["https://app.example.com", "http://127.0.0.1:8080"]\n'
    )
    assert config.web.allowed_origins == ["https://app.example.com", "http://127.0.0.1:8080"]


@pytest.mark.parametrize(
    "origin", ["https://app.example.com/", "app.example.com", "https://a.example/chat", "*"]
)
def test_an_allowed_origin_that_is_not_an_origin_is_refused(tmp_path: Path, origin: str) -> None:
    with pytest.raises(ConfigError, match=r"\[web\] allowed_origins: .* is not an origin"):
        load_toml(tmp_path, f"[web]\nallowed_origins = [{json.dumps(origin)}]\n")


# warnings at start ----------------------------------------------------------------------


def test_unknown_roomcast_variables_are_listed() -> None:
    env = {"ROOMCAST_CONFIG": "c.toml", "ROOMCAST_SOCKET_PORT": "1", "ROOMCAST_SOKET_PORT": "1"}
    assert unknown_environment_variables(env) == ["ROOMCAST_SOKET_PORT"]


def test_an_unknown_roomcast_variable_is_warned_about_and_the_node_starts() -> None:
    node = start_node(env={"ROOMCAST_SOKET_PORT": "6000"})
    try:
        assert (
            "WARNING roomcast: unknown environment variable ROOMCAST_SOKET_PORT is ignored "
            "(did you mean ROOMCAST_SOCKET_PORT?)"
        ) in node.log
    finally:
        assert node.stop() == 0


def test_known_roomcast_variables_are_not_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("")
    node = start_node(env={"ROOMCAST_CONFIG": str(config), "ROOMCAST_SERVER_TOKEN": "s"})
    try:
        assert "unknown environment variable" not in node.log
    finally:
        assert node.stop() == 0


DEFAULT_TOKEN_WARNING = "--server-token is still the default 'change-me' on a real Redis"


def test_default_token_on_a_real_redis_logs_a_warning(redis_server: RedisProcess) -> None:
    node = start_node("--redis-url", redis_server.url)
    try:
        assert f"WARNING roomcast: {DEFAULT_TOKEN_WARNING}" in node.log
    finally:
        assert node.stop() == 0


def test_own_token_on_a_real_redis_logs_no_token_warning(redis_server: RedisProcess) -> None:
    node = start_node("--redis-url", redis_server.url, "--server-token", "our-secret")
    try:
        assert DEFAULT_TOKEN_WARNING not in node.log
    finally:
        assert node.stop() == 0


def test_default_token_on_the_embedded_store_logs_no_token_warning(node: NodeProcess) -> None:
    assert DEFAULT_TOKEN_WARNING not in node.log


# the open-file limit --------------------------------------------------------------------


def open_file_limits(pid: int) -> tuple[int, int]:
    """Soft and hard RLIMIT_NOFILE of process ``pid``, read from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-file limit for {pid}")


@pytest.fixture
def node_with_low_file_limit() -> Iterator[tuple[NodeProcess, int]]:
    """A node started with its open-file soft limit below the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if not Path("/proc/self/limits").exists() or hard == resource.RLIM_INFINITY or hard < 257:
        pytest.skip("needs /proc and a finite hard open-file limit above 256")
    lowered = min(256, soft)

    def lower_the_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))

    socket_port = free_port()
    node_id = f"node-{socket_port}"
    log_path = Path(tempfile.mkdtemp(prefix="roomcast-test-")) / f"{node_id}.log"
    args = [sys.executable, "-m", "roomcast", "start", "--id", node_id, "--bind", LOOPBACK]
    args += ["--socket-port", str(socket_port), "--web-port", "0"]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            start_new_session=True,
            preexec_fn=lower_the_soft_limit,
        )
    node = NodeProcess(process, node_id, socket_port, 0, log_path, args)
    try:
        wait_until(lambda: "roomcast ready" in node.log, 20, message=f"{node_id} ready")
        yield node, hard
    finally:
        node.stop()


def test_a_node_raises_its_open_file_soft_limit_to_the_hard_limit(
    node_with_low_file_limit: tuple[NodeProcess, int],
) -> None:
    node, hard = node_with_low_file_limit
    assert open_file_limits(node.pid) == (hard, hard)


# the settings reference -----------------------------------------------------------------


def test_every_setting_in_the_reference_has_a_description() -> None:
    undescribed = [f"[{s.table}] {s.key}" for s in settings_reference() if not s.help.strip()]
    assert undescribed == []


def test_every_settings_field_has_a_description() -> None:
    classes = [Config, *(type(getattr(Config(), f.name)) for f in dataclasses.fields(Config))]
    settings = [c for c in classes if isinstance(c, type) and dataclasses.is_dataclass(c)]
    undescribed = [
        f"{cls.__name__}.{item.name}"
        for cls in settings
        for item in dataclasses.fields(cls)
        if not str(item.metadata.get("help", "")).strip()
    ]
    assert undescribed == []


def test_the_reference_names_flags_and_variables_of_top_level_settings() -> None:
    by_key = {(s.table, s.key): s for s in settings_reference()}
    port = by_key[("", "socket_port")]
    assert (port.flag, port.env, port.default) == ("--socket-port", "ROOMCAST_SOCKET_PORT", 5000)
    rate = by_key[("limits", "say_rate")]
    assert (rate.flag, rate.env, rate.default) == (None, None, 100)


def test_the_reference_lists_every_key_the_toml_file_accepts(tmp_path: Path) -> None:
    # Writing every listed default back as a TOML file loads without error, to the defaults.
    lines: dict[str, list[str]] = {}
    for setting in settings_reference():
        if setting.default is not None and setting.key != "id":
            lines.setdefault(setting.table, []).append(
                f"{setting.key} = {json.dumps(setting.default)}"
            )
    text = "\n".join(lines.pop(""))
    text += "".join(f"\n[{table}]\n" + "\n".join(keys) for table, keys in lines.items())
    config = load_toml(tmp_path, text)
    assert dataclasses.replace(config, id="x") == Config(id="x")


def test_start_help_shows_each_flag_description() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "roomcast", "start", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
    )
    help_text = " ".join(result.stdout.split())
    for setting in settings_reference():
        if setting.flag is not None:
            assert f"{setting.flag} " in help_text
            assert " ".join(setting.help.split()) in help_text
