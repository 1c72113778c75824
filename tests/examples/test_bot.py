"""examples/bot: a bot on roomcast.client answers ``!time`` in its room."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from support import LOOPBACK, LineClient, running_node, wait_until

BOT = Path(__file__).resolve().parents[2] / "examples" / "bot" / "bot.py"


def test_the_bot_answers_time_in_its_room(tmp_path: Path) -> None:
    with running_node() as node:
        create = f"http://{LOOPBACK}:{node.web_port}/api/createChatRoom?name=botroom"
        with urllib.request.urlopen(create, timeout=5) as reply:
            assert json.loads(reply.read())["didCreate"] is True
        log = tmp_path / "bot.log"
        url = f"ws://{LOOPBACK}:{node.web_port}/ws"
        with open(log, "wb") as output:
            bot = subprocess.Popen(
                [sys.executable, str(BOT), "--url", url, "--room", "botroom"],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        client = LineClient(node.socket_port)
        try:
            ready = wait_until(
                lambda: re.search(r"bot ready in botroom as (\S+)", log.read_text()),
                15,
                message="the bot in its room",
            )
            bot_id = ready.group(1)
            client.read()  # welcome
            assert client.request("roomAdd botroom")["status"] == "OK"
            assert client.request("say botroom !time")["status"] == "OK"
            answer = client.read_until(lambda m: isinstance(m, dict) and m.get("from") == bot_id)
            assert answer["room"] == "botroom"
            assert re.fullmatch(
                r"the time is \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", answer["message"]
            ), answer
        finally:
            client.close()
            bot.send_signal(signal.SIGTERM)
            assert bot.wait(15) == 0, log.read_text()
