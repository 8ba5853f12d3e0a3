"""scribe-dlq on hostile dead letters, against the real broker (issue 12, items 1 and 9).

Item 1: dead letters whose AMQP properties the client library cannot decode (written byte by
byte with tests/rawamqp.py) sit next to ordinary ones; stats, list, show, replay and purge all
work, and a replay republishes fresh, clean properties only.

Item 9: a job that carries forged x-stage / x-job-id / x-error-message (and forged broker death
headers) and is then dead-lettered by the broker itself (deliveryLimitExceeded) is listed,
shown and replayed under the stage the broker recorded and the body's jobId.
"""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest

from tests.harness import AMQP_URL
from tests.integration.test_dlq import (
    PATIENT_TEXT,
    Broker,
    cli,
    dlq_env,
    json_lines,
    summary_of,
)
from tests.rawamqp import RawProperties, RawPublisher, long_str, nested_table, table
from worker import constants as c
from worker.broker import Publisher, build_message
from worker.codec import canonical_uuid
from worker.settings import Settings
from worker.topology import Names, declare_topology

pytestmark = pytest.mark.broker

LONG_MAX = 2**63 - 1
# What a replay may put on a message: its own bookkeeping, a checked traceparent, and the
# broker's delivery counter.
CLEAN_REPLAY_HEADERS = {c.HEADER_REPLAYS, c.HEADER_REPLAY_OF, c.HEADER_TRACEPARENT}
CONTROL = "\x1b\x07\u009b\u202e"  # escape, bell, CSI, right-to-left override


def text(value: bytes) -> bytes:
    return b"S" + long_str(value)


def long_long(value: int) -> bytes:
    return b"l" + struct.pack(">q", value)


def hostile_letters() -> list[tuple[str | None, bytes, RawProperties]]:
    """(the body's jobId, body, properties) of dead letters the library cannot decode alone."""
    letters: list[tuple[str | None, bytes, RawProperties]] = []

    def add(properties: RawProperties) -> None:
        job_id = str(uuid.uuid4())
        letters.append((job_id, json.dumps({"jobId": job_id}).encode(), properties))

    add(RawProperties(correlation_id=b"\xff\xfe-not-utf8"))
    add(RawProperties(timestamp=LONG_MAX))
    add(RawProperties(headers=table([(b"\xffkey", text(b"\xff\xfe"))])))
    add(RawProperties(message_id=b"\xff\x00id"))
    add(RawProperties(content_type=b"\xff"))
    add(RawProperties(headers=table([(b"deep", nested_table(5_000))])))
    add(
        RawProperties(
            headers=table(
                [
                    (b"x-stage", b"x" + long_str(b"note")),  # bytes, not the worker's text
                    (b"x-job-id", text(b"\xff" + str(uuid.uuid4()).encode())),
                    (b"x-error-message", text(b"\xff\xfe")),
                    (b"x-attempts", long_long(LONG_MAX)),
                    (b"x-replays", text(b"\xff")),
                    (b"x-http-status", text(b"abc")),
                    (b"x-last-failure-at", text(b"9999-12-31T23:59:59-14:00")),
                    (b"x-first-failure-at", b"T" + struct.pack(">Q", LONG_MAX)),
                    (b"huge", b"d" + struct.pack(">d", 1.7976931348623157e308)),
                    (b"decimal", b"D" + struct.pack(">Bi", 255, -(2**31))),
                ]
            )
        )
    )
    add(
        RawProperties(
            headers=table(
                [
                    (b"x-error-message", text("\x1b]0;t\x07\x1b[2J\u009b31m\u202e".encode())),
                    (b"x-error-type", text(b"\x1b[31m")),
                ]
            )
        )
    )
    # What the worker writes for a job nested 100,000 deep: the body holds no readable jobId.
    deep = b'{"jobId":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    letters.append((None, deep, RawProperties()))
    return letters


async def publish_raw(names: Names, letters: list[tuple[str | None, bytes, RawProperties]]) -> None:
    publisher = await RawPublisher.connect()
    try:
        for _job_id, body, properties in letters:
            await publisher.publish(
                names.dead_exchange, "transcribe.invalidMessage", body, properties
            )
    finally:
        await publisher.close()


@pytest.fixture
async def broker(prefix: str) -> AsyncIterator[Broker]:
    settings = Settings.from_env(dlq_env(prefix, SCRIBE_DELIVERY_LIMIT="1"))
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await declare_topology(channel, Names(prefix), settings.retry)
        await channel.close()
        yield Broker(Names(prefix), connection)


def assert_clean_replay(message: Any, job_id: str | None) -> None:
    """Fresh properties: text only, correlation_id the body's jobId, no sender headers."""
    assert message.correlation_id == job_id
    assert message.content_type == "application/json"
    assert message.message_id is None or isinstance(message.message_id, str)
    assert not (message.message_id or "").startswith("b'")
    headers = dict(message.headers or {})
    headers.pop("x-delivery-count", None)
    assert set(headers) <= CLEAN_REPLAY_HEADERS
    assert all(isinstance(value, str | int) for value in headers.values())


async def test_undecodable_dead_letters_do_not_stop_the_tool(broker: Broker, prefix: str) -> None:
    env = dlq_env(prefix)
    letters = hostile_letters()
    normal = [await broker.dead_letter(), await broker.dead_letter(stage="note")]
    await publish_raw(broker.names, letters)
    total = len(letters) + len(normal)
    hostile_ids = [job_id for job_id, _, _ in letters if job_id is not None]

    code, out, err = await cli(["stats", "--json"], env)
    assert code == 0, err
    counts = json.loads(out)
    assert counts["total"] == total
    assert counts["byErrorType"]["invalidMessage"] == len(letters)
    assert counts["byStage"] == {"transcribe": total - 1, "note": 1}
    code, out, err = await cli(["stats"], env)
    assert (code, f"total={total}" in out) == (0, True), err

    code, out, err = await cli(["list", "--json"], env)
    assert code == 0, err
    rows = json_lines(out)
    identities = {row["identity"] for row in rows}
    assert len(identities) == total
    by_job = {row["jobId"]: row for row in rows}
    assert set(hostile_ids) | set(normal) | {None} == set(by_job)
    assert {by_job[job_id]["stage"] for job_id in hostile_ids} == {"transcribe"}
    assert {by_job[job_id]["errorType"] for job_id in hostile_ids} == {"invalidMessage"}
    code, again, _ = await cli(["list", "--json"], env)
    assert {row["identity"] for row in json_lines(again)} == identities  # stable identities
    code, out, err = await cli(["list"], env)
    assert code == 0, err
    assert f"{total} dead letter(s)" in out
    assert not set(CONTROL) & set(out)  # no terminal control from a sender

    for job_id in hostile_ids:
        code, out, err = await cli(["show", job_id, "--json"], env)
        assert code == 0, err
        [record] = json_lines(out)
        assert record["jobId"] == job_id
        json.dumps(record, allow_nan=False)  # plain JSON: no NaN, no Infinity
        code, out, err = await cli(["show", job_id, "--redact"], env)
        assert code == 0, err
        assert not set(CONTROL) & set(out)
        code, out, err = await cli(["show", job_id, "--redact", "--json"], env)
        assert code == 0, err
        [redacted] = json_lines(out)
        # Headers no one defined (a sender's "deep", "huge", a key that is not UTF-8) are
        # counted, not named.
        assert not {"deep", "huge", "decimal"} & set(redacted["headers"])
        assert not any("key" in name for name in redacted["headers"])
    code, out, _ = await cli(["show", hostile_ids[0], "--json"], env)
    [record] = json_lines(out)
    assert record["correlationId"] == {"base64": "//4tbm90LXV0Zjg="}  # b"\xff\xfe-not-utf8"

    code, out, err = await cli(["replay", "--dry-run"], env)
    assert code == 0, err
    assert summary_of(out)["would_replay"] == str(total)
    code, out, err = await cli(["purge", "--yes", "--job-id", hostile_ids[0]], env)
    assert (code, out.strip()) == (0, "purged=1"), err
    assert await broker.count(broker.names.dead_letter_queue) == total - 1

    code, out, err = await cli(["replay"], env)
    assert code == 0, err
    assert summary_of(out)["replayed"] == str(total - 1)
    assert await broker.count(broker.names.dead_letter_queue) == 0
    replayed = await broker.take_all(broker.names.stage_queue("transcribe"))
    replayed += await broker.take_all(broker.names.stage_queue("note"))
    assert len(replayed) == total - 1
    expected = {body: job_id for job_id, body, _ in letters[1:]}
    expected |= {json.dumps({"jobId": job_id}).encode(): job_id for job_id in normal}
    assert {message.body for message in replayed} == set(expected)
    for message in replayed:
        assert_clean_replay(message, expected[message.body])


def forged_headers(names: Names, forgery: str, forged_job: str) -> dict[str, Any]:
    headers: dict[str, Any] = {
        c.HEADER_STAGE: "note",
        c.HEADER_JOB_ID: forged_job,
        c.HEADER_ERROR_MESSAGE: PATIENT_TEXT,
        c.HEADER_HTTP_STATUS: 599,
        c.HEADER_ATTEMPTS: 99,
    }
    if forgery == "death-headers":
        # The broker keeps a sender's x-first-death-* / x-last-death-* and appends its x-death.
        note = names.stage_queue("note")
        headers |= {
            "x-first-death-queue": note,
            "x-first-death-reason": "delivery_limit",
            "x-last-death-queue": note,
            "x-death": [
                {
                    "queue": note,
                    "reason": "delivery_limit",
                    "count": 1,
                    "exchange": names.jobs_exchange,
                    "routing-keys": ["note"],
                    "time": datetime.now(UTC),
                }
            ],
        }
    if forgery == "after-a-delay":
        # A retry through a delay queue: the broker's x-first-death-queue is the delay queue.
        headers[c.HEADER_DELAY_TIER_MS] = "50"
    return headers


async def make_broker_dead_letter(broker: Broker, forgery: str) -> tuple[str, str]:
    """A job with forged headers, dead-lettered by the broker: nacked until its delivery limit
    (1) is exceeded. Returns (the body's jobId, the forged jobId)."""
    job_id, forged_job = str(uuid.uuid4()), str(uuid.uuid4())
    names = broker.names
    exchange = names.delay_exchange if forgery == "after-a-delay" else names.jobs_exchange
    channel = await broker.connection.channel(publisher_confirms=True)
    try:
        message = build_message(
            json.dumps({"jobId": job_id}).encode(),
            correlation_id=forged_job,
            headers=forged_headers(names, forgery, forged_job),
        )
        await Publisher(channel).publish(exchange, "transcribe", message)
        queue = await channel.get_queue(names.stage_queue("transcribe"))
        for _ in range(200):
            got = await queue.get(fail=False)
            if got is not None:
                await got.nack(requeue=True)
            elif await broker.count(names.dead_letter_queue) >= 1:
                break
            else:
                await asyncio.sleep(0.05)
    finally:
        await channel.close()
    assert await broker.count(names.dead_letter_queue) == 1
    return job_id, forged_job


@pytest.mark.parametrize("forgery", ["headers", "death-headers", "after-a-delay"])
async def test_broker_made_dead_letter_keeps_the_brokers_stage_and_the_bodys_job(
    broker: Broker, prefix: str, forgery: str
) -> None:
    env = dlq_env(prefix)
    job_id, forged_job = await make_broker_dead_letter(broker, forgery)

    code, out, err = await cli(["list", "--json"], env)
    assert code == 0, err
    [row] = json_lines(out)
    assert (row["jobId"], row["stage"], row["errorType"]) == (
        job_id,
        "transcribe",
        "deliveryLimitExceeded",
    )
    assert PATIENT_TEXT not in out
    assert row["httpStatus"] is None
    assert row["attempts"] is None
    code, out, err = await cli(["list"], env)
    assert code == 0, err
    assert PATIENT_TEXT not in out
    assert forged_job not in out

    code, out, err = await cli(["show", job_id, "--json", "--redact"], env)
    assert code == 0, err
    [record] = json_lines(out)
    assert (record["stage"], record["jobId"]) == ("transcribe", job_id)
    assert record["deadLetteredBy"] == "broker"
    assert PATIENT_TEXT not in out  # the sender's x-error-message is not the worker's words
    code, _, _ = await cli(["show", forged_job], env)
    assert code == 1
    code, out, _ = await cli(["list", "--json", "--job-id", job_id.upper()], env)
    assert (code, [row["jobId"] for row in json_lines(out)]) == (0, [job_id])
    code, out, _ = await cli(["list", "--json", "--stage", "note"], env)
    assert (code, out) == (0, "")

    code, out, err = await cli(["replay"], env)
    assert code == 0, err
    assert summary_of(out)["replayed"] == "1"
    for stage in ("poll", "summarize", "note"):
        assert await broker.count(broker.names.stage_queue(stage)) == 0
    [replayed] = await broker.take_all(broker.names.stage_queue("transcribe"))
    assert json.loads(replayed.body) == {"jobId": job_id}
    assert canonical_uuid(replayed.correlation_id) == job_id
    assert_clean_replay(replayed, job_id)
