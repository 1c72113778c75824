"""``status`` keeps answering while Redis is down: what the node knows, and why not the rest."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from cluster_support import Cluster

from support import start_node, wait_until


def status(port: int) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as reply:
        return reply.status, json.loads(reply.read())


def test_status_answers_with_the_redis_error_while_redis_is_down(cluster: Cluster) -> None:
    node = start_node("--redis-url", cluster.redis_server.url, "--config", str(cluster.config_path))
    cluster.nodes["status"] = node
    code, body = status(node.web_port)
    assert code == 200 and body["rooms"] >= 1 and "redisError" not in body
    cluster.kill_redis()
    code, body = wait_until(
        lambda: (reply := status(node.web_port))[1].get("redisError") and reply,
        15,
        message="status reporting the Redis error",
    )
    assert code == 200
    assert body["id"] == node.node_id and body["rooms"] is None
    assert {"uptime", "connections", "localRooms"} <= set(body)
