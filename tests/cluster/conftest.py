"""Fixtures of the cluster tests: a private redis-server and nodes that share it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import CONFIG, Cluster

from support import RedisProcess, redis_server_path, start_redis


@pytest.fixture
def cluster(redis_server: RedisProcess, tmp_path: Path) -> Iterator[Cluster]:
    """No node yet; ``cluster.start(node_id)`` adds one on the test's own Redis."""
    config = tmp_path / "roomcast.toml"
    config.write_text(CONFIG)
    group = Cluster(redis_server, config)
    yield group
    group.close()


@pytest.fixture
def second_redis() -> Iterator[RedisProcess]:
    """Another private redis-server, for pub/sub apart from the key store."""
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed; install it to run the cluster tests")
    server = start_redis()
    yield server
    server.stop()
