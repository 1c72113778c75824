"""A real browser on the chat page: headless Chromium driven by Playwright (issue 3).

Uses the system's Chromium (Debian's ``chromium`` package); Playwright never downloads a
browser here. Without Chromium or without the playwright package these tests are skipped,
with the reason in pytest's summary.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websupport import WELCOME, create_room, unique_room

from support import LOOPBACK, LineClient, NodeProcess, start_node, wait_until

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT_MS = 10_000


def chromium_executable() -> str | None:
    """The system Chromium: on PATH, else Debian's standard location."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    fallback = "/usr/bin/chromium"
    return fallback if os.access(fallback, os.X_OK) else None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    executable = chromium_executable()
    if executable is None:
        pytest.skip(
            "no Chromium found (install Debian's 'chromium' package) - browser test not run"
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError as error:
        pytest.skip(
            f"the playwright Python package is not installed ({error}) - browser test not run"
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


class ChatPage:
    """One user's ``/chat.html`` in a browser context of its own (own cookies)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    @classmethod
    async def open(cls, browser: Any, node: NodeProcess, room: str | None = None) -> ChatPage:
        context = await browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        chat = cls(await context.new_page())
        query = f"?room={room}" if room else ""
        await chat.page.goto(f"http://{LOOPBACK}:{node.web_port}/chat.html{query}")
        await chat.expect(chat.page.locator("#status")).to_have_text("connected")
        return chat

    @staticmethod
    def expect(locator: Any) -> Any:
        from playwright.async_api import expect

        return expect(locator)

    async def in_room(self, room: str) -> None:
        """Wait until ``room`` is joined and is the room on screen."""
        await self.expect(
            self.page.locator(f'#rooms .room.active[data-room="{room}"]')
        ).to_have_count(1)

    async def send(self, text: str) -> None:
        box = self.page.locator("#message-input")
        await box.fill(text)
        await box.press("Enter")

    async def sees_once(self, text: str) -> None:
        await self.expect(
            self.page.locator("#messages .message .text", has_text=text)
        ).to_have_count(1)

    async def client_id(self) -> str:
        return str(await self.page.evaluate("() => document.querySelector('#me').title"))


def tcp_join(port: int, room: str) -> tuple[LineClient, str]:
    client = LineClient(port)
    assert client.read() == WELCOME
    assert client.request(f"roomAdd {room}")["status"] == "OK"
    return client, client.request("detailsView")["data"]["id"]


def tcp_hears(client: LineClient, text: str) -> dict[str, Any]:
    heard: dict[str, Any] = client.read_until(
        lambda m: isinstance(m, dict) and m.get("message") == text
    )
    return heard


async def test_two_browser_pages_and_a_tcp_client_chat_in_one_room(
    browser: Any, web_node: NodeProcess
) -> None:
    room = unique_room("browser")
    create_room(web_node.web_port, room)
    tcp, tcp_id = await asyncio.to_thread(tcp_join, web_node.socket_port, room)
    try:
        alice = await ChatPage.open(browser, web_node, room)
        bob = await ChatPage.open(browser, web_node, room)
        await alice.in_room(room)
        await bob.in_room(room)
        alice_id, bob_id = await alice.client_id(), await bob.client_id()
        assert alice_id and bob_id and alice_id != bob_id

        await alice.send("hello from page A")
        await bob.sees_once("hello from page A")
        await alice.sees_once("hello from page A")
        await bob.send("hello from page B")
        await alice.sees_once("hello from page B")
        await bob.sees_once("hello from page B")

        heard_a = await asyncio.to_thread(tcp_hears, tcp, "hello from page A")
        heard_b = await asyncio.to_thread(tcp_hears, tcp, "hello from page B")
        assert (heard_a["room"], heard_a["from"]) == (room, alice_id)
        assert (heard_b["room"], heard_b["from"]) == (room, bob_id)

        # And the other way: the TCP user's message appears on both pages, and the member
        # lists come to show all three users.
        await asyncio.to_thread(tcp.request, f"say {room} hello browsers, this is telnet")
        for page in (alice, bob):
            await page.sees_once("hello browsers, this is telnet")
            await page.expect(page.page.locator("#members .member")).to_have_count(3)
            assert await page.page.locator(f'#members .member[data-id="{tcp_id}"]').count() == 1
            assert page.errors == []
    finally:
        tcp.close()


async def test_a_page_creates_and_joins_a_room_from_the_join_form(
    browser: Any, web_node: NodeProcess
) -> None:
    room = unique_room("formroom")
    page = await ChatPage.open(browser, web_node)
    await page.in_room("defaultRoom")

    await page.page.locator("#room-input").fill(room)
    await page.page.locator("#join-button").click()
    await page.in_room(room)
    await page.expect(page.page.locator("#room-title")).to_contain_text(room)

    # The room now exists on the node: a TCP user can join it and talk to the page.
    tcp, tcp_id = await asyncio.to_thread(tcp_join, web_node.socket_port, room)
    try:
        await asyncio.to_thread(tcp.request, f"say {room} welcome to your new room")
        await page.sees_once("welcome to your new room")
        await page.send("thanks, telnet")
        heard = await asyncio.to_thread(tcp_hears, tcp, "thanks, telnet")
        assert heard["from"] == await page.client_id()
        assert heard["from"] != tcp_id
        assert page.errors == []
    finally:
        tcp.close()


API_SCRIPT = """
async (room) => {
  const client = new RoomcastClient();
  const out = {};
  out.connected = (await client.connect()).data;
  const heard = new Promise((resolve) => client.once('say', resolve));
  // Sent together; each reply finds its request by messageId.
  const replies = await Promise.all([
    client.action('status'), client.roomAdd(room), client.detailsView(), client.roomView(room),
  ]);
  out.replies = replies;
  try {
    await client.roomAdd(room);
    out.again = null;
  } catch (error) {
    out.again = { message: error.message, code: error.code };
  }
  try {
    await client.action('createChatRoom', {});
    out.actionError = null;
  } catch (error) {
    out.actionError = { message: error.message, code: error.code };
  }
  await client.say(room, 'from the javascript api');
  out.heard = await heard;
  out.file = await client.file('roomcast.js');
  out.callback = await new Promise((resolve) => client.detailsView((error, reply) => {
    resolve({ error: error && error.message, id: reply && reply.data.id });
  }));
  out.id = client.id;
  out.fingerprint = client.fingerprint;
  out.rooms = client.rooms;
  client.disconnect();
  out.state = client.state;
  return out;
}
"""


async def test_the_browser_client_api(browser: Any, web_node: NodeProcess) -> None:
    room = unique_room("jsapi")
    create_room(web_node.web_port, room)
    page = await ChatPage.open(browser, web_node)
    out = await page.page.evaluate(API_SCRIPT, room)

    status, joined, details, view = out["replies"]
    assert status["id"] == web_node.node_id
    assert joined["status"] == "OK" and joined["data"] is True
    assert details["data"]["id"] == out["id"]
    assert view["data"]["room"] == room and out["id"] in view["data"]["members"]
    message_ids = [reply["messageId"] for reply in out["replies"]]
    assert len(set(message_ids)) == 4
    counts = [reply["messageCount"] for reply in out["replies"]]
    assert len(set(counts)) == 4

    assert out["again"] == {
        "message": f"connection already in this room ({room})",
        "code": "server",
    }
    assert out["actionError"] == {
        "message": "name is a required parameter for this action",
        "code": "server",
    }
    assert out["heard"] == {
        "message": "from the javascript api",
        "room": room,
        "from": out["id"],
        "context": "user",
        "sentAt": out["heard"]["sentAt"],
    }
    assert "RoomcastClient" in out["file"]["content"]
    assert out["callback"] == {"error": None, "id": out["id"]}
    assert out["rooms"] == [room]
    assert out["state"] == "disconnected"

    # The page got a sessionID cookie; the WebSocket upgrade carried it: the fingerprint.
    cookies = {c["name"]: c["value"] for c in await page.page.context.cookies()}
    assert out["fingerprint"] == cookies["sessionID"] != out["id"]
    assert page.errors == []


async def test_the_page_reconnects_and_rejoins_its_room_after_a_server_restart(
    browser: Any,
) -> None:
    room = unique_room("restart")
    node = start_node()
    tcp = None
    try:
        page = await ChatPage.open(browser, node, room)
        await page.in_room(room)
        first_id = await page.client_id()

        node.stop()
        await page.expect(page.page.locator("#status")).not_to_have_text("connected")
        node = start_node(socket_port=node.socket_port, web_port=node.web_port)

        # Back with a new connection, in the same room (the new node had to re-create it).
        await page.expect(page.page.locator("#status")).to_have_text("connected", timeout=20_000)
        await page.in_room(room)
        tcp, tcp_id = await asyncio.to_thread(
            wait_until,
            lambda: _try_tcp_join(node.socket_port, room),
            10,
            message="the page to re-create its room",
        )
        new_id = await page.client_id()
        assert new_id != first_id

        def both_members() -> bool:
            members = tcp.request(f"roomView {room}")["data"]["members"]
            return set(members) == {new_id, tcp_id}

        await asyncio.to_thread(wait_until, both_members, 10, message="the page to re-join")
        await asyncio.to_thread(tcp.request, f"say {room} welcome back")
        await page.sees_once("welcome back")
        await page.send("glad to be back")
        heard = await asyncio.to_thread(tcp_hears, tcp, "glad to be back")
        assert heard["from"] == await page.client_id()
        assert page.errors == []
    finally:
        if tcp is not None:
            tcp.close()
        node.stop()


def _try_tcp_join(port: int, room: str) -> tuple[LineClient, str] | None:
    client = LineClient(port)
    assert client.read() == WELCOME
    if client.request(f"roomAdd {room}")["status"] != "OK":
        client.close()
        return None
    return client, client.request("detailsView")["data"]["id"]
