"""The pure wire functions, driven with strings and bytes: no sockets, no node."""

from __future__ import annotations

from roomcast import jsonwire
from roomcast.protocol import replies
from roomcast.protocol.requests import (
    ActionRequest,
    FileRequest,
    InvalidRequest,
    QuitRequest,
    VerbRequest,
)
from roomcast.protocol.socket_lines import (
    Interrupt,
    Line,
    LineSplitter,
    NotUtf8,
    TooLong,
    parse_line,
)
from roomcast.protocol.websocket_events import parse_event

# LineSplitter ---------------------------------------------------------------------------


def test_splitter_cuts_lines_on_newline() -> None:
    assert LineSplitter(100).feed(b"roomAdd a\nroomAdd b\n") == [
        Line("roomAdd a"),
        Line("roomAdd b"),
    ]


def test_splitter_treats_carriage_return_as_a_line_end() -> None:
    assert LineSplitter(100).feed(b"one\rtwo\r") == [Line("one"), Line("two")]


def test_splitter_yields_one_line_for_crlf() -> None:
    assert LineSplitter(100).feed(b"detailsView\r\n") == [Line("detailsView")]


def test_splitter_ignores_empty_lines() -> None:
    assert LineSplitter(100).feed(b"\n\n\r\nstatus\n\n") == [Line("status")]


def test_splitter_ignores_lines_of_only_spaces_and_tabs() -> None:
    assert LineSplitter(100).feed(b"   \n\t \nstatus\n") == [Line("status")]


def test_splitter_still_reports_an_overlong_blank_line() -> None:
    assert LineSplitter(5).feed(b"        \n") == [TooLong(8, 5)]


def test_splitter_keeps_the_unterminated_tail_until_its_end_arrives() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"say room hel") == []
    assert splitter.feed(b"lo wor") == []
    assert splitter.feed(b"ld\nnext") == [Line("say room hello world")]
    assert splitter.feed(b"\n") == [Line("next")]


def test_splitter_accepts_a_line_of_exactly_the_limit() -> None:
    assert LineSplitter(5).feed(b"abcde\n") == [Line("abcde")]


def test_splitter_reports_a_complete_line_over_the_limit_with_its_size() -> None:
    assert LineSplitter(5).feed(b"abcdefgh\nok\n") == [TooLong(8, 5), Line("ok")]


def test_splitter_reports_an_unterminated_buffer_over_the_limit() -> None:
    assert LineSplitter(5).feed(b"abcdefg") == [TooLong(7, 5)]


def test_splitter_drops_the_rest_of_an_overlong_line_without_a_second_error() -> None:
    splitter = LineSplitter(5)
    assert splitter.feed(b"abcdefg") == [TooLong(7, 5)]
    assert splitter.feed(b"hijklmnopqrstuvwxyz") == []
    assert splitter.feed(b"still the same line\nok\n") == [Line("ok")]


def test_splitter_reports_an_overlong_tail_that_grew_across_feeds() -> None:
    splitter = LineSplitter(5)
    assert splitter.feed(b"abc") == []
    assert splitter.feed(b"def") == [TooLong(6, 5)]


def test_splitter_reports_invalid_utf8_and_keeps_going() -> None:
    assert LineSplitter(100).feed(b"\xc3\x28\nstatus\n") == [NotUtf8(), Line("status")]


def test_splitter_decodes_utf8_text() -> None:
    assert LineSplitter(100).feed("say r héllo ☃\n".encode()) == [Line("say r héllo ☃")]


def test_splitter_turns_telnet_ctrl_c_into_an_interrupt() -> None:
    assert LineSplitter(100).feed(b"\xff\xf4\xff\xfd\x06") == [Interrupt()]


def test_splitter_turns_a_lone_ctrl_d_into_an_interrupt() -> None:
    assert LineSplitter(100).feed(b"\x04") == [Interrupt()]


# parse_line -----------------------------------------------------------------------------


def test_parse_line_returns_none_for_a_blank_line() -> None:
    assert parse_line("   ") is None


def test_parse_line_quit_and_exit() -> None:
    assert parse_line("quit") == QuitRequest()
    assert parse_line("exit") == QuitRequest()


def test_parse_line_file_takes_the_rest_as_the_path() -> None:
    assert parse_line("file css/site.css") == FileRequest("css/site.css")


def test_parse_line_param_add_with_equals() -> None:
    assert parse_line("paramAdd name=alice") == VerbRequest(
        "paramAdd", {"key": "name", "value": "alice"}
    )


def test_parse_line_param_add_with_equals_keeps_later_equals_and_spaces_in_the_value() -> None:
    assert parse_line("paramAdd q=a=b c") == VerbRequest("paramAdd", {"key": "q", "value": "a=b c"})


def test_parse_line_param_add_with_a_space() -> None:
    assert parse_line("paramAdd name alice smith") == VerbRequest(
        "paramAdd", {"key": "name", "value": "alice smith"}
    )


def test_parse_line_param_view_and_delete() -> None:
    assert parse_line("paramView name") == VerbRequest("paramView", {"key": "name"})
    assert parse_line("paramDelete name") == VerbRequest("paramDelete", {"key": "name"})


def test_parse_line_room_verbs_take_one_room() -> None:
    assert parse_line("roomAdd lobby") == VerbRequest("roomAdd", {"room": "lobby"})
    assert parse_line("roomLeave lobby") == VerbRequest("roomLeave", {"room": "lobby"})
    assert parse_line("roomView lobby") == VerbRequest("roomView", {"room": "lobby"})


def test_parse_line_say_keeps_the_message_words() -> None:
    assert parse_line("say lobby hello  big world") == VerbRequest(
        "say", {"room": "lobby", "message": "hello  big world"}
    )


def test_parse_line_verbs_without_arguments() -> None:
    for verb in ("paramsView", "paramsDelete", "detailsView", "documentation"):
        assert parse_line(verb) == VerbRequest(verb, {})


def test_parse_line_other_words_are_actions_with_sticky_params() -> None:
    assert parse_line("status") == ActionRequest("status", None)
    assert parse_line("createChatRoom extra words") == ActionRequest("createChatRoom", None)


def test_parse_line_json_action_line() -> None:
    assert parse_line('{"action":"createChatRoom","params":{"name":"r"}}') == ActionRequest(
        "createChatRoom", {"name": "r"}
    )


def test_parse_line_json_action_inside_params() -> None:
    assert parse_line('{"params":{"action":"status","x":1}}') == ActionRequest(
        "status", {"action": "status", "x": 1}
    )


def test_parse_line_json_without_params_has_empty_params() -> None:
    assert parse_line('{"action":"status"}') == ActionRequest("status", {})


def test_parse_line_json_array_is_invalid() -> None:
    assert parse_line("[1,2]") == InvalidRequest("a JSON request must be an object")


def test_parse_line_json_string_is_invalid() -> None:
    assert parse_line('"hello"') == InvalidRequest("a JSON request must be an object")


def test_parse_line_broken_json_is_invalid() -> None:
    assert parse_line("{not json") == InvalidRequest("invalid JSON request")


def test_parse_line_json_params_must_be_an_object() -> None:
    assert parse_line('{"action":"status","params":[1]}') == InvalidRequest(
        "params must be a JSON object"
    )


def test_parse_line_json_action_must_be_a_string() -> None:
    assert parse_line('{"action":5}') == InvalidRequest("action must be a string")


# parse_event (WebSocket) ----------------------------------------------------------------


def test_parse_event_room_add_with_message_id() -> None:
    assert parse_event('{"event":"roomAdd","room":"r","messageId":7}') == (
        VerbRequest("roomAdd", {"room": "r"}),
        7,
    )


def test_parse_event_key_order_does_not_matter() -> None:
    assert parse_event('{"room":"r","message":"hi","event":"say"}') == (
        VerbRequest("say", {"room": "r", "message": "hi"}),
        None,
    )


def test_parse_event_action_takes_its_name_from_params() -> None:
    assert parse_event('{"event":"action","params":{"action":"status","a":1}}') == (
        ActionRequest("status", {"action": "status", "a": 1}),
        None,
    )


def test_parse_event_details_view_documentation_file_and_quit() -> None:
    assert parse_event('{"event":"detailsView"}') == (VerbRequest("detailsView", {}), None)
    assert parse_event('{"event":"documentation"}') == (VerbRequest("documentation", {}), None)
    assert parse_event(b'{"event":"file","file":"a.txt"}') == (FileRequest("a.txt"), None)
    assert parse_event('{"event":"quit"}') == (QuitRequest(), None)


def test_parse_event_unknown_event_keeps_the_message_id() -> None:
    assert parse_event('{"event":"dance","messageId":"m1"}') == (
        InvalidRequest("unknown event (dance)"),
        "m1",
    )


def test_parse_event_rejects_non_objects_and_broken_json() -> None:
    assert parse_event("[1]") == (InvalidRequest("a frame must be a JSON object"), None)
    assert parse_event("{x") == (
        InvalidRequest("invalid JSON: a frame must be a JSON object"),
        None,
    )


def test_parse_event_action_without_params_action_says_what_to_send() -> None:
    expected = InvalidRequest(
        'action is required: send {"event":"action","params":{"action":"<name>",…}}'
    )
    assert parse_event('{"event":"action","messageId":3}') == (expected, 3)
    assert parse_event('{"event":"action","action":"status"}') == (expected, None)
    assert parse_event('{"event":"action","params":{"action":""}}') == (expected, None)
    assert parse_event('{"event":"action","params":{"action":7}}') == (expected, None)


def test_parse_event_action_params_must_be_an_object() -> None:
    assert parse_event('{"event":"action","params":5}') == (
        InvalidRequest("params must be a JSON object"),
        None,
    )


# replies --------------------------------------------------------------------------------


def _line(reply: object) -> bytes:
    return jsonwire.dumps(reply) + b"\r\n"


def test_welcome_bytes() -> None:
    assert _line(replies.welcome("Hello! Welcome to the roomcast api")) == (
        b'{"welcome":"Hello! Welcome to the roomcast api","context":"api"}\r\n'
    )


def test_goodbye_bytes() -> None:
    assert _line(replies.GOODBYE) == b'{"status":"Bye!","context":"api"}\r\n'


def test_verb_ok_bytes() -> None:
    assert _line(replies.verb_ok(True, 3)) == (
        b'{"status":"OK","context":"response","data":true,"messageCount":3}\r\n'
    )


def test_verb_failed_bytes() -> None:
    assert _line(replies.verb_failed("connection already in this room (r)", 4)) == (
        b'{"status":"connection already in this room (r)","context":"response",'
        b'"data":false,"messageCount":4}\r\n'
    )


def test_action_reply_adds_context_and_count_after_the_response() -> None:
    assert _line(replies.action_reply({"didCreate": True}, 5)) == (
        b'{"didCreate":true,"context":"response","messageCount":5}\r\n'
    )


def test_action_reply_does_not_mutate_the_response() -> None:
    response = {"ok": 1}
    replies.action_reply(response, 1)
    assert response == {"ok": 1}


def test_request_error_bytes() -> None:
    assert _line(replies.request_error("request is not valid UTF-8", 6)) == (
        b'{"status":"error","error":"request is not valid UTF-8","context":"response",'
        b'"messageCount":6}\r\n'
    )


def test_replies_carry_the_message_id_when_given() -> None:
    assert replies.verb_ok(None, 1, "a")["messageId"] == "a"
    assert replies.verb_failed("x", 1, "b")["messageId"] == "b"
    assert replies.action_reply({}, 1, "c")["messageId"] == "c"
    assert replies.request_error("x", 1, "d")["messageId"] == "d"


def test_replies_have_no_message_id_when_absent() -> None:
    assert "messageId" not in replies.verb_ok(None, 1)


def test_too_long_error_names_the_received_size_first() -> None:
    assert replies.too_long_error(2000, 1024) == ("data length is too big (2000 received/1024 max)")


def test_file_not_found_text() -> None:
    assert replies.file_not_found("x.txt") == "That file is not found (x.txt)"
