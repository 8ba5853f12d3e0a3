"""scribe-dlq with payload encryption and retention (issue 19, item 7): sealed dead letters are
shown opened with the configured keys (or as sealed, saying why), replays are sealed again under
the current key, and --older-than selects by the dead letter's death time."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ops import cli_dlq, dlq
from worker import constants as c
from worker.payload_crypto import STAGE_PURPOSE, PayloadCipher, PayloadKeys

SECRET = "Jane Doe has a cough"
OLD_KEY, NEW_KEY = os.urandom(32), os.urandom(32)


def letter(body: bytes, headers: dict[str, Any], correlation_id: str | None) -> dlq.DeadLetter:
    return dlq.DeadLetter(
        identity="i",
        routing_key="summarize.payloadUndecryptable",
        job_id=correlation_id,
        stage="summarize",
        error_type="payloadUndecryptable",
        error_message="",
        http_status=None,
        attempts=1,
        first_failure_at=None,
        last_failure_at=None,
        replays=0,
        delivery_count=0,
        correlation_id=correlation_id,
        message_id=None,
        content_type="application/json",
        made_by="worker",
        property_problem=None,
        headers=headers,
        body=body,
    )


def sealed_letter(reader: PayloadCipher | None) -> tuple[dlq.DeadLetter, bytes]:
    job_id = str(uuid.uuid4())
    clear = json.dumps({"schemaVersion": 1, "jobId": job_id, "transcript": SECRET}).encode()
    sealer = PayloadCipher(PayloadKeys({"old": OLD_KEY}, "old"))
    body, seal = sealer.seal(clear, purpose=STAGE_PURPOSE, binding=job_id)
    headers = {**seal, c.HEADER_ERROR_TYPE: "upstreamTimeout"}
    raw = letter(body, headers, job_id)
    opened, problem = dlq._open(body, headers, job_id, reader)
    return dataclasses.replace(raw, sealed=True, opened=opened, seal_problem=problem), clear


def test_a_sealed_dead_letter_is_shown_opened_with_the_key() -> None:
    reader = PayloadCipher(PayloadKeys({"old": OLD_KEY, "new": NEW_KEY}, "new"))
    shown, clear = sealed_letter(reader)
    assert shown.clear_body == clear
    assert dlq.shown_body(shown, redacted=False)["transcript"] == SECRET
    assert SECRET not in json.dumps(dlq.shown_body(shown, redacted=True))
    record = cli_dlq.show_record(shown, redacted=True)
    assert record["headers"][c.HEADER_PAYLOAD_KEY_ID] == "old"


def test_without_the_key_show_says_so_and_never_prints_the_bytes() -> None:
    shown, _ = sealed_letter(PayloadCipher(PayloadKeys({"new": NEW_KEY}, "new")))
    assert shown.clear_body is None
    body = dlq.shown_body(shown, redacted=False)
    assert body["sealed"]["keyId"] == "old"
    assert body["sealed"]["readable"] is False
    assert "'old'" in body["sealed"]["problem"]
    assert "base64" not in json.dumps(body)


def test_a_replay_is_sealed_again_under_the_current_key() -> None:
    reader = PayloadCipher(PayloadKeys({"old": OLD_KEY, "new": NEW_KEY}, "new"))
    shown, clear = sealed_letter(reader)
    replayed = dlq.replay_message(shown, reader)
    headers = replayed.properties.headers or {}
    assert headers[c.HEADER_PAYLOAD_KEY_ID] == "new"
    assert SECRET.encode() not in replayed.body
    correlation = replayed.properties.correlation_id
    assert reader.open(replayed.body, headers, purpose=STAGE_PURPOSE, binding=correlation) == clear
    # Encryption turned off (no current key): the replay goes in clear.
    clear_replay = dlq.replay_message(shown, PayloadCipher(PayloadKeys({"old": OLD_KEY})))
    assert clear_replay.body == clear
    assert c.HEADER_PAYLOAD_KEY_ID not in (clear_replay.properties.headers or {})


def test_an_unreadable_sealed_letter_is_replayed_as_it_is_for_a_worker_with_the_key() -> None:
    shown, clear = sealed_letter(None)
    replayed = dlq.replay_message(shown, None)
    headers = replayed.properties.headers or {}
    assert replayed.body == shown.body
    assert headers[c.HEADER_PAYLOAD_KEY_ID] == "old"
    assert replayed.properties.correlation_id == shown.correlation_id
    worker = PayloadCipher(PayloadKeys({"old": OLD_KEY}))
    assert worker.open(replayed.body, headers, purpose=STAGE_PURPOSE, binding=shown.job_id) == clear


def test_older_than_selects_by_death_time() -> None:
    now = datetime.now(UTC)
    base = letter(b"{}", {}, None)
    old = dataclasses.replace(base, last_failure_at=now - timedelta(days=8))
    young = dataclasses.replace(base, last_failure_at=now - timedelta(days=6))
    args = cli_dlq.build_parser().parse_args(["purge", "--older-than", "7d"])
    filters = cli_dlq.filters_of(args)
    assert filters.before is not None
    assert abs((now - timedelta(days=7) - filters.before).total_seconds()) < 60
    assert filters.matches(old)
    assert not filters.matches(young)
    assert not filters.matches(base)  # no death time: never taken for old


@pytest.mark.parametrize("age", ["7", "7 days", "-1d", "1y", ""])
def test_older_than_refuses_what_is_not_an_age(age: str) -> None:
    with pytest.raises(cli_dlq.UsageError):
        cli_dlq.build_parser().parse_args(["purge", "--older-than", age])
