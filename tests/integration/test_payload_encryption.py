"""Payload encryption over the real RabbitMQ (issue 19, item 7): a job runs end to end with every
stage message sealed (a copy read off the broker holds no transcript text), a message sealed with
a key the worker lacks ends as one payloadUndecryptable dead letter while the worker goes on,
scribe-dlq opens it with the key (and says when it cannot), retention purges by age, and the
dead-letter age probe reads the head without losing it."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import time
from pathlib import Path

import aio_pika
import pytest
import structlog
from aio_pika.abc import AbstractIncomingMessage

from ops import cli_dlq
from ops.sandbox import RunningSandbox, SandboxConfig
from ops.unrouted import count as unrouted_count
from ops.unrouted import drain
from schemas.errors import ErrorType
from tests.harness import (
    AMQP_URL,
    INTRON_KEY,
    INVOX_TOKEN,
    SAMPLE_TEMPLATE,
    Watcher,
    make_job,
    running_worker,
    watching,
    worker_env,
)
from worker import constants as c
from worker.broker import Publisher, build_message
from worker.dead_letter_age import DeadLetterAge
from worker.logs import configure_logging
from worker.metrics import Metrics
from worker.payload_crypto import STAGE_PURPOSE, PayloadCipher, PayloadKeys
from worker.topology import Names

pytestmark = pytest.mark.broker

MARKER = "Zyxsealedtranscriptmarker"
KEY, STRANGER_KEY = os.urandom(32), os.urandom(32)
KEYS_ENV = {
    "SCRIBE_PAYLOAD_KEYS": f"k1:{base64.b64encode(KEY).decode()}",
    "SCRIBE_PAYLOAD_KEY_ID": "k1",
}
STRANGER = PayloadCipher(PayloadKeys({"stranger": STRANGER_KEY}, "stranger"))


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    turns = (
        f"[doctor] Good morning, {MARKER} is what you said?",
        f"[patient] My knee hurts since {MARKER} last week.",
    )
    return SandboxConfig(
        intron_api_key=INTRON_KEY,
        invox_static_token=INVOX_TOKEN,
        polls_before_ready=1,
        transcript_turns=turns,
    )


async def spy(watcher: Watcher, *stages: str) -> list[AbstractIncomingMessage]:
    """Copies of what the worker publishes to these stages (a second queue on the binding)."""
    copies: list[AbstractIncomingMessage] = []
    queue = await watcher.channel.declare_queue(exclusive=True, auto_delete=True)
    exchange = await watcher.channel.get_exchange(watcher.names.jobs_exchange)
    for stage in stages:
        await queue.bind(exchange, routing_key=stage)

    async def keep(message: AbstractIncomingMessage) -> None:
        await message.ack()
        copies.append(message)

    await queue.consume(keep)
    return copies


async def run_dlq(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await cli_dlq.run(argv, env, stdin=io.StringIO(""), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_a_job_runs_end_to_end_with_every_stage_message_sealed(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root, **KEYS_ENV)
    job = make_job(
        audio_file,
        template=SAMPLE_TEMPLATE,
        providers={"transcriber": "invox", "summarizer": "invox", "note": "invox"},
    )
    job_id = str(job.job_id)
    cipher = PayloadCipher(PayloadKeys({"k1": KEY}, "k1"))
    async with running_worker(env), watching(prefix) as watcher:
        copies = await spy(watcher, "summarize", "note")
        body, seal = cipher.seal(job.to_wire(), purpose=STAGE_PURPOSE, binding=job_id)
        await watcher.publish(body, correlation_id=job_id, headers=seal)
        outcome = await watcher.outcome(job_id)
        for _ in range(100):
            if len(copies) >= 2:
                break
            await asyncio.sleep(0.05)
    assert outcome["type"] == "job.completed", outcome
    assert MARKER in outcome["transcript"]["text"]  # the events stay clear by default
    assert sorted(copy.routing_key or "" for copy in copies) == ["note", "summarize"]
    for copy in copies:
        assert MARKER.encode() not in copy.body
        assert job_id.encode() not in copy.body
        headers = copy.headers or {}
        assert headers[c.HEADER_PAYLOAD_KEY_ID] == "k1"
        opened = cipher.open(copy.body, headers, purpose=STAGE_PURPOSE, binding=copy.correlation_id)
        assert MARKER in opened.decode()


async def test_an_unknown_key_is_one_dead_letter_and_the_worker_goes_on(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_LOG_LEVEL="debug", **KEYS_ENV)
    stream = io.StringIO()
    configure_logging("debug", stream=stream)
    stranger = make_job(audio_file)
    stranger_id = str(stranger.job_id)
    fine = make_job(audio_file)
    # The age is read off the letter's own death time: it cannot be older than the test's run.
    before = time.time()
    try:
        async with running_worker(env), watching(prefix) as watcher:
            body, seal = STRANGER.seal(
                stranger.to_wire(), purpose=STAGE_PURPOSE, binding=stranger_id
            )
            await watcher.publish(body, correlation_id=stranger_id, headers=seal)
            outcome = await watcher.outcome(await watcher.submit(fine))
            assert outcome["type"] == "job.completed"  # the worker kept consuming
            await asyncio.sleep(0.3)
            queue = await watcher.channel.declare_queue(
                watcher.names.dead_letter_queue, passive=True
            )
            assert queue.declaration_result.message_count == 1
            metrics = Metrics()
            age = DeadLetterAge(watcher.connection, watcher.names.dead_letter_queue, metrics)
            await age.probe()
            await age.close()
            sample = metrics.registry.get_sample_value
            assert sample("scribe_dead_letters") == 1
            oldest_s = sample("scribe_oldest_dead_letter_age_seconds")
            assert oldest_s is not None
            assert 0 <= oldest_s <= time.time() - before + 1  # death times have whole seconds
            [dead] = await dead_letters_kept(watcher)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert dead.routing_key == f"transcribe.{ErrorType.PAYLOAD_UNDECRYPTABLE}"
    assert dead.body == body  # the sealed bytes, as consumed
    assert (dead.headers or {})[c.HEADER_PAYLOAD_KEY_ID] == "stranger"
    assert stranger_id not in watcher.events  # no job.failed: its jobId is sealed
    logs = stream.getvalue()
    assert ErrorType.PAYLOAD_UNDECRYPTABLE.value in logs
    assert str(audio_file) not in logs  # nothing of the sealed job reached the logs


async def dead_letters_kept(watcher: Watcher) -> list[AbstractIncomingMessage]:
    """The dead letters, read and handed back (the probe above must not have lost the head)."""
    queue = await watcher.channel.get_queue(watcher.names.dead_letter_queue)
    taken: list[AbstractIncomingMessage] = []
    while (message := await queue.get(fail=False)) is not None:
        taken.append(message)
    for message in taken:
        await message.nack(requeue=True)
    return taken


async def test_scribe_dlq_opens_with_the_key_and_purges_by_age(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root, **KEYS_ENV)
    job = make_job(audio_file)
    job_id = str(job.job_id)
    async with running_worker(env), watching(prefix) as watcher:
        body, seal = STRANGER.seal(job.to_wire(), purpose=STAGE_PURPOSE, binding=job_id)
        await watcher.publish(body, correlation_id=job_id, headers=seal)
        for _ in range(100):
            queue = await watcher.channel.declare_queue(
                watcher.names.dead_letter_queue, passive=True
            )
            if queue.declaration_result.message_count:
                break
            await asyncio.sleep(0.05)
    tool_env = {"SCRIBE_PREFIX": prefix, "SCRIBE_AMQP_URL": env["SCRIBE_AMQP_URL"]}
    both_keys = {
        **tool_env,
        "SCRIBE_PAYLOAD_KEYS": f"{KEYS_ENV['SCRIBE_PAYLOAD_KEYS']},"
        f"stranger:{base64.b64encode(STRANGER_KEY).decode()}",
    }
    code, out, _ = await run_dlq(["show", job_id, "--json"], both_keys)
    assert code == 0
    shown = json.loads(out)
    assert shown["errorType"] == ErrorType.PAYLOAD_UNDECRYPTABLE
    assert shown["body"]["audio"]["path"] == str(audio_file)  # opened with the key
    code, out, _ = await run_dlq(["show", job_id, "--json"], {**tool_env, **KEYS_ENV})
    sealed = json.loads(out)["body"]["sealed"]
    assert sealed["readable"] is False
    assert sealed["keyId"] == "stranger"
    assert str(audio_file) not in out
    code, out, _ = await run_dlq(["purge", "--older-than", "1d", "--yes"], tool_env)
    assert (code, out) == (0, "purged=0\n")  # younger than a day: kept
    await asyncio.sleep(1.1)
    code, out, _ = await run_dlq(["purge", "--older-than", "1s", "--yes"], tool_env)
    assert (code, out) == (0, "purged=1\n")


async def test_sealed_events_open_downstream_even_after_scribe_unrouted(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    env = worker_env(
        prefix,
        sandbox.base_url,
        storage_root,
        SCRIBE_STAGE_EVENTS="none",
        SCRIBE_ENCRYPT_EVENTS="on",
        **KEYS_ENV,
    )
    names = Names(prefix)
    cipher = PayloadCipher(PayloadKeys({"k1": KEY}))  # a downstream consumer holding the key
    job = make_job(audio_file)
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection, running_worker(env):
        channel = await connection.channel()
        message = build_message(job.to_wire(), correlation_id=str(job.job_id))
        await Publisher(channel).publish(names.jobs_exchange, "transcribe", message)
        for _ in range(200):  # job.completed with nobody bound: kept in <prefix>.unrouted-events
            if await unrouted_count(channel, names):
                break
            await asyncio.sleep(0.1)
        results = await channel.declare_queue(exclusive=True)
        await results.bind(names.events_exchange, routing_key=c.EVENT_COMPLETED)
        assert (await drain(channel, names)).moved == 1
        delivered = None
        for _ in range(100):
            delivered = await results.get(fail=False, no_ack=True)
            if delivered is not None:
                break
            await asyncio.sleep(0.05)
    assert delivered is not None
    assert MARKER.encode() not in delivered.body
    opened = cipher.open(
        delivered.body,
        delivered.headers,
        purpose=delivered.routing_key or "",
        binding=delivered.correlation_id,
    )
    event = json.loads(opened)
    assert event["type"] == c.EVENT_COMPLETED
    assert MARKER in event["transcript"]["text"]
