"""scribe-dlq against the real broker: reading leaves everything in place, replay publishes with
confirms before it acks, filters keep non-matching messages queued, and a kill -9 in the middle
of a replay loses nothing and duplicates at most the one documented message."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from ops import cli_dlq, dlq
from tests.harness import AMQP_URL, TEST_DELAY_TIERS_MS
from worker.broker import Publisher, build_message
from worker.settings import Settings
from worker.topology import Names, declare_topology

pytestmark = pytest.mark.broker

REDIS_URL = "redis://127.0.0.1:6379/0"
PATIENT_TEXT = "Patient reports chest pain since Tuesday"
AUDIO_URL = "https://storage.example.test/consults/jane-doe.wav?sig=abc"


def dlq_env(prefix: str, **extra: str) -> dict[str, str]:
    return {
        "SCRIBE_AMQP_URL": AMQP_URL,
        "SCRIBE_PREFIX": prefix,
        "SCRIBE_DELAY_TIERS_MS": TEST_DELAY_TIERS_MS,
        **extra,
    }


@dataclass
class Broker:
    names: Names
    connection: AbstractRobustConnection

    async def count(self, queue: str) -> int:
        """Messages ready in a queue, counted with basic.get and handed back: the message count
        of queue.declare-ok is a lagging statistic for quorum queues."""
        channel = await self.connection.channel()
        held: list[AbstractIncomingMessage] = []
        try:
            declared = await channel.declare_queue(queue, passive=True)
            while (message := await declared.get(fail=False)) is not None:
                held.append(message)
            for message in held:
                await message.nack(requeue=True)
            return len(held)
        finally:
            await channel.close()

    async def dead_letter(
        self,
        *,
        stage: str = "transcribe",
        error_type: str = "upstreamTimeout",
        job_id: str | None = None,
        body: bytes | None = None,
        headers: dict[str, Any] | None = None,
        last_failure_at: str = "2026-03-01T00:00:00+00:00",
        worker_headers: bool = True,
    ) -> str:
        """Publish what worker/delivery.py writes for a failure (or, with worker_headers=False,
        what the broker writes for deliveryLimitExceeded)."""
        job_id = job_id or str(uuid.uuid4())
        payload = body if body is not None else json.dumps({"jobId": job_id}).encode()
        all_headers: dict[str, Any] = {}
        if worker_headers:
            all_headers = {
                "x-error-type": error_type,
                "x-stage": stage,
                "x-error-message": f"{error_type} after retries",
                "x-attempts": 3,
                "x-first-failure-at": "2026-01-01T00:00:00+00:00",
                "x-last-failure-at": last_failure_at,
                "x-job-id": job_id,
                "x-http-status": 503,
            }
        all_headers.update(headers or {})
        channel = await self.connection.channel(publisher_confirms=True)
        try:
            message = build_message(payload, correlation_id=job_id, headers=all_headers)
            await Publisher(channel).publish(
                self.names.dead_exchange, f"{stage}.{error_type}", message
            )
        finally:
            await channel.close()
        return job_id

    async def take_all(self, queue: str) -> list[AbstractIncomingMessage]:
        """Consume (ack) every message in a queue."""
        channel = await self.connection.channel()
        taken: list[AbstractIncomingMessage] = []
        try:
            declared = await channel.declare_queue(queue, passive=True)
            while (message := await declared.get(fail=False)) is not None:
                await message.ack()
                taken.append(message)
        finally:
            await channel.close()
        return taken

    async def dead_letters(self) -> list[dlq.DeadLetter]:
        """Read without removing, through the library under test."""
        reader = await dlq.DeadLetterReader.open(self.connection, self.names)
        try:
            return await dlq.read_matching(reader, dlq.Filters())
        finally:
            await reader.close()


@pytest.fixture
async def broker(prefix: str) -> AsyncIterator[Broker]:
    settings = Settings.from_env(dlq_env(prefix))
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await declare_topology(channel, Names(prefix), settings.retry)
        await channel.close()
        yield Broker(Names(prefix), connection)


async def cli(argv: list[str], env: dict[str, str], stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await cli_dlq.run(argv, env, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def summary_of(text: str) -> dict[str, str]:
    last = [line for line in text.splitlines() if line.startswith("replayed=")][-1]
    return dict(part.split("=", 1) for part in last.split())


async def test_list_stats_and_show_leave_every_message_in_place(
    broker: Broker, prefix: str
) -> None:
    env = dlq_env(prefix)
    first = await broker.dead_letter(last_failure_at="2026-01-01T00:00:00+00:00")
    await broker.dead_letter(last_failure_at="2026-02-01T00:00:00+00:00")
    await broker.dead_letter(stage="note", error_type="invalidTemplate")
    await broker.dead_letter(stage="poll", error_type="transcriptionTimedOut")
    before = {letter.identity for letter in await broker.dead_letters()}
    assert len(before) == 4

    for _ in range(3):  # repeated reads change nothing
        code, out, _err = await cli(["list", "--json"], env)
        assert code == 0
        assert {row["identity"] for row in json_lines(out)} == before
    code, out, _ = await cli(["list"], env)
    assert code == 0
    assert first in out
    assert "4 dead letter(s)" in out
    code, out, _ = await cli(["stats", "--json"], env)
    assert code == 0
    counts = json.loads(out)
    assert counts["total"] == 4
    assert counts["byErrorType"] == {
        "upstreamTimeout": 2,
        "invalidTemplate": 1,
        "transcriptionTimedOut": 1,
    }
    assert counts["byStage"] == {"transcribe": 2, "note": 1, "poll": 1}
    code, out, _ = await cli(["stats"], env)
    assert code == 0
    assert "total=4" in out
    code, out, _ = await cli(["show", first], env)
    assert code == 0
    assert "x-error-type" in out

    assert await broker.count(broker.names.dead_letter_queue) == 4
    assert {letter.identity for letter in await broker.dead_letters()} == before


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--error-type", "upstreamTimeout"], 2),
        (["--error-type", "upstreamTimeout", "--error-type", "invalidTemplate"], 3),
        (["--stage", "note"], 1),
        (["--stage", "transcribe", "--error-type", "invalidTemplate"], 0),
        (["--since", "2026-01-15T00:00:00Z"], 3),
        (["--since", "2026-01-15"], 3),
    ],
)
async def test_list_filters(broker: Broker, prefix: str, argv: list[str], expected: int) -> None:
    await broker.dead_letter(last_failure_at="2026-01-01T00:00:00+00:00")
    await broker.dead_letter(last_failure_at="2026-02-01T00:00:00+00:00")
    await broker.dead_letter(stage="note", error_type="invalidTemplate")
    await broker.dead_letter(stage="poll", error_type="transcriptionTimedOut")
    code, out, _ = await cli(["list", "--json", *argv], dlq_env(prefix))
    assert code == 0
    assert len(json_lines(out)) == expected
    assert await broker.count(broker.names.dead_letter_queue) == 4


async def test_list_filters_by_job_id(broker: Broker, prefix: str) -> None:
    wanted = await broker.dead_letter()
    await broker.dead_letter()
    code, out, _ = await cli(["list", "--json", "--job-id", wanted], dlq_env(prefix))
    assert code == 0
    assert [row["jobId"] for row in json_lines(out)] == [wanted]


async def test_broker_dead_letter_takes_stage_and_error_type_from_the_routing_key(
    broker: Broker, prefix: str
) -> None:
    # The broker dead-letters a crash-looping message with whatever headers it had: here a
    # stale x-error-type from an earlier retry, and no x-stage.
    job_id = await broker.dead_letter(
        stage="poll",
        error_type="deliveryLimitExceeded",
        worker_headers=False,
        headers={"x-error-type": "upstreamTimeout", "x-attempts": 1},
    )
    code, out, _ = await cli(["list", "--json"], dlq_env(prefix))
    assert code == 0
    [row] = json_lines(out)
    assert (row["jobId"], row["stage"], row["errorType"]) == (
        job_id,
        "poll",
        "deliveryLimitExceeded",
    )
    code, out, _ = await cli(["replay", "--error-type", "deliveryLimitExceeded"], dlq_env(prefix))
    assert code == 0
    assert summary_of(out)["replayed"] == "1"
    [replayed] = await broker.take_all(broker.names.stage_queue("poll"))
    assert replayed.correlation_id == job_id
    assert "x-error-type" not in (replayed.headers or {})


async def test_show_redacts_patient_text_but_keeps_structure(broker: Broker, prefix: str) -> None:
    job_id = str(uuid.uuid4())
    body = {
        "schemaVersion": 1,
        "jobId": job_id,
        "job": {"jobId": job_id, "audio": {"url": AUDIO_URL, "fileName": "jane-doe.wav"}},
        "transcript": {
            "provider": "intron",
            "text": PATIENT_TEXT,
            "segments": [{"start": 0.0, "end": 1.5, "text": PATIENT_TEXT}],
            "postProcessing": {"get_summary": f"# Summary\n{PATIENT_TEXT}"},
        },
        "summary": {
            "provider": "invox",
            "outputFormat": "SOAP_TEMPLATE",
            "fields": [{"name": "Subjective", "value": PATIENT_TEXT}],
        },
    }
    await broker.dead_letter(
        stage="note", error_type="invalidTemplate", job_id=job_id, body=json.dumps(body).encode()
    )
    env = dlq_env(prefix)
    code, out, _ = await cli(["show", job_id, "--redact", "--json"], env)
    assert code == 0
    assert PATIENT_TEXT not in out
    assert "jane-doe" not in out
    assert "storage.example.test" not in out
    [record] = json_lines(out)
    shown = record["body"]
    assert shown["jobId"] == job_id
    assert shown["transcript"]["provider"] == "intron"
    assert shown["transcript"]["text"] == "[redacted]"
    assert shown["transcript"]["segments"] == [{"start": 0.0, "end": 1.5, "text": "[redacted]"}]
    assert shown["transcript"]["postProcessing"] == {"get_summary": "[redacted]"}
    assert shown["summary"]["fields"] == [{"name": "Subjective", "value": "[redacted]"}]
    assert shown["job"]["audio"] == {"url": "[redacted]", "fileName": "[redacted]"}
    assert record["headers"]["x-error-type"] == "invalidTemplate"

    code, out, _ = await cli(["show", job_id], env)  # without --redact the body is all there
    assert code == 0
    assert PATIENT_TEXT in out
    code, _, err = await cli(["show", str(uuid.uuid4())], env)
    assert code == 1
    assert "no dead letter" in err
    assert await broker.count(broker.names.dead_letter_queue) == 1


async def test_show_redact_shows_only_what_it_knows(broker: Broker, prefix: str) -> None:
    """Allow-list (issue 13, item 10): a field, header or property nobody defined is hidden,
    name and value; identifiers, enums and times stay readable."""
    job_id = str(uuid.uuid4())
    body = {
        "schemaVersion": 1,
        "jobId": job_id,
        "consultationSessionId": "visit-1234",
        "audio": {"path": "/data/jane-doe.wav", "mimeType": "audio/wav", "note": PATIENT_TEXT},
        "providers": {"transcriber": "local"},
        "chartNotes": PATIENT_TEXT,
        PATIENT_TEXT: "yes",
    }
    await broker.dead_letter(
        error_type="invalidMessage",
        job_id=job_id,
        body=json.dumps(body).encode(),
        headers={"x-clinic-note": PATIENT_TEXT, "x-patient-jane-doe": 1},
    )
    code, out, err = await cli(["show", job_id, "--redact", "--json"], dlq_env(prefix))
    assert code == 0, err
    assert PATIENT_TEXT not in out
    assert "jane-doe" not in out
    assert "chartNotes" not in out
    [record] = json_lines(out)
    assert record["body"] == {
        "schemaVersion": 1,
        "jobId": job_id,
        "consultationSessionId": "visit-1234",
        "audio": {"path": "[redacted]", "mimeType": "audio/wav", dlq.UNKNOWN_FIELDS: 1},
        "providers": {"transcriber": "local"},
        dlq.UNKNOWN_FIELDS: 2,
    }
    assert record["headers"][dlq.UNKNOWN_FIELDS] == 2
    assert record["headers"]["x-error-type"] == "invalidMessage"
    assert record["correlationId"] == job_id
    code, out, _ = await cli(["show", job_id, "--redact"], dlq_env(prefix))  # the text form
    assert (code, PATIENT_TEXT in out, "jane-doe" in out) == (0, False, False)


async def test_error_type_filters_take_the_catalogue_or_other(broker: Broker, prefix: str) -> None:
    """A typo is refused (exit 2) instead of matching nothing and reporting purged=0; a vendor's
    403 errorType outside the catalogue is reached as "other"."""
    env = dlq_env(prefix)
    vendor = await broker.dead_letter(error_type="missingPermission")
    await broker.dead_letter(error_type="upstreamTimeout")
    for argv in (
        ["list", "--error-type", "upstreamTimout"],
        ["purge", "--yes", "--error-type", "x"],
    ):
        code, out, err = await cli(argv, env)
        assert (code, out) == (2, ""), err
        assert "not an errorType of the catalogue" in err
    assert await broker.count(broker.names.dead_letter_queue) == 2
    code, out, err = await cli(["list", "--json", "--error-type", "other"], env)
    assert code == 0, err
    assert [(row["jobId"], row["errorType"]) for row in json_lines(out)] == [
        (vendor, "missingPermission")
    ]
    code, out, err = await cli(["purge", "--yes", "--error-type", "upstreamTimeout"], env)
    assert (code, out.strip()) == (0, "purged=1"), err


async def _reads_that_warn(env: dict[str, str], reads: int) -> list[int]:
    warned = []
    for read in range(1, reads + 1):
        code, _, err = await cli(["list"], env)
        assert code == 0, err
        if "warning" in err:
            warned.append(read)
    return warned


async def test_redelivery_warning_only_where_it_applies_and_once(
    broker: Broker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "read 15 times; RabbitMQ 4.0-4.2 drop..." warning: never on this machine's 3.x
    broker, and on a 4.0-4.2 one (its announced version replaced) on one command only, not on
    every command after the fifteenth read."""
    env = dlq_env(prefix)
    await broker.dead_letter()
    assert await _reads_that_warn(env, dlq.DELIVERY_COUNT_WARNING + 3) == []
    assert str(dlq.broker_version(broker.connection)).startswith("3.")

    await broker.take_all(broker.names.dead_letter_queue)
    await broker.dead_letter()
    monkeypatch.setattr(dlq, "broker_version", lambda _connection: "4.1.0")
    warned = await _reads_that_warn(env, dlq.DELIVERY_COUNT_WARNING + 3)
    assert len(warned) == 1, warned


async def test_replay_publishes_the_same_body_with_fresh_counters(
    broker: Broker, prefix: str
) -> None:
    extra: dict[str, Any] = {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    }
    # Only the fixed list of carried headers goes on (issue 12, item 4): "custom" does not.
    extra |= {"x-replays": 1, "x-polls": 7, "scribe-delay-ms": "400", "custom": "dropped"}
    replayed_job = await broker.dead_letter(headers=extra)
    kept_job = await broker.dead_letter(stage="note", error_type="invalidTemplate")
    [identity] = [
        letter.identity for letter in await broker.dead_letters() if letter.job_id == replayed_job
    ]
    code, out, _ = await cli(["replay", "--error-type", "upstreamTimeout"], dlq_env(prefix))
    assert code == 0
    summary = summary_of(out)
    assert summary["replayed"] == "1"
    assert summary["skipped"] == "1"
    assert summary["dry_run"] == "false"

    [message] = await broker.take_all(broker.names.stage_queue("transcribe"))
    assert message.body == json.dumps({"jobId": replayed_job}).encode()
    assert message.correlation_id == replayed_job
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    headers = dict(message.headers or {})
    assert headers.pop("x-replays") == 2
    assert headers.pop("x-replay-of") == identity
    headers.pop("x-delivery-count", None)
    assert headers == {"traceparent": extra["traceparent"]}

    [left] = await broker.dead_letters()
    assert left.job_id == kept_job
    for stage in ("poll", "summarize", "note"):
        assert await broker.count(broker.names.stage_queue(stage)) == 0


async def test_replay_dry_run_limit_and_to_stage(broker: Broker, prefix: str) -> None:
    env = dlq_env(prefix)
    for _ in range(4):
        await broker.dead_letter(stage="poll", error_type="transcriptionTimedOut")
    code, out, _ = await cli(["replay", "--dry-run"], env)
    assert code == 0
    assert summary_of(out)["would_replay"] == "4"
    assert summary_of(out)["dry_run"] == "true"
    assert out.count("would replay job=") == 4
    assert await broker.count(broker.names.dead_letter_queue) == 4
    assert await broker.count(broker.names.stage_queue("poll")) == 0

    code, out, _ = await cli(["replay", "--limit", "1"], env)
    assert code == 0
    assert summary_of(out)["replayed"] == "1"
    assert await broker.count(broker.names.stage_queue("poll")) == 1

    code, out, _ = await cli(["replay", "--limit", "2", "--to-stage", "summarize"], env)
    assert code == 0
    assert summary_of(out)["replayed"] == "2"
    assert await broker.count(broker.names.stage_queue("summarize")) == 2
    assert await broker.count(broker.names.dead_letter_queue) == 1


async def test_replay_with_redis_acks_what_an_earlier_run_already_published(
    broker: Broker, prefix: str
) -> None:
    client = await redis_or_skip()
    env = dlq_env(prefix, SCRIBE_REDIS_URL=REDIS_URL)
    try:
        for _ in range(3):
            await broker.dead_letter()
        letters = await broker.dead_letters()
        # As if a run had published letters[0] (confirmed, recorded) and died before the ack.
        ledger = dlq.RedisReplayLedger(client, prefix)
        await ledger.record(letters[0].identity)
        code, out, _ = await cli(["replay"], env)
        assert code == 0
        summary = summary_of(out)
        assert (summary["replayed"], summary["already_replayed"]) == ("2", "1")
        replayed = await broker.take_all(broker.names.stage_queue("transcribe"))
        assert {(m.headers or {})["x-replay-of"] for m in replayed} == {
            letter.identity for letter in letters[1:]
        }
        assert await broker.count(broker.names.dead_letter_queue) == 0
        for letter in letters:
            assert await ledger.was_replayed(letter.identity)
    finally:
        await clear_redis(client, prefix)


async def test_purge_asks_unless_yes_and_keeps_what_does_not_match(
    broker: Broker, prefix: str
) -> None:
    env = dlq_env(prefix)
    for _ in range(2):
        await broker.dead_letter()
    kept = await broker.dead_letter(stage="note", error_type="invalidTemplate")
    code, _, err = await cli(["purge", "--error-type", "upstreamTimeout"], env, stdin="no\n")
    assert code == 1
    assert "Purge 2 dead letter(s)" in err
    assert await broker.count(broker.names.dead_letter_queue) == 3
    code, _, _ = await cli(["purge", "--error-type", "upstreamTimeout"], env, stdin="")
    assert code == 1  # end of input is not a yes
    assert await broker.count(broker.names.dead_letter_queue) == 3

    code, out, _ = await cli(["purge", "--error-type", "upstreamTimeout"], env, stdin="yes\n")
    assert code == 0
    assert out.strip() == "purged=2"
    [left] = await broker.dead_letters()
    assert left.job_id == kept
    code, out, _ = await cli(["purge", "--yes"], env)
    assert code == 0
    assert out.strip() == "purged=1"
    assert await broker.count(broker.names.dead_letter_queue) == 0


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["list", "--since", "yesterday"],
        ["list", "--stage", "nowhere"],
        ["replay", "--rate", "0"],
        ["replay", "--limit", "-1"],
        ["show"],
    ],
)
async def test_bad_usage_exits_2(prefix: str, argv: list[str]) -> None:
    code, _, err = await cli(argv, dlq_env(prefix))
    assert code == 2
    assert err


async def test_bad_configuration_exits_2(prefix: str) -> None:
    code, _, err = await cli(["list"], dlq_env(prefix, SCRIBE_PREFIX="bad prefix!"))
    assert code == 2
    assert "SCRIBE_PREFIX" in err
    code, _, err = await cli(["list"], dlq_env(prefix, SCRIBE_AMQP_URL="http://x"))
    assert code == 2
    code, _, err = await cli(["list"], dlq_env(prefix))  # no topology under this prefix
    assert code == 2
    assert "does not exist" in err


@pytest.mark.slow
@pytest.mark.parametrize("with_redis", [False, True], ids=["no-redis", "redis"])
async def test_kill_9_mid_replay_loses_nothing(
    broker: Broker, prefix: str, tmp_path: Path, with_redis: bool
) -> None:
    client = await redis_or_skip() if with_redis else None
    env = dlq_env(prefix, **({"SCRIBE_REDIS_URL": REDIS_URL} if with_redis else {}))
    matching, other = 20, 3
    try:
        for _ in range(matching):
            await broker.dead_letter()
        for _ in range(other):
            await broker.dead_letter(stage="note", error_type="invalidTemplate")
        originals = {letter.identity: letter for letter in await broker.dead_letters()}
        wanted = {i for i, letter in originals.items() if letter.error_type == "upstreamTimeout"}
        assert len(wanted) == matching

        proc_env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIBE_")} | env
        with (tmp_path / "out").open("w") as out, (tmp_path / "err").open("w") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ops.cli_dlq",
                "replay",
                "--error-type",
                "upstreamTimeout",
                "--rate",
                "5",
                env=proc_env,
                stdout=out,
                stderr=err,
            )
            try:
                transcribe = broker.names.stage_queue("transcribe")
                while await broker.count(transcribe) < 3:
                    assert proc.returncode is None, (tmp_path / "err").read_text()
                    await asyncio.sleep(0.05)
                assert proc.returncode is None, "the replay finished before the kill"
            finally:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
        assert "replayed=" not in (tmp_path / "out").read_text()  # it really died mid-way

        total = matching + other
        dead_letters = broker.names.dead_letter_queue
        # The broker returns the dead process's unacked messages; wait for them to be back.
        while True:
            back = await broker.count(dead_letters) + await broker.count(transcribe)
            if back >= total:
                break
            await asyncio.sleep(0.05)
        remaining = {letter.identity for letter in await broker.dead_letters()}
        published = [(m.headers or {})["x-replay-of"] for m in await broker.take_all(transcribe)]
        assert 3 <= len(published) < matching
        assert len(published) == len(set(published))
        assert set(published) <= wanted
        # Nothing lost: every original is still queued or was replayed.
        assert remaining | set(published) == set(originals)
        # At most the one message between confirm and ack is in both places.
        assert len(remaining & set(published)) <= 1
        assert len(remaining) + len(published) in (total, total + 1)

        # Finishing the replay leaves exactly the non-matching messages, every match replayed.
        code, _, _ = await cli(["replay", "--error-type", "upstreamTimeout"], env)
        assert code == 0
        published += [(m.headers or {})["x-replay-of"] for m in await broker.take_all(transcribe)]
        assert set(published) == wanted
        assert len(published) <= matching + 1
        left = {letter.identity for letter in await broker.dead_letters()}
        assert left == set(originals) - wanted
    finally:
        if client is not None:
            await clear_redis(client, prefix)


async def redis_or_skip() -> aioredis.Redis:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, aioredis.ConnectionError):
        await client.aclose()
        pytest.skip("no Redis on 127.0.0.1:6379")
    return client


async def clear_redis(client: aioredis.Redis, prefix: str) -> None:
    async for key in client.scan_iter(match=f"{prefix}:dlq:*"):
        await client.delete(key)
    await client.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
async def test_signal_mid_replay_stops_cleanly_without_duplicates(
    broker: Broker, prefix: str, tmp_path: Path, signum: signal.Signals
) -> None:
    total = 15
    for _ in range(total):
        await broker.dead_letter()
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIBE_")}
    proc_env |= dlq_env(prefix)
    transcribe = broker.names.stage_queue("transcribe")
    with (tmp_path / "out").open("w") as out, (tmp_path / "err").open("w") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ops.cli_dlq",
            "replay",
            "--rate",
            "5",
            env=proc_env,
            stdout=out,
            stderr=err,
        )
        try:
            while await broker.count(transcribe) < 2:
                assert proc.returncode is None, (tmp_path / "err").read_text()
                await asyncio.sleep(0.05)
            proc.send_signal(signum)
        finally:
            code = await proc.wait()
    assert code == 130, (tmp_path / "err").read_text()
    summary = summary_of((tmp_path / "out").read_text())
    assert summary["interrupted"] == "true"
    replayed = int(summary["replayed"])
    assert 2 <= replayed < total
    published = await broker.take_all(transcribe)
    assert len(published) == replayed
    assert await broker.count(broker.names.dead_letter_queue) == total - replayed


async def test_replay_does_not_loop_on_replays_that_fail_again(broker: Broker, prefix: str) -> None:
    """With a worker running, a replayed message that fails at once comes back as a new dead
    letter during the same run; the run must leave it queued instead of replaying it forever."""
    total = 5
    for _ in range(total):
        await broker.dead_letter(error_type="invalidTemplate")
    refailed = 0

    async def failing_worker(message: AbstractIncomingMessage) -> None:
        nonlocal refailed
        headers = dict(message.headers or {})
        headers |= {"x-error-type": "invalidTemplate", "x-stage": "transcribe"}
        headers["x-last-failure-at"] = "2026-04-01T00:00:00+00:00"
        channel = await broker.connection.channel(publisher_confirms=True)
        dead = build_message(message.body, correlation_id=message.correlation_id, headers=headers)
        await Publisher(channel).publish(
            broker.names.dead_exchange, "transcribe.invalidTemplate", dead
        )
        await channel.close()
        await message.ack()
        refailed += 1

    channel = await broker.connection.channel()
    queue = await channel.declare_queue(broker.names.stage_queue("transcribe"), passive=True)
    tag = await queue.consume(failing_worker)
    try:
        code, out, _ = await cli(["replay", "--rate", "20"], dlq_env(prefix))
        for _ in range(400):  # the fake worker finishes the last replays
            if refailed >= total:
                break
            await asyncio.sleep(0.05)
    finally:
        await queue.cancel(tag)
        await channel.close()
    assert code == 0
    summary = summary_of(out)
    assert summary["replayed"] == str(total)  # each original once, none of the re-failures
    assert int(summary["skipped"]) <= total
    letters = await broker.dead_letters()
    assert len(letters) == total
    assert all(letter.replays == 1 for letter in letters)
