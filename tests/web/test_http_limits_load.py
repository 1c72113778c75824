"""HTTP actions under load, against a real ``roomcast start`` process: ``status`` costs
the same with a hundred thousand rooms, and the node runs a bounded number of HTTP
actions at once."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from pathlib import Path

import aiohttp
import pytest
import redis
from websupport import http_request

from support import LOOPBACK, LineClient, RedisProcess, start_node, wait_until

PROBES = Path(__file__).parent.parent / "load_actions"
MAX_HTTP_ACTIONS = 64


@pytest.mark.timeout(90)
def test_twenty_concurrent_status_calls_stay_fast_with_a_hundred_thousand_rooms(
    redis_server: RedisProcess,
) -> None:
    store = redis.Redis(host=LOOPBACK, port=redis_server.port)
    with store.pipeline(transaction=False) as pipe:
        for start in range(0, 99_999, 10_000):
            pipe.sadd(
                "roomcast:rooms", *(f"room-{n}" for n in range(start, min(start + 10_000, 99_999)))
            )
        pipe.execute()
    node = start_node("--redis-url", redis_server.url, socket_port=0)  # adds defaultRoom
    try:
        assert store.scard("roomcast:rooms") == 100_000
        times: list[float] = []
        bodies: list[dict[str, object]] = []

        def call() -> None:
            start = time.perf_counter()
            reply = http_request(node.web_port, "GET", "/api/status", timeout=30)
            times.append(time.perf_counter() - start)
            assert reply.status == 200
            bodies.append(reply.json())

        for _ in range(2):  # the first round warms the node up; the second is measured
            times.clear()
            threads = [threading.Thread(target=call) for _ in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        assert len(times) == 20 and {b["rooms"] for b in bodies} == {100_000}
        assert statistics.median(times) <= 0.05, sorted(times)
        reply = http_request(node.web_port, "GET", "/api/createChatRoom?name=one-too-many")
        assert reply.json() == {"error": "room limit reached (100000 rooms)"}
        assert http_request(node.web_port, "GET", "/api/createChatRoom?name=room-7").json() == {
            "error": "room exists"
        }
    finally:
        node.stop()
        store.close()


def _request(client: LineClient, action: str) -> dict[str, object]:
    return client.request(json.dumps({"action": action}))  # type: ignore[no-any-return]


@pytest.mark.timeout(60)
async def test_http_actions_past_the_node_cap_are_answered_429_at_once(tmp_path: Path) -> None:
    node = start_node("--actions", str(PROBES))
    probe = LineClient(node.socket_port)
    try:
        probe.read()  # welcome
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            base = f"http://{LOOPBACK}:{node.web_port}/api"

            async def call(action: str) -> tuple[int, dict[str, object]]:
                async with session.get(f"{base}/{action}") as response:
                    return response.status, await response.json()

            held = [asyncio.ensure_future(call("hold")) for _ in range(MAX_HTTP_ACTIONS)]
            await asyncio.to_thread(
                wait_until, lambda: _request(probe, "held")["held"] == MAX_HTTP_ACTIONS, 20
            )
            start = time.perf_counter()
            refused = await call("status")
            elapsed = time.perf_counter() - start
            assert refused == (429, {"error": "you have too many pending requests"})
            assert elapsed < 1.0
            assert _request(probe, "release")["released"] == MAX_HTTP_ACTIONS
            assert [status for status, _ in await asyncio.gather(*held)] == [200] * 64
            assert (await call("status"))[0] == 200
    finally:
        probe.close()
        node.stop()
