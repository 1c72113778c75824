"""A real browser on the chat page: headless Chromium driven by Playwright.

Uses the system's Chromium (Debian's ``chromium`` package); Playwright never downloads a
browser here. Without Chromium or without the playwright package these tests are skipped,
with the reason in pytest's summary.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from browser_support import CHROMIUM_ARGS, chromium_executable
from clientsupport import (
    ScriptedWebSocketPeer,
    ScriptedWebSocketServer,
    needs_history_gate,  # noqa: F401 (an autouse fixture)
    start_history_node,
)
from playwright.async_api import Browser
from websupport import WELCOME, create_room, unique_room

import roomcast
from support import LOOPBACK, LineClient, NodeProcess, RedisProcess, start_node, wait_until

ROOMCAST_JS = Path(roomcast.__file__).parent / "static" / "roomcast.js"
PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}

TIMEOUT_MS = 10_000


# One Chromium for the module (starting it is the slow part); each test gets contexts of
# its own, closed after it.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Any]:
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


class BrowserForOneTest:
    """The shared Chromium as one test sees it: every context it opens is closed after it."""

    def __init__(self, chromium: Any) -> None:
        self.chromium = chromium
        self.contexts: list[Any] = []

    async def new_context(self, **options: Any) -> Any:
        context = await self.chromium.new_context(**options)
        self.contexts.append(context)
        return context


@pytest_asyncio.fixture(loop_scope="module")
async def browser(chromium: Any) -> AsyncIterator[BrowserForOneTest]:
    wrapper = BrowserForOneTest(chromium)
    yield wrapper
    for context in wrapper.contexts:
        await context.close()


class ChatPage:
    """One user's ``/chat.html`` in a browser context of its own (own cookies)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        #: Every WebSocket frame the page sent, decoded (text frames only).
        self.sent: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("websocket", self._watch)

    def _watch(self, ws: Any) -> None:
        ws.on("framesent", lambda payload: self.sent.append(str(payload)))

    def sent_events(self, event: str) -> int:
        """How many frames with ``"event":"<event>"`` the page sent."""
        return sum(f'"event":"{event}"' in frame for frame in self.sent)

    @classmethod
    async def open(
        cls,
        browser: Any,
        node: NodeProcess,
        room: str | None = None,
        *,
        name: str | None = None,
        context_options: dict[str, Any] | None = None,
    ) -> ChatPage:
        context = await browser.new_context(**(context_options or {}))
        context.set_default_timeout(TIMEOUT_MS)
        chat = cls(await context.new_page())
        params = {key: value for key, value in (("room", room), ("name", name)) if value}
        query = f"?{urlencode(params)}" if params else ""
        await chat.page.goto(f"http://{LOOPBACK}:{node.web_port}/chat.html{query}")
        await chat.expect(chat.page.locator("#status")).to_have_text("connected")
        return chat

    async def members(self) -> list[str]:
        """The ids in the member list, in its order."""
        return list(
            await self.page.eval_on_selector_all(
                "#members .member", "items => items.map(i => i.dataset.id)"
            )
        )

    async def texts(self) -> list[str]:
        """The chat messages on screen, oldest first."""
        return list(await self.page.locator("#messages .message .text").all_inner_texts())

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


# reconnecting, failover, recovery -------------------------------------------------------


async def test_the_page_rejoins_its_room_and_says_what_it_missed_after_its_node_is_killed(
    browser: Browser,
) -> None:
    node = start_node()
    tcp = None
    try:
        page = await ChatPage.open(browser, node)
        await page.in_room("defaultRoom")
        first_id = await page.client_id()

        node.kill()  # the connection drops without a close frame
        await page.expect(page.page.locator("#status")).not_to_have_text("connected")
        node = await asyncio.to_thread(
            start_node, socket_port=node.socket_port, web_port=node.web_port
        )
        await page.expect(page.page.locator("#status")).to_have_text("connected", timeout=20_000)
        await page.in_room("defaultRoom")
        # This node keeps no history: the page says messages may be missing.
        await page.expect(
            page.page.locator('#messages .notice[data-kind="unrecovered"]')
        ).to_have_count(1)

        tcp, tcp_id = await asyncio.to_thread(tcp_join, node.socket_port, "defaultRoom")
        new_id = await page.client_id()
        assert new_id != first_id
        members = (await asyncio.to_thread(tcp.request, "roomView defaultRoom"))["data"]
        assert set(members["members"]) == {new_id, tcp_id}
        await asyncio.to_thread(tcp.request, "say defaultRoom are you back?")
        await page.sees_once("are you back?")
        assert page.errors == []
    finally:
        if tcp is not None:
            tcp.close()
        node.stop()


FAILOVER_SCRIPT = """
async ({urls, room}) => {
  const client = new RoomcastClient({urls, reconnectDelay: 50, reconnectDelayMax: 200});
  window.rc = client;
  window.heard = [];
  window.reconnects = [];
  client.on('say', (m) => window.heard.push(m.message));
  client.on('reconnect', (info) => window.reconnects.push(info));
  await client.connect();
  await client.roomAdd(room);
  return {url: client.url, id: client.id};
}
"""


async def blank_page_with_client(browser: Any) -> Any:
    """A page of no origin with roomcast.js loaded (the client is given its URLs)."""
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    await page.add_script_tag(path=str(ROOMCAST_JS))
    return page


async def test_the_browser_client_fails_over_to_the_next_server_and_rejoins_its_room(
    browser: Any, redis_server: RedisProcess
) -> None:
    first = start_node("--redis-url", redis_server.url)
    second = start_node("--redis-url", redis_server.url)
    tcp = None
    try:
        room = unique_room("jsfailover")
        create_room(first.web_port, room)
        urls = [f"ws://{LOOPBACK}:{n.web_port}/ws" for n in (first, second)]
        page = await blank_page_with_client(browser)
        started = await page.evaluate(FAILOVER_SCRIPT, {"urls": urls, "room": room})
        assert started["url"] == urls[0]
        tcp, _ = await asyncio.to_thread(tcp_join, second.socket_port, room)

        first.kill()
        await page.wait_for_function("() => window.reconnects.length === 1")
        info = await page.evaluate("() => window.reconnects[0]")
        assert (info["url"], info["rooms"], info["failedRooms"]) == (urls[1], [room], [])
        new_id = await page.evaluate("() => window.rc.id")
        members = (await asyncio.to_thread(tcp.request, f"roomView {room}"))["data"]["members"]
        assert new_id in members and new_id != started["id"]
        await asyncio.to_thread(tcp.request, f"say {room} hello after the failover")
        await page.wait_for_function("() => window.heard.includes('hello after the failover')")
    finally:
        if tcp is not None:
            tcp.close()
        first.stop()
        second.stop()


RECOVERY_SCRIPT = """
async (url) => {
  const client = new RoomcastClient({url, reconnectDelay: 50, reconnectDelayMax: 200});
  const events = [];
  client.on('say', (m) => events.push(['say', m.message]));
  client.on('recovered', (room, count) => events.push(['recovered', room, count]));
  client.on('unrecovered', (room, count) => events.push(['unrecovered', room, count]));
  const last = new Promise((resolve) => client.on('say', (m) => {
    if (m.message === 'm4') { resolve(); }
  }));
  await client.connect();
  await client.roomAdd('r');
  await last;
  const position = client.position('r');
  client.disconnect();
  return {events, position};
}
"""


def chat(text: str, offset: int, epoch: str) -> dict[str, Any]:
    return {
        "message": text,
        "room": "r",
        "from": "someone",
        "context": "user",
        "sentAt": int(time.time() * 1000),
        "offset": offset,
        "epoch": epoch,
    }


async def test_the_browser_client_rejoins_from_its_last_position_and_drops_duplicates(
    browser: Browser,
) -> None:
    joins: list[dict[str, Any]] = []

    async def script(peer: ScriptedWebSocketPeer, index: int) -> None:
        await peer.send(WELCOME)
        rooms: list[str] = ["r"] if index else []
        async for request in peer.requests():
            if request["event"] == "detailsView":
                await peer.reply(request, {"id": f"c{index}", "fingerprint": "f", "rooms": rooms})
            elif request["event"] == "roomAdd":
                joins.append({k: v for k, v in request.items() if k != "messageId"})
                if index == 0:
                    rooms.append("r")
                    await peer.reply(request, True)
                    await peer.send(chat("m1", 1, "e1"))
                    await peer.send(chat("m2", 2, "e1"))
                    return  # the server goes away
                await peer.reply(request, {"recovered": True, "epoch": "e1", "offset": 4})
                for offset in (2, 3, 4):  # 2 again: a replayed duplicate
                    await peer.send(chat(f"m{offset}", offset, "e1"))

    async with ScriptedWebSocketServer.running(script) as server:
        page = await blank_page_with_client(browser)
        out = await page.evaluate(RECOVERY_SCRIPT, server.url)
    assert joins == [
        {"event": "roomAdd", "room": "r"},
        {"event": "roomAdd", "room": "r", "since": 2, "epoch": "e1"},
    ]
    assert out["events"] == [
        ["say", "m1"],
        ["say", "m2"],
        ["recovered", "r", 2],
        ["say", "m3"],
        ["say", "m4"],
    ]
    assert out["position"] == {"offset": 4, "epoch": "e1"}
    assert server.errors == []


# The chat page against a scripted server speaking the recovery and presence contract.

PAGE_FILES = {"/chat.html": ROOMCAST_JS.with_name("chat.html"), "/roomcast.js": ROOMCAST_JS}
RoomAdd = Any  # async (peer, index, request) -> bool: False closes the connection


async def answer_the_page(
    peer: ScriptedWebSocketPeer,
    index: int,
    on_room_add: RoomAdd,
    others: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Answer the chat page's requests as a node would; ``on_room_add`` answers joins.

    ``others`` holds the other members (id to details) that ``roomView`` shows.
    """
    me = f"conn-{index}"
    rooms: list[str] = []
    await peer.send(WELCOME)
    async for request in peer.requests():
        event = request["event"]
        if event == "detailsView":
            await peer.reply(request, {"id": me, "fingerprint": me, "rooms": rooms, "params": {}})
        elif event == "action":  # createChatRoom: it is there already
            await peer.send(
                {"context": "response", "messageId": request["messageId"], "error": "room exists"}
            )
        elif event == "roomView":
            members = {me: {"id": me, "joinedAt": 1}, **(others or {})}
            view = {"room": request["room"], "membersCount": 1, "members": members}
            await peer.reply(request, view)
        elif event == "roomAdd":
            rooms.append(request["room"])
            if not await on_room_add(peer, index, request):
                return
        else:
            await peer.reply(request, True)


def page_chat(text: str, offset: int, epoch: str = "e1") -> dict[str, Any]:
    return {**chat(text, offset, epoch), "room": "defaultRoom", "from": "bob"}


async def open_scripted_page(browser: Any, server: ScriptedWebSocketServer) -> ChatPage:
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = ChatPage(await context.new_page())
    await page.page.goto(f"http://{LOOPBACK}:{server.port}/chat.html")
    await page.in_room("defaultRoom")
    return page


async def test_after_a_reconnect_the_page_shows_the_messages_replayed_to_it(
    browser: Browser,
) -> None:
    async def on_room_add(peer: ScriptedWebSocketPeer, index: int, request: Any) -> bool:
        if index == 0:
            await peer.reply(request, True)
            await peer.send(page_chat("said before", 1))
            await asyncio.sleep(0.5)
            return False  # the node goes away
        assert (request.get("since"), request.get("epoch")) == (1, "e1")
        await peer.reply(request, {"recovered": True, "epoch": "e1", "offset": 3})
        await peer.send(page_chat("missed one", 2))
        await peer.send(page_chat("missed two", 3))
        return True

    async def script(peer: ScriptedWebSocketPeer, index: int) -> None:
        await answer_the_page(peer, index, on_room_add)

    async with ScriptedWebSocketServer.running(script, PAGE_FILES) as server:
        page = await open_scripted_page(browser, server)
        await page.sees_once("missed two")
        notice = page.page.locator('#messages .notice[data-kind="recovered"]')
        await page.expect(notice).to_have_text(re.compile("2 messages you missed"))
        assert await page.texts() == ["said before", "missed one", "missed two"]
        # The notice comes right before the messages it announces.
        kinds = await page.page.eval_on_selector_all(
            "#messages > *", "items => items.map(i => i.dataset.kind || i.className)"
        )
        assert kinds[kinds.index("recovered") + 1].startswith("message")
        assert page.errors == [] and server.errors == []


async def test_after_a_reconnect_the_page_says_when_messages_could_not_be_recovered(
    browser: Browser,
) -> None:
    async def on_room_add(peer: ScriptedWebSocketPeer, index: int, request: Any) -> bool:
        if index == 0:
            await peer.reply(request, True)
            await peer.send(page_chat("said before", 5))
            await asyncio.sleep(0.5)
            return False
        await peer.reply(request, {"recovered": False, "epoch": "e2", "offset": 0})
        await peer.send(page_chat("said after", 1, "e2"))
        return True

    async def script(peer: ScriptedWebSocketPeer, index: int) -> None:
        await answer_the_page(peer, index, on_room_add)

    async with ScriptedWebSocketServer.running(script, PAGE_FILES) as server:
        page = await open_scripted_page(browser, server)
        await page.sees_once("said after")
        await page.expect(
            page.page.locator('#messages .notice[data-kind="unrecovered"]')
        ).to_have_text(re.compile("could not be recovered"))
        assert await page.texts() == ["said before", "said after"]
        assert page.errors == [] and server.errors == []


async def test_the_member_list_follows_presence_events_and_shows_their_names(
    browser: Browser,
) -> None:
    bob_leaves = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    others: dict[str, dict[str, Any]] = {}

    async def leave_later(peer: ScriptedWebSocketPeer) -> None:
        await bob_leaves.wait()
        others.clear()
        await peer.send(
            {"context": "presence", "event": "leave", "room": "defaultRoom", "id": "bob", "at": 2}
        )

    async def on_room_add(peer: ScriptedWebSocketPeer, index: int, request: Any) -> bool:
        await peer.reply(request, True)
        details = {"id": "bob", "joinedAt": 2, "name": "Bob"}
        others["bob"] = details
        await peer.send(
            {
                "context": "presence",
                "event": "join",
                "room": "defaultRoom",
                "id": "bob",
                "details": details,
                "at": 2,
            }
        )
        tasks.append(asyncio.create_task(leave_later(peer)))
        return True

    async def script(peer: ScriptedWebSocketPeer, index: int) -> None:
        await answer_the_page(peer, index, on_room_add, others)

    async with ScriptedWebSocketServer.running(script, PAGE_FILES) as server:
        page = await open_scripted_page(browser, server)
        bob = page.page.locator('#members .member[data-id="bob"] .member-name')
        await page.expect(bob).to_have_text("Bob")
        views = page.sent_events("roomView")
        bob_leaves.set()
        await page.expect(bob).to_have_count(0, timeout=2_000)
        assert page.sent_events("roomView") == views  # pushed, not polled
        await page.expect(
            page.page.locator("#messages .notice", has_text="Bob left")
        ).to_have_count(1)
        assert page.errors == [] and server.errors == []
    for task in tasks:
        task.cancel()


@pytest.mark.needs_history
async def test_after_a_reconnect_the_page_shows_the_messages_it_missed(
    browser: Any, redis_server: RedisProcess
) -> None:
    redis = ("--redis-url", redis_server.url)
    node = start_history_node(*redis)
    other = start_history_node(*redis)
    tcp = None
    try:
        room = unique_room("missed")
        create_room(node.web_port, room)
        page = await ChatPage.open(browser, node, room)
        await page.in_room(room)
        tcp, _ = await asyncio.to_thread(tcp_join, other.socket_port, room)
        await asyncio.to_thread(tcp.request, f"say {room} before the drop")
        await page.sees_once("before the drop")

        node.kill()
        await page.expect(page.page.locator("#status")).not_to_have_text("connected")
        for text in ("missed one", "missed two"):
            await asyncio.to_thread(tcp.request, f"say {room} {text}")
        node = await asyncio.to_thread(
            start_history_node, *redis, socket_port=node.socket_port, web_port=node.web_port
        )
        await page.expect(page.page.locator("#status")).to_have_text("connected", timeout=20_000)
        await page.expect(
            page.page.locator('#messages .notice[data-kind="recovered"]')
        ).to_contain_text("2 messages you missed")
        await page.sees_once("missed two")
        assert await page.texts() == ["before the drop", "missed one", "missed two"]
        assert await page.page.locator('.notice[data-kind="unrecovered"]').count() == 0
        assert page.errors == []
    finally:
        if tcp is not None:
            tcp.close()
        node.stop()
        other.stop()


# members, names, touch ------------------------------------------------------------------


@pytest.mark.needs_history
async def test_the_member_list_follows_presence_events_instead_of_polling(browser: Browser) -> None:
    node = start_history_node()
    try:
        room = unique_room("presence")
        create_room(node.web_port, room)
        alice = await ChatPage.open(browser, node, room)
        await alice.in_room(room)
        bob = await ChatPage.open(browser, node, room)
        await bob.in_room(room)
        bob_id = await bob.client_id()
        await alice.expect(
            alice.page.locator(f'#members .member[data-id="{bob_id}"]')
        ).to_have_count(1)

        views = alice.sent_events("roomView")
        await bob.page.locator("#leave-button").click()
        await alice.expect(
            alice.page.locator(f'#members .member[data-id="{bob_id}"]')
        ).to_have_count(0, timeout=3_000)
        assert alice.sent_events("roomView") == views  # pushed, not polled
        await alice.expect(alice.page.locator("#messages .notice", has_text="left")).to_have_count(
            1
        )
        assert alice.errors == [] and bob.errors == []
    finally:
        node.stop()


async def test_the_page_shows_its_own_display_name_from_the_name_parameter(
    browser: Browser, web_node: NodeProcess
) -> None:
    page = await ChatPage.open(browser, web_node, name="Alice")
    await page.in_room("defaultRoom")
    await page.expect(page.page.locator("#me")).to_have_text("you: Alice")
    await page.expect(page.page.locator("#members .member.me .member-name")).to_have_text("Alice")
    assert page.errors == []


async def test_the_page_shows_other_members_display_names(
    browser: Browser, web_node: NodeProcess
) -> None:
    room = unique_room("names")
    create_room(web_node.web_port, room)
    bob = await ChatPage.open(browser, web_node, room, name="Bob")
    await bob.in_room(room)
    bob_id = await bob.client_id()
    tcp, _ = await asyncio.to_thread(tcp_join, web_node.socket_port, room)
    try:
        members = (await asyncio.to_thread(tcp.request, f"roomView {room}"))["data"]["members"]
        if members[bob_id].get("name") != "Bob":
            pytest.skip(
                "the server does not put the WebSocket URL's name parameter into the member "
                f"details (roomView shows {members[bob_id]!r})"
            )
        alice = await ChatPage.open(browser, web_node, room, name="Alice")
        await alice.in_room(room)
        await alice.expect(
            alice.page.locator(f'#members .member[data-id="{bob_id}"] .member-name')
        ).to_have_text("Bob")
    finally:
        tcp.close()


async def test_on_a_phone_the_leave_buttons_are_visible_big_enough_and_work_by_tap(
    browser: Any, web_node: NodeProcess, tmp_path: Path
) -> None:
    room = unique_room("phone")
    create_room(web_node.web_port, room)
    page = await ChatPage.open(browser, web_node, room, context_options=PHONE)
    await page.in_room(room)
    header_leave = page.page.locator("#leave-button")
    list_leave = page.page.locator(f'#rooms .room[data-room="{room}"] .room-leave')
    for control in (header_leave, list_leave):
        box = await control.bounding_box()
        assert box is not None and box["width"] >= 44 and box["height"] >= 44, box
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        assert await control.evaluate("e => getComputedStyle(e).opacity") == "1"
    await page.page.screenshot(path=str(tmp_path / "chat-390px.png"))

    await header_leave.tap()
    await page.expect(page.page.locator(f'#rooms .room[data-room="{room}"]')).to_have_count(0)
    page_id = await page.client_id()
    tcp, _ = await asyncio.to_thread(tcp_join, web_node.socket_port, room)
    try:
        members = (await asyncio.to_thread(tcp.request, f"roomView {room}"))["data"]["members"]
        assert page_id not in members
    finally:
        tcp.close()
    assert page.errors == []
