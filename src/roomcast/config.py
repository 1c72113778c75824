"""Settings of a node: defaults, a TOML file, ``ROOMCAST_*`` variables and CLI flags.

Precedence is flag > environment > file > default. In the TOML file the flags are
top-level keys with underscores; the other settings live in the ``[chat]``, ``[socket]``,
``[web]``, ``[cluster]``, ``[limits]`` and ``[auth]`` tables. Each setting's description is in its
field's metadata, so :func:`settings_reference` (and the CLI help) cannot drift from it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import socket
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from roomcast.protocol.forwarded import parse_trusted

DEFAULT_WELCOME = "Hello! Welcome to the roomcast api"
DEFAULT_SERVER_TOKEN = "change-me"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
REDIS_SCHEMES = ("redis", "rediss", "unix")


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _about(
    text: str, *, off_at_zero: bool = False, shown_default: str | None = None
) -> dict[str, Any]:
    """Field metadata: the setting's description, whether 0 turns it off, how to show
    a default that is computed at start."""
    return {"help": text, "off_at_zero": off_at_zero, "shown_default": shown_default}


@dataclass
class ChatSettings:
    starting_chat_rooms: list[str] = field(
        default_factory=lambda: ["defaultRoom"], metadata=_about("rooms created at start")
    )
    history_size: int = field(
        default=0,
        metadata=_about(
            "messages kept per room (in Redis, or the embedded store) for roomHistory and "
            "recovery on join",
            off_at_zero=True,
        ),
    )
    history_ttl: float = field(
        default=300.0,
        metadata=_about("seconds a room's history lives after its last message"),
    )
    history_rooms: list[str] = field(
        default_factory=lambda: ["*"],
        metadata=_about("glob patterns (fnmatch) of the rooms that keep history"),
    )
    presence_events: bool = field(
        default=False,
        metadata=_about("tell every member of a room when a connection joins or leaves it"),
    )


@dataclass
class SocketSettings:
    welcome: str = field(
        default=DEFAULT_WELCOME,
        metadata=_about("welcome message sent to every TCP and WebSocket client"),
    )
    max_data_length: int = field(
        default=1 << 20,
        metadata=_about("longest TCP line accepted, in bytes; a longer one is refused"),
    )
    send_buffer_limit: int = field(
        default=1 << 20,
        metadata=_about("bytes a TCP client may leave unread before it is disconnected"),
    )
    write_delay: float = field(
        default=0.0,
        metadata=_about(
            "milliseconds (at most 1000) a TCP client's outgoing messages may be held, so "
            "that those queued meanwhile leave in one write: fewer writes, more latency",
            off_at_zero=True,
        ),
    )


@dataclass
class WebSettings:
    heartbeat: float = field(
        default=15.0,
        metadata=_about(
            "seconds between WebSocket pings; a peer that misses a pong is dropped",
            off_at_zero=True,
        ),
    )
    max_message_size: int = field(
        default=1 << 20,
        metadata=_about("largest WebSocket message or HTTP request body, in bytes"),
    )
    send_buffer_limit: int = field(
        default=1 << 20,
        metadata=_about("bytes a WebSocket client may leave unread before it is disconnected"),
    )
    write_delay: float = field(
        default=0.0,
        metadata=_about(
            "milliseconds (at most 1000) a WebSocket client's outgoing frames may be held, "
            "so that those queued meanwhile leave in one write: fewer writes, more latency",
            off_at_zero=True,
        ),
    )
    compress: bool = field(
        default=False,
        metadata=_about(
            "permessage-deflate; off by default so one pre-framed message serves every member"
        ),
    )
    allowed_origins: list[str] = field(
        default_factory=list,
        metadata=_about(
            'origins (such as "https://app.example.com") allowed to open a WebSocket or '
            "call the HTTP port from a browser; others get 403; [] allows any"
        ),
    )
    trusted_proxies: list[str] = field(
        default_factory=list,
        metadata=_about(
            'reverse proxies (IPs or CIDRs such as "10.0.0.0/8") whose X-Forwarded-For '
            "header names the client: a client's address is then the right-most entry that "
            "is not one of them; [] uses the TCP peer's address"
        ),
    )


@dataclass
class ClusterSettings:
    key_prefix: str = field(
        default="roomcast:", metadata=_about("start of every Redis key and channel name")
    )
    rpc_timeout: float = field(
        default=5.0,
        metadata=_about("seconds a call to another node may take before it fails"),
    )
    presence_ttl: float = field(
        default=15.0,
        metadata=_about("seconds after a node's last heartbeat before its members are reaped"),
    )
    watchdog_interval: float = field(
        default=5.0,
        metadata=_about("seconds between pub/sub self-pings that detect a lost subscription"),
    )


def _limit(default: Any, text: str) -> Any:
    return field(default=default, metadata=_about(text, off_at_zero=True))


@dataclass
class LimitsSettings:
    """What one client, one address or the cluster may use; 0 turns a limit off."""

    max_rooms_per_connection: int = _limit(100, "rooms one connection may be in")
    room_name_max_length: int = _limit(255, "longest room name, in bytes of UTF-8")
    say_rate: float = _limit(100.0, "says per second per connection (bursts of twice that)")
    action_rate: float = _limit(
        200.0, "actions per second per connection, on every transport but HTTP"
    )
    max_message_length: int = _limit(65536, "bytes of a say's message once JSON-encoded")
    max_connections: int = _limit(0, "persistent connections per node")
    max_connections_per_ip: int = _limit(0, "persistent connections per remote address")
    connection_rate: float = _limit(0.0, "new persistent connections per second per node")
    idle_timeout: float = _limit(
        0.0, "seconds without a byte from a TCP client before it is closed"
    )
    max_params: int = _limit(64, "sticky params per connection")
    max_param_length: int = _limit(4096, "bytes of one param value once JSON-encoded")
    max_rooms: int = _limit(100000, "rooms in the whole cluster")
    handshake_timeout: float = _limit(
        10.0,
        "seconds a web-port connection may take to send its first complete request head",
    )


@dataclass
class AuthSettings:
    """Signed tokens (JWT): who a client is, and which private rooms it may join."""

    jwt_secret: str = field(
        default="",
        metadata=_about("shared secret that checks HS256 tokens (at least 32 bytes); empty: none"),
    )
    jwt_public_key: str = field(
        default="",
        metadata=_about(
            "PEM file of the public key (or certificate) that checks RS256 (RSA) or ES256 "
            "(P-256) tokens; read once at start; empty: none"
        ),
    )
    audience: str = field(
        default="",
        metadata=_about("when set, a token's aud claim must name it; empty: aud is not checked"),
    )
    private_rooms: list[str] = field(
        default_factory=list,
        metadata=_about(
            'globs (such as "team-*") of rooms whose joiners need a token whose rooms claim '
            "holds a glob matching the room"
        ),
    )
    required: bool = field(
        default=False,
        metadata=_about("when true, a client without a valid token may not join or say"),
    )


@dataclass
class Config:
    """Every setting of a node; build one directly in code or with :func:`load_config`."""

    id: str = field(
        default_factory=default_node_id,
        metadata=_about(
            "node id (api.id), stored as each member's host", shown_default="<hostname>-<pid>"
        ),
    )
    bind: str = field(default="127.0.0.1", metadata=_about("address of every listener"))
    socket_port: int = field(
        default=5000, metadata=_about("TCP line-protocol port; 0 disables the TCP server")
    )
    web_port: int = field(
        default=8080, metadata=_about("HTTP + WebSocket port; 0 disables the web server")
    )
    redis_url: str | None = field(
        default=None,
        metadata=_about(
            "key-store Redis (redis://, rediss:// or unix://); none: an embedded in-memory "
            "store, one node only"
        ),
    )
    pubsub_url: str | None = field(
        default=None,
        metadata=_about("pub/sub Redis, when it is not the key store (default: redis_url)"),
    )
    redis_cluster: bool = field(
        default=False,
        metadata=_about(
            "redis_url (and pubsub_url) is a seed node of a Redis Cluster (Redis 7 or newer): "
            "hash-tagged keys, sharded pub/sub"
        ),
    )
    actions: list[str] = field(
        default_factory=list,
        metadata=_about("directory of Python modules defining actions (repeatable)"),
    )
    public: str | None = field(
        default=None,
        metadata=_about("directory served as static files (file verb and HTTP)"),
    )
    server_token: str = field(
        default=DEFAULT_SERVER_TOKEN,
        metadata=_about("shared cluster secret; set your own on a real Redis"),
    )
    tls_cert: str | None = field(
        default=None,
        metadata=_about("PEM certificate chain; with tls_key the node speaks TLS"),
    )
    tls_key: str | None = field(
        default=None, metadata=_about("PEM private key of tls_cert (not encrypted)")
    )
    log_level: str = field(
        default="info", metadata=_about("debug, info, warning, error or critical")
    )
    log_format: str = field(
        default="text",
        metadata=_about(
            "text, or json: one JSON object a line (time, level, logger, message, node)"
        ),
    )
    workers: int = field(
        default=1,
        metadata=_about(
            "node processes sharing the listening ports (SO_REUSEPORT), ids <id>-1 … <id>-N; "
            "more than 1 needs redis_url"
        ),
    )
    simultaneous_actions: int = field(
        default=5,
        metadata=_about("pending actions per connection; more are refused"),
    )
    shutdown_timeout: float = field(
        default=10.0,
        metadata=_about("seconds graceful shutdown waits for pending actions"),
    )
    chat: ChatSettings = field(
        default_factory=ChatSettings, metadata=_about("the [chat] table: chat rooms")
    )
    socket: SocketSettings = field(
        default_factory=SocketSettings, metadata=_about("the [socket] table: the TCP server")
    )
    web: WebSettings = field(
        default_factory=WebSettings,
        metadata=_about("the [web] table: the HTTP + WebSocket server"),
    )
    cluster: ClusterSettings = field(
        default_factory=ClusterSettings,
        metadata=_about("the [cluster] table: nodes sharing a Redis"),
    )
    limits: LimitsSettings = field(
        default_factory=LimitsSettings,
        metadata=_about("the [limits] table: what clients may use; 0 turns a limit off"),
    )
    auth: AuthSettings = field(
        default_factory=AuthSettings,
        metadata=_about("the [auth] table: signed tokens and private rooms"),
    )


#: The settings that are also CLI flags and ``ROOMCAST_*`` variables.
FLAGS = (
    "id",
    "bind",
    "socket_port",
    "web_port",
    "redis_url",
    "pubsub_url",
    "redis_cluster",
    "actions",
    "public",
    "server_token",
    "tls_cert",
    "tls_key",
    "log_level",
    "log_format",
    "workers",
)
_SECTIONS: dict[str, type[Any]] = {
    "chat": ChatSettings,
    "socket": SocketSettings,
    "web": WebSettings,
    "cluster": ClusterSettings,
    "limits": LimitsSettings,
    "auth": AuthSettings,
}
#: Every ``ROOMCAST_*`` variable a node reads.
KNOWN_ENVIRONMENT = frozenset({"ROOMCAST_CONFIG", *(f"ROOMCAST_{n.upper()}" for n in FLAGS)})


#: The longest ``write_delay``, in milliseconds: past it a client would see its messages
#: late, not just batched.
MAX_WRITE_DELAY = 1000
WORKERS_NEED_REDIS = "--workers > 1 needs --redis-url (workers share rooms through Redis)"
CLUSTER_NEEDS_REDIS = "--redis-cluster needs --redis-url (a seed node of the Redis Cluster)"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting the node cannot start with; the message names the setting."""


@dataclass(frozen=True)
class SettingInfo:
    """One setting, as a configuration reference shows it."""

    #: TOML table holding the key, ``""`` for a top-level key.
    table: str
    key: str
    #: Command-line flag such as ``--socket-port``, or None.
    flag: str | None
    #: Environment variable such as ``ROOMCAST_SOCKET_PORT``, or None.
    env: str | None
    default: Any
    help: str


def settings_reference() -> list[SettingInfo]:
    """Every setting a node reads (top-level keys first, then each table's), with its
    flag, environment variable, default and description."""
    reference = [_setting_info("", item) for item in dataclasses.fields(Config)]
    reference = [info for info in reference if info.key not in _SECTIONS]
    for table, cls in _SECTIONS.items():
        reference.extend(_setting_info(table, item) for item in dataclasses.fields(cls))
    return reference


def _setting_info(table: str, item: dataclasses.Field[Any]) -> SettingInfo:
    is_flag = not table and item.name in FLAGS
    text = item.metadata.get("help", "")
    if text and item.metadata.get("off_at_zero"):
        text += "; 0 turns it off"
    return SettingInfo(
        table=table,
        key=item.name,
        flag=f"--{item.name.replace('_', '-')}" if is_flag else None,
        env=f"ROOMCAST_{item.name.upper()}" if is_flag else None,
        default=_default_of(item),
        help=text,
    )


def _default_of(item: dataclasses.Field[Any]) -> Any:
    shown = item.metadata.get("shown_default")
    if shown is not None:
        return shown
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return None


def unknown_environment_variables(env: Mapping[str, str]) -> list[str]:
    """``ROOMCAST_*`` names in ``env`` that no setting reads, sorted; warn about each."""
    return sorted(
        name for name in env if name.startswith("ROOMCAST_") and name not in KNOWN_ENVIRONMENT
    )


def closest_environment_variable(name: str) -> str | None:
    """The known ``ROOMCAST_*`` name ``name`` is most likely a typo of, if any."""
    matches = difflib.get_close_matches(name, sorted(KNOWN_ENVIRONMENT), n=1, cutoff=0.8)
    return matches[0] if matches else None


def load_config(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Config:
    """Merge defaults, ``config_file``, ``env`` (``ROOMCAST_*``) and ``flags`` (non-None).

    Raises :class:`ConfigError` naming the setting when a value is unknown, of the wrong
    kind, or one the node cannot start with (see :func:`validate`).
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    if config_file is None and env.get("ROOMCAST_CONFIG"):
        config_file = env["ROOMCAST_CONFIG"]
    if config_file is not None:
        with open(config_file, "rb") as handle:
            data = tomllib.load(handle)
        for key, value in data.items():
            if key in _SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(f"[{key}] must be a table")
                sections[key] = value
            elif key in _TOP_LEVEL:
                values[key] = value
            else:
                raise ConfigError(f"unknown setting {key!r} in {config_file}")
    for name in FLAGS:
        raw = env.get(f"ROOMCAST_{name.upper()}")
        if raw is not None:
            values[name] = raw.split(os.pathsep) if name == "actions" else raw
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = value
    config = Config(**{k: _coerce(k, v) for k, v in values.items()})
    for name, table in sections.items():
        setattr(config, name, _load_table(name, table))
    validate(config)
    return config


def _load_table(name: str, table: Mapping[str, Any]) -> Any:
    cls = _SECTIONS[name]
    fields = {item.name: item for item in dataclasses.fields(cls)}
    unknown = set(table) - set(fields)
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{name}]: {', '.join(sorted(unknown))}")
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in table.items():
        default = getattr(defaults, key)
        zero_ok = bool(fields[key].metadata.get("off_at_zero"))
        _check_setting(f"[{name}] {key}", default, value, zero_ok=zero_ok)
        # A whole number where a float is expected (``say_rate = 50``) is kept as a float.
        is_float = isinstance(default, float) and not isinstance(value, bool)
        values[key] = float(value) if is_float else value
    return cls(**values)


def _check_setting(where: str, default: Any, value: Any, *, zero_ok: bool) -> None:
    """Refuse a value of the wrong type, or a count or duration that is not positive."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
    elif isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        if isinstance(default, int) and not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number, not {value!r}")
        if value < 0 or (value == 0 and not zero_ok):
            off = " (or 0 for off)" if zero_ok else ""
            raise ConfigError(f"{where} must be greater than 0{off}, not {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {value!r}")
    elif isinstance(default, list) and (
        not isinstance(value, list) or not all(isinstance(v, str) for v in value)
    ):
        raise ConfigError(f"{where} must be a list of strings, not {value!r}")


_TOP_LEVEL = {f.name for f in dataclasses.fields(Config)} - set(_SECTIONS)
_INTS = {"socket_port", "web_port", "simultaneous_actions", "workers"}


def _coerce(name: str, value: Any) -> Any:
    try:
        if name in _INTS:
            return int(value)
        if name == "shutdown_timeout":
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, not {value!r}") from None
    if name == "actions" and isinstance(value, str):
        return [value]
    if name == "redis_cluster":
        return _boolean(name, value)
    return value


def _boolean(name: str, value: Any) -> bool:
    """A bool from TOML, or a flag's or variable's text (1/0, true/false, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false (1 or 0), not {value!r}")


# checks at start ------------------------------------------------------------------------


def validate(config: Config) -> list[str]:
    """Check the settings a node cannot safely start with.

    Raises :class:`ConfigError` naming the first such setting (never fall back to
    plaintext or to a default instead); returns warnings the caller should log.
    """
    level = config.log_level
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    if config.log_format not in LOG_FORMATS:
        raise ConfigError(f"--log-format must be text or json, not {config.log_format!r}")
    _check_redis_url("--redis-url", config.redis_url)
    _check_redis_url("--pubsub-url", config.pubsub_url)
    _check_tls(config.tls_cert, config.tls_key)
    for origin in config.web.allowed_origins:
        _check_origin(origin)
    try:
        parse_trusted(config.web.trusted_proxies)
    except ValueError as error:
        raise ConfigError(f"[web] trusted_proxies: {error}") from None
    _check_write_delay("[socket] write_delay", config.socket.write_delay)
    _check_write_delay("[web] write_delay", config.web.write_delay)
    if not isinstance(config.workers, int) or config.workers < 1:
        raise ConfigError(f"--workers must be 1 or more, not {config.workers!r}")
    if config.workers > 1 and config.redis_url is None:
        raise ConfigError(WORKERS_NEED_REDIS)
    if config.redis_cluster:
        _check_cluster(config)
    warnings = _check_auth(config.auth)
    if config.redis_url is not None and config.server_token == DEFAULT_SERVER_TOKEN:
        warnings.append(
            f"--server-token is still the default {DEFAULT_SERVER_TOKEN!r} on a real Redis: "
            "anyone who can reach that Redis can speak for this cluster; give every node "
            "the same secret token"
        )
    return warnings


def _check_write_delay(setting: str, delay: Any) -> None:
    """A number of milliseconds from 0 to :data:`MAX_WRITE_DELAY` (a ``Config`` built in
    code has not been through the TOML table's checks)."""
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay != delay:
        raise ConfigError(f"{setting} must be a number of milliseconds, not {delay!r}")
    if not 0 <= delay <= MAX_WRITE_DELAY:
        raise ConfigError(
            f"{setting} must be from 0 (off) to {MAX_WRITE_DELAY} milliseconds, not {delay:g}"
        )


def _check_cluster(config: Config) -> None:
    if config.redis_url is None:
        raise ConfigError(CLUSTER_NEEDS_REDIS)
    for setting, url in (("--redis-url", config.redis_url), ("--pubsub-url", config.pubsub_url)):
        if url is None:
            continue
        scheme = url.partition("://")[0]
        if scheme.lower() == "unix":
            raise ConfigError(f"--redis-cluster needs {setting} to be redis:// or rediss://")
        database = urlsplit(url).path.strip("/")
        if database not in ("", "0"):
            raise ConfigError(
                f"--redis-cluster: {setting} names database {database!r}; "
                "a Redis Cluster has only database 0"
            )
    prefix = config.cluster.key_prefix
    if "{" in prefix or "}" in prefix:
        raise ConfigError(
            f"[cluster] key_prefix {prefix!r} may not contain braces with --redis-cluster "
            "(they would become the hash tag of every key)"
        )


def _check_redis_url(setting: str, url: str | None) -> None:
    if url is None:
        return
    scheme, has_scheme, _ = url.partition("://")
    if not has_scheme:
        raise ConfigError(
            f"{setting} must be a redis://, rediss:// or unix:// URL; it has no scheme"
        )
    if scheme.lower() not in REDIS_SCHEMES:
        # Only the scheme is shown: the rest of the URL may hold a password.
        raise ConfigError(
            f"{setting} must be a redis://, rediss:// or unix:// URL, not {scheme}://…"
        )


def _check_tls(cert: str | None, key: str | None) -> None:
    if cert and not key:
        raise ConfigError("--tls-cert is set but --tls-key is not: give both, or neither")
    if key and not cert:
        raise ConfigError("--tls-key is set but --tls-cert is not: give both, or neither")
    if not (cert and key):
        return
    for setting, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigError(f"cannot read the {setting} file {path!r}: {reason}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An empty password makes an encrypted key fail here instead of prompting later.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(
            f"--tls-cert {cert!r} and --tls-key {key!r} are not a PEM certificate chain "
            f"and its unencrypted private key: {error}"
        ) from None


#: Fewer bytes than this in an HS256 secret can be guessed offline from one token.
MIN_SECRET_BYTES = 32


def _check_auth(auth: AuthSettings) -> list[str]:
    """Refuse [auth] settings no token could pass; return warnings about weak ones."""
    if auth.jwt_public_key:
        from roomcast.auth import load_public_key  # PyJWT and cryptography: only when used

        path = auth.jwt_public_key
        try:
            load_public_key(path)
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigError(
                f"cannot read the [auth] jwt_public_key file {path!r}: {reason}"
            ) from None
        except ValueError as error:
            raise ConfigError(f"[auth] jwt_public_key {path!r}: {error}") from None
    has_key = bool(auth.jwt_secret or auth.jwt_public_key)
    if auth.required and not has_key:
        raise ConfigError(
            "[auth] required = true needs jwt_secret or jwt_public_key to check tokens with"
        )
    if auth.private_rooms and not has_key:
        raise ConfigError(
            "[auth] private_rooms needs jwt_secret or jwt_public_key: without one nobody "
            "could join them"
        )
    warnings = []
    if auth.jwt_secret and len(auth.jwt_secret.encode()) < MIN_SECRET_BYTES:
        warnings.append(
            f"[auth] jwt_secret is shorter than {MIN_SECRET_BYTES} bytes: a token signed "
            "with it can be brute-forced offline; use a long random secret"
        )
    return warnings


def _check_origin(origin: str) -> None:
    if not _is_origin(origin):
        raise ConfigError(
            f"[web] allowed_origins: {origin!r} is not an origin such as "
            "'https://app.example.com' (scheme://host[:port], no path)"
        )


def _is_origin(text: str) -> bool:
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a port that is not a number, or out of range
        return False
    has_more = parts.path or parts.query or parts.fragment or "@" in parts.netloc
    return bool(port_ok and parts.scheme and parts.hostname and not has_more)
