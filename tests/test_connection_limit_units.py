"""The connection-limit pieces without sockets: the admission's counts and token bucket,
the open-file watch, origin comparison and the refusal responses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from roomcast.config import LimitsSettings
from roomcast.protocol.origins import OriginPolicy, normalize_origin
from roomcast.protocol.websocket_handshake import refusal
from roomcast.servers.admission import Admission, OpenFiles


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def no_file_limit() -> OpenFiles:
    return OpenFiles(count_files=lambda: 10, file_limit=lambda: 0)


def admission(clock: Clock | None = None, **limits: float) -> Admission:
    clock = clock or Clock()
    return Admission(LimitsSettings(**limits), clock, no_file_limit())  # type: ignore[arg-type]


def test_max_connections_refuses_the_one_over_and_admits_again_after_a_release() -> None:
    gate = admission(max_connections=2)
    assert gate.refusal("10.0.0.1") is None
    assert gate.refusal("10.0.0.2") is None
    assert gate.refusal("10.0.0.3") == "max_connections: 2 open of 2"
    gate.release("10.0.0.1")
    assert gate.refusal("10.0.0.3") is None


def test_max_connections_per_ip_counts_each_address_apart() -> None:
    gate = admission(max_connections_per_ip=1)
    assert gate.refusal("10.0.0.1") is None
    assert gate.refusal("10.0.0.1") == "max_connections_per_ip: 10.0.0.1 holds 1 of 1"
    assert gate.refusal("10.0.0.2") is None


def test_an_address_with_no_connection_left_is_forgotten() -> None:
    gate = admission()
    gate.refusal("10.0.0.1")
    gate.release("10.0.0.1")
    assert gate.per_ip == {}
    assert gate.open == 0


def test_connection_rate_allows_a_burst_of_one_second_then_refills() -> None:
    clock = Clock()
    gate = admission(clock, connection_rate=3)
    assert [gate.refusal("a") for _ in range(4)] == [
        None,
        None,
        None,
        "connection_rate: over 3 per second",
    ]
    clock.now += 0.34  # one more token
    assert gate.refusal("a") is None
    assert gate.refusal("a") is not None


def test_a_connection_rate_below_one_still_admits_one_connection_at_a_time() -> None:
    clock = Clock()
    gate = admission(clock, connection_rate=0.5)
    assert gate.refusal("a") is None
    assert gate.refusal("a") is not None
    clock.now += 2.0
    assert gate.refusal("a") is None


def test_a_refused_connection_is_not_counted() -> None:
    gate = admission(max_connections=1)
    gate.refusal("a")
    gate.refusal("b")
    assert (gate.open, gate.per_ip) == (1, {"a": 1})


def test_limits_of_zero_admit_everything() -> None:
    gate = admission()
    assert all(gate.refusal("a") is None for _ in range(1000))


def test_open_files_near_the_limit_refuse_new_connections() -> None:
    files = OpenFiles(Clock(), count_files=lambda: 1000, file_limit=lambda: 1024)
    gate = Admission(LimitsSettings(), Clock(), files)
    assert files.threshold == 0  # not counted before the first question
    assert gate.refusal("a") == "open files: 1000 open of a limit of 1024"
    assert gate.http_refusal() is not None
    assert files.threshold == 1024 - 51


def test_open_files_count_connections_between_two_counts() -> None:
    clock = Clock()
    files = OpenFiles(clock, count_files=lambda: 200, file_limit=lambda: 256)
    gate = Admission(LimitsSettings(), clock, files)
    admitted = 0
    while gate.refusal("a") is None:
        admitted += 1
    assert admitted == 256 - 16 - 200  # the margin is 16 descriptors at least
    gate.release("a")
    assert gate.refusal("a") is None


def test_open_files_are_counted_again_after_a_second() -> None:
    clock = Clock()
    counts = iter([250, 100])
    files = OpenFiles(clock, count_files=lambda: next(counts), file_limit=lambda: 256)
    assert files.near_limit()
    clock.now += 1.0
    assert not files.near_limit()


def test_without_a_file_limit_nothing_is_refused_for_files() -> None:
    files = OpenFiles(Clock(), count_files=lambda: 10**6, file_limit=lambda: 0)
    assert not files.near_limit()


@pytest.mark.parametrize(
    ("origin", "normal"),
    [
        ("https://App.Example.COM", "https://app.example.com"),
        ("HTTPS://app.example.com:443", "https://app.example.com"),
        ("http://app.example.com:8080", "http://app.example.com:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("null", "null"),
    ],
)
def test_origins_are_normalized_on_scheme_host_and_default_port(origin: str, normal: str) -> None:
    assert normalize_origin(origin) == normal


def test_an_origin_policy_allows_listed_origins_and_requests_without_one() -> None:
    policy = OriginPolicy(["https://app.example.com"])
    assert policy.allows("https://APP.example.com")
    assert policy.allows(None)
    assert not policy.allows("https://evil.example")
    assert not policy.allows("null")


def test_an_empty_origin_policy_allows_every_origin() -> None:
    assert OriginPolicy([]).allows("https://anywhere.example")
    assert not OriginPolicy([]).restricted


def test_the_503_refusal_is_a_complete_response_that_closes_the_connection() -> None:
    assert refusal(503, "server is busy") == (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 14\r\nConnection: close\r\n\r\nserver is busy"
    )


_COUNT_IN_A_FRESH_PROCESS = """
import json, os
from roomcast.servers.admission import count_open_files
before = count_open_files()
files = [open(os.devnull) for _ in range(50)]
during, listed = count_open_files(), len(os.listdir("/proc/self/fd")) - 1
for file in files:
    file.close()
print(json.dumps([before, during, listed, count_open_files()]))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_the_open_file_count_follows_descriptors_opened_and_closed() -> None:
    # In a process of its own: no other thread opens or closes files meanwhile.
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_IN_A_FRESH_PROCESS],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    before, during, listed, after = json.loads(out.stdout)
    assert during == listed
    assert during - before == 50
    assert after == before
