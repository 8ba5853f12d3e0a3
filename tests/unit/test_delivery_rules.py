"""Pure parts of the delivery rules: tier choice, backoff, Retry-After, message parsing."""

from __future__ import annotations

import io
import json
import random
import uuid
from typing import Any

import pytest
import structlog

from schemas.errors import ErrorType
from schemas.jobs import JobRequest, PollMessage
from worker.codec import parse_message
from worker.delivery import (
    MessageLog,
    choose_tier_at_most_ms,
    choose_tier_ms,
    retry_delay_ms,
)
from worker.errors import PermanentError, ScribeError
from worker.logs import configure_logging
from worker.outcomes import stable_event_id
from worker.settings import RetrySettings
from worker.tracing import new_traceparent, valid_traceparent

RETRY = RetrySettings(
    delay_tiers_ms=(1_000, 5_000, 30_000, 120_000),
    max_attempts=5,
    retry_base_ms=1_000,
    poll_interval_ms=5_000,
    poll_deadline_s=60,
    delivery_limit=10,
    stage_claim_ttl_s=300,
)


@pytest.mark.parametrize(
    ("wanted", "tier"),
    [(0, 1_000), (1_000, 1_000), (1_001, 5_000), (29_000, 30_000), (10**9, 120_000)],
)
def test_choose_tier_waits_at_least_the_wanted_time(wanted: int, tier: int) -> None:
    assert choose_tier_ms(RETRY.delay_tiers_ms, wanted) == tier


@pytest.mark.parametrize(
    ("wanted", "tier"), [(0, 1_000), (999, 1_000), (4_000, 1_000), (5_000, 5_000), (10**9, 120_000)]
)
def test_rate_limited_messages_come_back_no_later_than_their_slot(wanted: int, tier: int) -> None:
    assert choose_tier_at_most_ms(RETRY.delay_tiers_ms, wanted) == tier


def test_backoff_grows_with_attempts() -> None:
    rng = random.Random(7)
    delays = [retry_delay_ms(RETRY, attempt, None, rng) for attempt in range(1, 8)]
    assert delays == sorted(delays)
    assert delays[0] == 1_000
    assert delays[-1] == 120_000


def test_retry_after_is_a_floor() -> None:
    rng = random.Random(1)
    assert retry_delay_ms(RETRY, 1, 20.0, rng) == 30_000
    assert retry_delay_ms(RETRY, 1, 5.0, rng) == 5_000


def test_event_ids_are_stable_per_job_and_kind() -> None:
    job = str(uuid.uuid4())
    assert stable_event_id(job, "completed") == stable_event_id(job, "completed")
    assert stable_event_id(job, "completed") != stable_event_id(job, "failed/0")


def _error_of(body: bytes) -> ScribeError:
    with pytest.raises(ScribeError) as caught:
        parse_message(JobRequest, body)
    return caught.value


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        (b"", ErrorType.INVALID_MESSAGE),
        (b"\x80\x81", ErrorType.INVALID_MESSAGE),
        (b'"a string"', ErrorType.INVALID_MESSAGE),
        (b'{"schemaVersion": 2}', ErrorType.UNSUPPORTED_SCHEMA_VERSION),
        (b'{"schemaVersion": "1"}', ErrorType.UNSUPPORTED_SCHEMA_VERSION),
        (
            b'{"jobId": "not-a-uuid", "audio": {"url": "https://a/b.wav"}}',
            ErrorType.INVALID_MESSAGE,
        ),
        (
            b'{"jobId": "7d0c31f6-52c5-4f53-a1b4-2a3c0dfc6a4e", "audio": {}}',
            ErrorType.INVALID_MESSAGE,
        ),
    ],
)
def test_bad_bodies_raise_a_specific_permanent_error(body: bytes, error_type: str) -> None:
    error = _error_of(body)
    assert isinstance(error, PermanentError)
    assert error.error_type == error_type


def test_validation_message_names_fields_but_never_values() -> None:
    secret = "Patient Jane Roe has chest pain"
    body = json.dumps(
        {
            "jobId": "7d0c31f6-52c5-4f53-a1b4-2a3c0dfc6a4e",
            "audio": {"url": "https://a/b.wav"},
            "summary": {"outputFormat": secret},
            secret: 1,
        }
    ).encode()
    error = _error_of(body)
    assert "summary.outputFormat" in error.message
    assert "Jane" not in error.message
    assert "chest" not in error.message


def test_stage_message_must_match_its_job() -> None:
    job = JobRequest.model_validate(
        {"jobId": str(uuid.uuid4()), "audio": {"url": "https://a/b.wav"}}
    )
    body = {
        "jobId": str(uuid.uuid4()),
        "job": json.loads(job.to_wire()),
        "transcription": {
            "provider": "intron",
            "handle": "h",
            "submittedAt": "2026-01-01T00:00:00Z",
        },
    }
    error = None
    try:
        parse_message(PollMessage, json.dumps(body).encode())
    except ScribeError as exc:
        error = exc
    assert error is not None
    assert error.error_type == ErrorType.INVALID_MESSAGE


@pytest.mark.parametrize("kind", ["completed", "failed/0", "stage/poll", "ünïcode"])
def test_event_ids_are_uuid5_in_the_event_namespace(kind: str) -> None:
    job_id = str(uuid.uuid4())
    expected = uuid.uuid5(uuid.UUID("6f1d3f0e-93a4-4c8e-9b0a-3f1c5e2d7a10"), f"{job_id}/{kind}")
    assert stable_event_id(job_id, kind) == expected
    assert stable_event_id(job_id, kind).version == 5


def test_traceparents_are_well_formed_and_random() -> None:
    first, second = new_traceparent(), new_traceparent()
    assert valid_traceparent(first) == first
    assert first[3:35] != second[3:35]
    assert valid_traceparent("00-" + "0" * 32 + "-" + "1" * 16 + "-01") is None
    assert valid_traceparent("00-" + "1" * 32 + "-" + "0" * 16 + "-01") is None
    assert valid_traceparent(first.upper()) is None
    assert valid_traceparent(first.encode()) == first


def test_a_message_log_binds_only_when_a_line_is_written() -> None:
    stream = io.StringIO()
    configure_logging("info", stream)
    base = structlog.get_logger("test").bind()
    binds: list[dict[str, object]] = []
    real_bind = base.bind

    def counting_bind(**fields: object) -> Any:
        binds.append(fields)
        return real_bind(**fields)

    base.bind = counting_bind
    log = MessageLog(base, job_id="j-1", stage="poll").with_fields(duration_ms=1.5)
    log.debug("stage.pending", polls=2)
    assert binds == []
    assert stream.getvalue() == ""
    log.info("stage.done", outcome="advanced")
    log.warning("stage.retry", delay_ms=5)
    assert binds == [{"job_id": "j-1", "stage": "poll", "duration_ms": 1.5}]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["stage.done", "stage.retry"]
    assert all(line["job_id"] == "j-1" and line["duration_ms"] == 1.5 for line in lines)
