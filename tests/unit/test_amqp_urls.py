"""SCRIBE_AMQP_URL as a list of cluster nodes (issue 19, item 2): parsing, and the choice of a
live node (worker/failover.py)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from worker.errors import SettingsError
from worker.failover import broker_endpoint, endpoints, first_live
from worker.settings import Settings

PASSWORD = "s3cret-pw"
NODE_A = f"amqp://scribe:{PASSWORD}@10.0.0.1:5672/"
NODE_B = f"amqp://scribe:{PASSWORD}@10.0.0.2:5673/"


def test_one_url_is_a_list_of_one() -> None:
    settings = Settings.from_env({"SCRIBE_AMQP_URL": NODE_A})
    assert settings.broker_urls() == (NODE_A.rstrip("/"),)
    assert settings.amqp_url.value == NODE_A.rstrip("/")


def test_the_default_is_the_local_broker() -> None:
    assert Settings.from_env({}).broker_urls() == ("amqp://guest:guest@127.0.0.1:5672",)


def test_several_urls_keep_their_order_and_spaces_around_commas_are_ignored() -> None:
    settings = Settings.from_env({"SCRIBE_AMQP_URL": f" {NODE_B} , {NODE_A}"})
    assert settings.broker_urls() == (NODE_B.rstrip("/"), NODE_A.rstrip("/"))
    assert settings.amqp_url.value == NODE_B.rstrip("/")
    assert PASSWORD not in repr(settings.amqp_urls)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        pytest.param(f"{NODE_A},amqps://scribe:{PASSWORD}@h:5671/", "same scheme", id="schemes"),
        pytest.param(f"{NODE_A},,{NODE_B}", "URL 2 of 3", id="empty-item"),
        pytest.param(f"{NODE_A},", "URL 2 of 2", id="trailing-comma"),
        pytest.param(f"{NODE_A},http://h:5672/", "amqp/amqps", id="http"),
        pytest.param(f"{NODE_A},amqp:///", "with a host", id="no-host"),
        pytest.param(f"{NODE_A},amqp://u:{PASSWORD}@h:99999/", "port", id="port"),
        pytest.param(f"{NODE_A},{NODE_A}", "same host and port", id="twice"),
        pytest.param(",".join([NODE_A] * 17), "at most 16", id="too-many"),
    ],
)
def test_a_bad_list_fails_naming_the_variable_without_the_password(value: str, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"SCRIBE_AMQP_URL": value})
    assert caught.value.variable == "SCRIBE_AMQP_URL"
    assert words in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_tls_variables_apply_to_every_node_of_an_amqps_list() -> None:
    urls = "amqps://u:p@node-1:5671/,amqps://u:p@node-2:5671/"
    settings = Settings.from_env({"SCRIBE_AMQP_URL": urls, "SCRIBE_AMQP_SERVER_NAME": "rabbit"})
    assert settings.amqp_tls is not None
    assert settings.amqp_tls.server_name == "rabbit"
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"SCRIBE_AMQP_URL": f"{NODE_A},{NODE_B}", "SCRIBE_AMQP_CA_FILE": "x"})
    assert caught.value.variable == "SCRIBE_AMQP_CA_FILE"


def test_endpoints_show_hosts_and_ports_only() -> None:
    assert broker_endpoint(NODE_A) == "10.0.0.1:5672"
    assert endpoints((NODE_A, NODE_B)) == "10.0.0.1:5672, 10.0.0.2:5673"
    assert broker_endpoint("amqps://u:p@[::1]/") == "[::1]:5671"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_first_node_that_accepts_tcp_is_chosen_wrapping_around() -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    live_port = server.sockets[0].getsockname()[1]
    dead = f"amqp://guest:guest@127.0.0.1:{_closed_port()}/"
    live = f"amqp://guest:guest@127.0.0.1:{live_port}/"
    async with server:
        assert await first_live((dead, live, dead)) == 1
        assert await first_live((live, dead, dead), start=1) == 0  # wraps to the start
        assert await first_live((dead, dead)) == 0  # none: the start, whose attempt fails
