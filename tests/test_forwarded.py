"""The client address behind trusted proxies: the right-most untrusted X-Forwarded-For entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from roomcast.config import ConfigError, load_config
from roomcast.protocol.forwarded import client_address

PROXIES = ["10.0.0.0/8", "192.0.2.1"]


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("10.0.0.5", ["203.0.113.7"], []) == "10.0.0.5"


def test_a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_the_header_says() -> None:
    assert client_address("198.51.100.9", ["203.0.113.7"], PROXIES) == "198.51.100.9"


def test_behind_one_trusted_proxy_the_forwarded_address_is_the_client() -> None:
    assert client_address("10.0.0.5", ["203.0.113.7"], PROXIES) == "203.0.113.7"


def test_the_right_most_untrusted_entry_wins_over_addresses_the_client_made_up() -> None:
    header = ["1.2.3.4, 203.0.113.7, 192.0.2.1"]
    assert client_address("10.0.0.5", header, PROXIES) == "203.0.113.7"


def test_several_header_values_are_read_as_one_list_in_order() -> None:
    header = ["1.2.3.4", "203.0.113.7", "10.1.1.1"]
    assert client_address("10.0.0.5", header, PROXIES) == "203.0.113.7"


def test_when_every_entry_is_a_trusted_proxy_the_left_most_is_the_client() -> None:
    assert client_address("10.0.0.5", ["10.9.9.9, 10.8.8.8"], PROXIES) == "10.9.9.9"


def test_an_entry_that_is_not_an_address_stops_at_the_hop_that_reported_it() -> None:
    assert client_address("10.0.0.5", ["203.0.113.7, junk, 10.8.8.8"], PROXIES) == "10.8.8.8"


def test_a_trusted_peer_without_the_header_is_the_client() -> None:
    assert client_address("10.0.0.5", [], PROXIES) == "10.0.0.5"


def test_ipv6_proxies_and_clients_are_understood() -> None:
    assert client_address("fd00::1", ["2001:db8::7"], ["fd00::/8"]) == "2001:db8::7"


def test_a_trusted_proxy_that_is_not_an_address_stops_the_node_at_start(tmp_path: Path) -> None:
    config = tmp_path / "roomcast.toml"
    config.write_text('[web]\ntrusted_proxies = ["10.0.0.0/33"]\n')
    with pytest.raises(ConfigError) as refused:
        load_config({}, env={}, config_file=config)
    assert str(refused.value) == (
        "[web] trusted_proxies: '10.0.0.0/33' is not an IP address or CIDR network"
    )
