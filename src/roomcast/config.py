"""Settings of a node: defaults, a TOML file, ``ROOMCAST_*`` variables and CLI flags.

Precedence is flag > environment > file > default. In the TOML file the flags are
top-level keys with underscores; the other settings live in the ``[chat]``, ``[socket]``,
``[web]`` and ``[cluster]`` tables.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_WELCOME = "Hello! Welcome to the roomcast api"


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ChatSettings:
    starting_chat_rooms: list[str] = field(default_factory=lambda: ["defaultRoom"])


@dataclass
class SocketSettings:
    welcome: str = DEFAULT_WELCOME
    max_data_length: int = 1 << 20
    #: Bytes a client may leave unread before it is disconnected.
    send_buffer_limit: int = 8 << 20


@dataclass
class WebSettings:
    #: Seconds between WebSocket pings; a peer that misses a pong is dropped.
    heartbeat: float = 15.0
    max_message_size: int = 1 << 20
    send_buffer_limit: int = 8 << 20
    #: permessage-deflate; off by default so one pre-framed message serves every member.
    compress: bool = False


@dataclass
class ClusterSettings:
    key_prefix: str = "roomcast:"
    rpc_timeout: float = 5.0
    presence_ttl: float = 15.0
    watchdog_interval: float = 5.0


@dataclass
class Config:
    """Every setting of a node; build one directly in code or with :func:`load_config`."""

    id: str = field(default_factory=default_node_id)
    bind: str = "127.0.0.1"
    socket_port: int = 5000
    web_port: int = 8080
    redis_url: str | None = None
    pubsub_url: str | None = None
    actions: list[str] = field(default_factory=list)
    public: str | None = None
    server_token: str = "change-me"
    tls_cert: str | None = None
    tls_key: str | None = None
    log_level: str = "info"
    simultaneous_actions: int = 5
    #: Seconds graceful shutdown waits for pending actions.
    shutdown_timeout: float = 10.0
    chat: ChatSettings = field(default_factory=ChatSettings)
    socket: SocketSettings = field(default_factory=SocketSettings)
    web: WebSettings = field(default_factory=WebSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)


#: The settings that are also CLI flags and ``ROOMCAST_*`` variables.
FLAGS = (
    "id",
    "bind",
    "socket_port",
    "web_port",
    "redis_url",
    "pubsub_url",
    "actions",
    "public",
    "server_token",
    "tls_cert",
    "tls_key",
    "log_level",
)
_SECTIONS = {
    "chat": ChatSettings,
    "socket": SocketSettings,
    "web": WebSettings,
    "cluster": ClusterSettings,
}


class ConfigError(ValueError):
    pass


def load_config(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Config:
    """Merge defaults, ``config_file``, ``env`` (``ROOMCAST_*``) and ``flags`` (non-None)."""
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
        cls = _SECTIONS[name]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(table) - known
        if unknown:
            raise ConfigError(f"unknown setting(s) in [{name}]: {', '.join(sorted(unknown))}")
        defaults = cls()
        for key, value in table.items():
            _check_setting(
                f"[{name}] {key}", getattr(defaults, key), value, zero_ok=key in _ZERO_MEANS_OFF
            )
        setattr(config, name, cls(**table))
    return config


#: Section settings where 0 is allowed and turns the feature off.
_ZERO_MEANS_OFF = {"heartbeat"}


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
_INTS = {"socket_port", "web_port", "simultaneous_actions"}


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
    return value
