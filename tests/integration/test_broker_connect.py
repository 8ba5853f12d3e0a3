"""worker.broker.connect: a refused login fails at once (retrying cannot help), an unreachable
broker is retried until give_up_after_s with one log line, not one per attempt."""

from __future__ import annotations

import pytest
import structlog
from aiormq.exceptions import AMQPConnectionError, ProbableAuthenticationError

from ops.rabbit_node import free_port
from worker.broker import connect

pytestmark = pytest.mark.broker


async def test_a_refused_login_is_not_retried() -> None:
    url = "amqp://guest:wrong-password@127.0.0.1:5672/"
    with structlog.testing.capture_logs() as logs, pytest.raises(ProbableAuthenticationError):
        await connect(url, "test", give_up_after_s=30)
    assert "broker.connect_failed" not in [entry["event"] for entry in logs]  # no retry at all


async def test_an_unreachable_broker_is_retried_with_one_log_line() -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # nothing listens there
    with structlog.testing.capture_logs() as logs, pytest.raises((AMQPConnectionError, OSError)):
        await connect(url, "test", give_up_after_s=2.5)
    assert [entry["event"] for entry in logs].count("broker.connect_failed") == 1
