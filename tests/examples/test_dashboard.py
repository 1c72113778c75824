"""examples/dashboard: the node's figures pushed to a room every second, and the page that
shows them in a real browser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import headless_chromium

from support import LOOPBACK, LineClient, NodeProcess, start_node

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "dashboard"
FIGURES = {
    "node",
    "at",
    "uptime",
    "connections",
    "localRooms",
    "messagesReceived",
    "deliveries",
    "joins",
    "loopLagMs",
    "load",
}


@pytest.fixture(scope="module")
def dashboard_node() -> Iterator[NodeProcess]:
    node = start_node(
        "--actions", str(DASHBOARD / "actions"), "--public", str(DASHBOARD / "public")
    )
    yield node
    node.stop()


def snapshots(client: LineClient, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while len(found) < count:
        message = client.read_until(
            lambda m: isinstance(m, dict) and m.get("room") == "dashboard" and m.get("from") == 0
        )
        found.append(message["message"])
    return found


def test_a_member_of_the_room_gets_a_snapshot_every_second(
    dashboard_node: NodeProcess,
) -> None:
    client = LineClient(dashboard_node.socket_port)
    try:
        client.read()
        assert client.request("roomAdd dashboard")["status"] == "OK"
        first, second = snapshots(client, 2)
        assert set(first) == FIGURES
        assert first["node"] == dashboard_node.node_id
        assert first["connections"] >= 1
        assert 0.5 <= (second["at"] - first["at"]) / 1000 <= 3.0
    finally:
        client.close()


def test_members_cannot_talk_in_the_dashboard_room(dashboard_node: NodeProcess) -> None:
    client = LineClient(dashboard_node.socket_port)
    try:
        client.read()
        assert client.request("roomAdd dashboard")["status"] == "OK"
        assert client.request("say dashboard hi")["status"] == "the dashboard is read-only"
    finally:
        client.close()


async def test_the_page_shows_the_figures_and_updates_them(dashboard_node: NodeProcess) -> None:
    from playwright.async_api import expect

    async with headless_chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"http://{LOOPBACK}:{dashboard_node.web_port}/")
        await expect(page.locator("#status")).to_have_text("connected", timeout=10_000)
        await expect(page.locator("#node")).to_have_text(dashboard_node.node_id, timeout=10_000)
        # The page itself is a connection, so the node counts at least one.
        await expect(page.locator("#connections")).to_have_text(
            re.compile(r"^[1-9]\d*$"), timeout=10_000
        )
        await expect(page.locator("#updates")).not_to_have_text(
            re.compile(r"^[01]$"), timeout=10_000
        )
        assert errors == []
