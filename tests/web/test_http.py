"""HTTP on the web port: actions at /api/<action>, static files, the cookie."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from websupport import HttpReply, http_request, unique_room

from support import LineClient, NodeProcess, start_node

SECRET = "top secret: outside the public directory"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/public`` with a few files, next to ``<tmp>/secret.txt`` it must not reveal."""
    base = tmp_path_factory.mktemp("site")
    (base / "secret.txt").write_text(SECRET)
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_text(SECRET)
    public = base / "public"
    (public / "docs").mkdir(parents=True)
    (public / "hello.txt").write_text("hello from the public directory\n")
    (public / "docs" / "page.html").write_text("<!doctype html><title>page</title>")
    (public / "data.json").write_text('{"ok": true}')
    (public / "link-out.txt").symlink_to(base / "secret.txt")
    (public / "link-out-relative.txt").symlink_to(Path("..") / "secret.txt")
    (public / "dir-out").symlink_to(base / "outside", target_is_directory=True)
    return base


@pytest.fixture(scope="module")
def web_node(site: Path) -> Iterator[NodeProcess]:
    """A node serving ``site/public`` (overrides the shared ``web_node``)."""
    process = start_node("--public", str(site / "public"))
    yield process
    process.stop()


def get(node: NodeProcess, target: str, **kwargs: Any) -> HttpReply:
    return http_request(node.web_port, "GET", target, **kwargs)


def post(node: NodeProcess, target: str, body: bytes, content_type: str) -> HttpReply:
    return http_request(
        node.web_port, "POST", target, body=body, headers={"Content-Type": content_type}
    )


def assert_json(reply: HttpReply, status: int, body: dict[str, Any]) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers.get_content_type() == "application/json"
    assert reply.json() == body


# actions ---------------------------------------------------------------------------------


def test_get_runs_an_action(web_node: NodeProcess) -> None:
    reply = get(web_node, "/api/status")
    assert reply.status == 200
    assert reply.headers.get_content_type() == "application/json"
    body = reply.json()
    assert body["id"] == web_node.node_id
    assert isinstance(body["uptime"], int)
    assert "error" not in body


def test_get_takes_params_from_the_query_string(web_node: NodeProcess) -> None:
    name = unique_room("query")
    assert_json(
        get(web_node, f"/api/createChatRoom?{urlencode({'name': name})}"), 200, {"didCreate": True}
    )


def test_post_takes_params_from_a_form_body(web_node: NodeProcess) -> None:
    name = unique_room("form")
    reply = post(
        web_node,
        "/api/createChatRoom",
        urlencode({"name": name}).encode(),
        "application/x-www-form-urlencoded",
    )
    assert_json(reply, 200, {"didCreate": True})


def test_post_takes_params_from_a_multipart_form_body(web_node: NodeProcess) -> None:
    name = unique_room("multipart")
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n'
        f"{name}\r\n--{boundary}--\r\n"
    ).encode()
    reply = post(web_node, "/api/createChatRoom", body, f"multipart/form-data; boundary={boundary}")
    assert_json(reply, 200, {"didCreate": True})


def test_post_takes_params_from_a_json_body(web_node: NodeProcess) -> None:
    name = unique_room("json")
    reply = post(
        web_node, "/api/createChatRoom", json.dumps({"name": name}).encode(), "application/json"
    )
    assert_json(reply, 200, {"didCreate": True})


def test_post_takes_params_from_the_query_string_too(web_node: NodeProcess) -> None:
    name = unique_room("postquery")
    reply = post(
        web_node,
        f"/api/createChatRoom?{urlencode({'name': name})}",
        b"",
        "application/x-www-form-urlencoded",
    )
    assert_json(reply, 200, {"didCreate": True})


def test_a_room_created_over_http_can_be_joined_over_tcp(web_node: NodeProcess) -> None:
    name = unique_room("shared")
    assert get(web_node, f"/api/createChatRoom?name={name}").status == 200
    client = LineClient(web_node.socket_port)
    try:
        client.read()
        assert client.request(f"roomAdd {name}")["status"] == "OK"
    finally:
        client.close()


def test_unknown_action_is_404(web_node: NodeProcess) -> None:
    assert_json(
        get(web_node, "/api/noSuchAction"), 404, {"error": "unknown action or invalid apiVersion"}
    )
    assert_json(
        post(web_node, "/api/noSuchAction", b"{}", "application/json"),
        404,
        {"error": "unknown action or invalid apiVersion"},
    )


@pytest.mark.parametrize("path", ["/api/", "/api"])
def test_api_without_an_action_name_is_a_json_404(web_node: NodeProcess, path: str) -> None:
    assert_json(get(web_node, path), 404, {"error": "unknown action or invalid apiVersion"})


def test_missing_required_param_is_422(web_node: NodeProcess) -> None:
    assert_json(
        get(web_node, "/api/createChatRoom"),
        422,
        {"error": "name is a required parameter for this action"},
    )


def test_an_action_error_is_400_with_its_message(web_node: NodeProcess) -> None:
    name = unique_room("twice")
    assert get(web_node, f"/api/createChatRoom?name={name}").status == 200
    assert_json(get(web_node, f"/api/createChatRoom?name={name}"), 400, {"error": "room exists"})


def test_a_json_body_that_does_not_parse_is_400(web_node: NodeProcess) -> None:
    reply = post(web_node, "/api/createChatRoom", b"{not json", "application/json")
    assert reply.status == 400
    assert reply.json()["error"]


def test_a_json_body_that_is_not_an_object_is_400(web_node: NodeProcess) -> None:
    reply = post(web_node, "/api/createChatRoom", b'["name"]', "application/json")
    assert reply.status == 400
    assert reply.json()["error"]


def test_http_params_are_not_remembered_between_requests(web_node: NodeProcess) -> None:
    name = unique_room("stateless")
    assert get(web_node, f"/api/createChatRoom?name={name}").status == 200
    assert get(web_node, "/api/createChatRoom").status == 422


# static files ----------------------------------------------------------------------------


def test_serves_a_file_from_the_public_directory(web_node: NodeProcess) -> None:
    reply = get(web_node, "/hello.txt")
    assert reply.status == 200
    assert reply.body == b"hello from the public directory\n"
    assert reply.headers.get_content_type() == "text/plain"


def test_serves_files_from_subdirectories_with_their_mime_type(web_node: NodeProcess) -> None:
    page = get(web_node, "/docs/page.html")
    assert page.status == 200
    assert page.body == b"<!doctype html><title>page</title>"
    assert page.headers.get_content_type() == "text/html"
    data = get(web_node, "/data.json")
    assert data.status == 200
    assert data.headers.get_content_type() == "application/json"


def test_a_missing_file_is_404(web_node: NodeProcess) -> None:
    reply = get(web_node, "/missing.txt")
    assert reply.status == 404
    assert b"That file is not found" in reply.body


def test_serves_the_browser_client_by_default(web_node: NodeProcess) -> None:
    reply = get(web_node, "/roomcast.js")
    assert reply.status == 200
    assert reply.headers.get_content_type() in ("application/javascript", "text/javascript")
    assert b"RoomcastClient" in reply.body


def test_serves_the_chat_page_by_default(web_node: NodeProcess) -> None:
    reply = get(web_node, "/chat.html")
    assert reply.status == 200
    assert reply.headers.get_content_type() == "text/html"
    for element_id in (
        b'id="messages"',
        b'id="message-input"',
        b'id="rooms"',
        b'id="members"',
        b'id="status"',
    ):
        assert element_id in reply.body
    assert b"roomcast.js" in reply.body


def test_the_site_root_leads_to_the_chat_page(web_node: NodeProcess) -> None:
    reply = get(web_node, "/")
    assert reply.status in (301, 302, 303, 307, 308)
    assert reply.headers["Location"] == "/chat.html"


def test_a_node_without_public_flag_serves_the_built_in_files(node: NodeProcess) -> None:
    assert http_request(node.web_port, "GET", "/chat.html").status == 200
    assert http_request(node.web_port, "GET", "/roomcast.js").status == 200
    assert http_request(node.web_port, "GET", "/hello.txt").status == 404


ESCAPES = [
    "/../secret.txt",
    "/docs/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/docs/%2e%2e/%2e%2e/secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/docs%2f..%2f..%2fsecret.txt",
    "/%252e%252e/secret.txt",
    "/..%5csecret.txt",
    "/link-out.txt",
    "/link-out-relative.txt",
    "/dir-out/secret.txt",
    "/hello.txt%00.html",
]


@pytest.mark.parametrize("target", ESCAPES)
def test_paths_escaping_the_public_directory_are_refused(
    web_node: NodeProcess, target: str
) -> None:
    reply = get(web_node, target)
    assert reply.status in (400, 403, 404), (reply.status, reply.body)
    assert SECRET.encode() not in reply.body


@pytest.mark.parametrize("style", ["plain", "double-slash", "encoded"])
def test_absolute_paths_are_refused(web_node: NodeProcess, site: Path, style: str) -> None:
    absolute = str(site / "secret.txt")
    target = {
        "plain": absolute,
        "double-slash": "/" + absolute,
        "encoded": "/" + quote(absolute, safe=""),
    }[style]
    reply = get(web_node, target)
    assert reply.status in (400, 403, 404), (reply.status, reply.body)
    assert SECRET.encode() not in reply.body


def test_absolute_paths_to_system_files_are_refused(web_node: NodeProcess) -> None:
    for target in ("//etc/passwd", "/%2fetc%2fpasswd", "/%2Fetc/passwd"):
        reply = get(web_node, target)
        assert reply.status in (400, 403, 404), (target, reply.status)
        assert b"root:" not in reply.body


# the sessionID cookie --------------------------------------------------------------------


def session_cookies(reply: HttpReply) -> list[str]:
    return reply.cookies("sessionID")


@pytest.mark.parametrize("target", ["/chat.html", "/api/status", "/hello.txt"])
def test_the_first_visit_gets_a_session_cookie(web_node: NodeProcess, target: str) -> None:
    (cookie,) = session_cookies(get(web_node, target))
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert UUID_RE.match(value), cookie
    attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert "httponly" in attributes
    assert "path=/" in attributes


def test_each_new_visitor_gets_a_different_session(web_node: NodeProcess) -> None:
    first = session_cookies(get(web_node, "/chat.html"))[0].split(";")[0]
    second = session_cookies(get(web_node, "/chat.html"))[0].split(";")[0]
    assert first != second


@pytest.mark.parametrize("target", ["/chat.html", "/api/status", "/missing.txt"])
def test_a_visitor_sending_the_cookie_does_not_get_a_new_one(
    web_node: NodeProcess, target: str
) -> None:
    reply = get(web_node, target, headers={"Cookie": "sessionID=returning-visitor"})
    assert session_cookies(reply) == []
