"""``/metrics`` (Prometheus text format) and ``/health`` on the web port."""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from support import LineClient, NodeProcess, health, wait_until

REQUIRED = {
    "roomcast_connections",
    "roomcast_rooms_local",
    "roomcast_joins",
    "roomcast_leaves",
    "roomcast_messages_received",
    "roomcast_deliveries",
    "roomcast_slow_consumers_dropped",
    "roomcast_rate_limited",
    "roomcast_rpc_calls",
    "roomcast_rpc_timeouts",
    "roomcast_redis_reconnects",
    "roomcast_event_loop_lag_seconds",
}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_has_every_required_metric(node: NodeProcess) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.web_port}/metrics") as reply:
        names = {f.name for f in text_string_to_metric_families(reply.read().decode())}
    assert names >= REQUIRED


def test_counters_move_as_clients_join_say_and_leave(node: NodeProcess) -> None:
    before = scrape(node.web_port)
    alice, bob = LineClient(node.socket_port), LineClient(node.socket_port)
    try:
        for client in (alice, bob):
            client.read()
            assert client.request("roomAdd defaultRoom")["status"] == "OK"
        during = scrape(node.web_port)
        assert value(during, "roomcast_connections", transport="socket") == 2
        assert value(during, "roomcast_rooms_local") == 1
        assert alice.request("say defaultRoom hello")["status"] == "OK"
        assert bob.read_until(lambda m: m.get("context") == "user")["message"] == "hello"
        assert alice.request("roomLeave defaultRoom")["status"] == "OK"
        after = scrape(node.web_port)
    finally:
        alice.close()
        bob.close()

    def moved(name: str) -> float:
        return value(after, f"{name}_total") - value(before, f"{name}_total")

    assert moved("roomcast_joins") == 2
    assert moved("roomcast_messages_received") == 1
    assert moved("roomcast_deliveries") == 2  # both members, counted once per message
    assert moved("roomcast_leaves") == 1
    wait_until(
        lambda: value(scrape(node.web_port), "roomcast_connections", transport="socket") == 0,
        message="connections gauge back to 0",
    )


def test_health_is_ok_on_a_running_node(node: NodeProcess) -> None:
    assert health(node.web_port) == (200, {"status": "ok"})


def test_a_disconnect_counts_a_leave_for_every_room_it_was_in(node: NodeProcess) -> None:
    before = scrape(node.web_port)
    client = LineClient(node.socket_port)
    client.read()
    for room in ("defaultRoom", "second"):
        client.request(f'{{"action":"createChatRoom","params":{{"name":"{room}"}}}}')
        assert client.request(f"roomAdd {room}")["status"] == "OK"
    client.close()
    wait_until(
        lambda: (
            value(scrape(node.web_port), "roomcast_leaves_total")
            - value(before, "roomcast_leaves_total")
            == 2
        ),
        message="two leaves counted",
    )
