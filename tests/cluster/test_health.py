"""``/health`` follows the node's Redis: 503 while it is unreachable, 200 once it is back."""

from __future__ import annotations

from cluster_support import Cluster

from support import health, start_node, wait_until


def test_health_goes_503_when_redis_stops_and_200_when_it_is_back(cluster: Cluster) -> None:
    node = start_node("--redis-url", cluster.redis_server.url, "--config", str(cluster.config_path))
    cluster.nodes["health"] = node
    assert health(node.web_port) == (200, {"status": "ok"})
    cluster.kill_redis()
    _, body = wait_until(
        lambda: (reply := health(node.web_port))[0] == 503 and reply,
        15,
        message="/health 503 while Redis is down",
    )
    assert body["status"] == "unavailable" and "Redis" in body["reason"]
    cluster.restart_redis()
    wait_until(
        lambda: health(node.web_port) == (200, {"status": "ok"}),
        30,
        message="/health 200 once Redis is back",
    )
