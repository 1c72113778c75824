"""Shared fixtures: a roomcast node process for end-to-end tests, and a private Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import NodeProcess, RedisProcess, redis_server_path, start_node, start_redis


@pytest.fixture
def node() -> Iterator[NodeProcess]:
    """One ``roomcast start`` process on free loopback ports, embedded store."""
    process = start_node()
    yield process
    process.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    """A redis-server of this test's own on a free port (skips when not installed)."""
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed; install it to run the cluster tests")
    server = start_redis()
    yield server
    server.stop()
