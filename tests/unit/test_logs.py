"""worker/logs.py (issue 13, item 11): standard-library records come out as the same one-line
JSON as structlog's, tracebacks included, and configuring again replaces only our handler."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from worker.logs import configure_logging


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_library_records_and_tracebacks_are_one_json_line_each() -> None:
    stream = io.StringIO()
    configure_logging("info", stream)
    logging.getLogger("faster_whisper").info("Processing audio with duration %s", "00:02.000")
    try:
        raise ConnectionError("Unexpected connection close")
    except ConnectionError:
        logging.getLogger("aiormq.connection").exception("reader exited abnormally")
    logging.getLogger("aiormq.connection").debug("a whole frame")  # never below WARNING
    structlog.get_logger().info("worker.started", text="patient words")
    first, second, third = lines(stream)
    assert first["event"] == "Processing audio with duration 00:02.000"
    assert (first["logger"], first["level"]) == ("faster_whisper", "info")
    assert second["level"] == "error"
    assert str(second["exception"]).startswith("Traceback (most recent call last):")
    assert "ConnectionError: Unexpected connection close" in str(second["exception"])
    assert third["event"] == "worker.started"
    assert third["text"] == "[redacted]"
    assert len(stream.getvalue().splitlines()) == 3


def test_configuring_again_replaces_our_handler_only(caplog: pytest.LogCaptureFixture) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", first)
    configure_logging("info", second)
    logging.getLogger("asyncio").warning("Task exception was never retrieved")
    assert first.getvalue() == ""
    assert [line["event"] for line in lines(second)] == ["Task exception was never retrieved"]
    assert "Task exception was never retrieved" in caplog.text  # pytest's handler stays
