"""Hostile input at the AMQP layer, against the real broker: what AMQP allows but nobody expects
costs only its own message (issue 12, items 1, 2, 4, 9 and 11).

Frames the client libraries refuse to encode are written with tests/rawamqp.py.
"""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest

from ops.sandbox import RunningSandbox
from schemas.errors import ErrorType
from tests.harness import (
    AMQP_URL,
    REDIS_URL,
    Watcher,
    make_job,
    running_worker,
    sandbox_control,
    watching,
    worker_env,
)
from tests.rawamqp import RawProperties, RawPublisher, long_str, nested_table, table
from worker.broker import Publisher, build_message
from worker.topology import Names

pytestmark = pytest.mark.broker

LONG_MAX = 2**63 - 1


def long_long(value: int) -> bytes:
    return b"l" + struct.pack(">q", value)


def text(value: bytes) -> bytes:
    return b"S" + long_str(value)


async def outcomes(watcher: Watcher, job_ids: list[str], timeout_s: float = 30.0) -> list[str]:
    return [(await watcher.outcome(job_id, timeout_s))["type"] for job_id in job_ids]


async def publish_raw(prefix: str, items: list[tuple[bytes, RawProperties]]) -> None:
    publisher = await RawPublisher.connect()
    try:
        for body, properties in items:
            await publisher.publish(Names(prefix).jobs_exchange, "transcribe", body, properties)
    finally:
        await publisher.close()


def valid_body(audio_file: Path) -> tuple[str, bytes]:
    job = make_job(audio_file)
    return str(job.job_id), job.to_wire()


async def test_undecodable_properties_cost_only_their_own_message(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    """A correlation_id that is not UTF-8, a timestamp of 2^63-1, a header key that is not UTF-8
    and a header table nested 5,000 deep, between six valid jobs: the worker keeps its
    connection, the six complete, and each bad frame ends as its own outcome."""
    valid = [valid_body(audio_file) for _ in range(6)]
    bad_utf8_id, bad_utf8_body = valid_body(audio_file)
    bad_key_id, bad_key_body = valid_body(audio_file)
    late_id, late_body = valid_body(audio_file)
    deep_id, deep_body = valid_body(audio_file)
    hostile = [
        (bad_utf8_body, RawProperties(correlation_id=b"\xff\xfe-not-utf8")),
        (late_body, RawProperties(timestamp=LONG_MAX)),
        (bad_key_body, RawProperties(headers=table([(b"\xffkey", text(b"\xff\xfe"))]))),
        (deep_body, RawProperties(headers=table([(b"deep", nested_table(5_000))]))),
    ]
    items: list[tuple[bytes, RawProperties]] = []
    for index, (_job_id, body) in enumerate(valid):
        items.append((body, RawProperties()))
        if index < len(hostile):
            items.append(hostile[index])
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env) as app, watching(prefix) as watcher:
        await publish_raw(prefix, items)
        assert await outcomes(watcher, [job_id for job_id, _ in valid]) == ["job.completed"] * 6
        failed = await watcher.outcome(bad_utf8_id)
        assert (failed["type"], failed["errorType"]) == ("job.failed", "invalidMessage")
        assert "correlation_id" in failed["message"]
        # Clamped timestamps, escaped header keys and tables cut at the decoder's depth are
        # harmless in headers the worker does not read: those jobs simply run.
        for job_id in (late_id, bad_key_id, deep_id):
            assert (await watcher.outcome(job_id))["type"] == "job.completed"
        assert app.reconnects == 0
        assert await app.ready()


async def test_bodies_and_counters_that_used_to_stall_a_stage(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    """More bad messages than the prefetch (here 2): a body nested 100,000 deep without a
    correlation_id, and x-attempts / x-polls of 2^63-1 as numbers and 2^63 as strings. Each is
    settled; the stage keeps consuming; valid jobs after them complete."""
    deep = b'{"jobId":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    counter_ids: list[str] = []
    items: list[tuple[bytes, RawProperties]] = []
    for _ in range(3):
        items.append((deep, RawProperties()))
    for name in (b"x-attempts", b"x-polls"):
        for value in (long_long(LONG_MAX), text(str(2**63).encode())):
            job_id, body = valid_body(audio_file)
            counter_ids.append(job_id)
            items.append((body, RawProperties(headers=table([(name, value)]))))
    after = [valid_body(audio_file) for _ in range(3)]
    items.extend((body, RawProperties()) for _, body in after)
    env = worker_env(prefix, sandbox.base_url, storage_root, SCRIBE_PREFETCH="2")
    async with running_worker(env) as app, watching(prefix) as watcher:
        await publish_raw(prefix, items)
        results = await outcomes(watcher, [*counter_ids, *(job_id for job_id, _ in after)])
        assert results == ["job.completed"] * (len(counter_ids) + len(after))
        dead = await watcher.dead_letters(3)
        assert {message.routing_key for message in dead} == {"transcribe.invalidMessage"}
        assert all(message.body == deep for message in dead)
        assert all("nested" in str(message.headers["x-error-message"]) for message in dead)
        assert app.metrics.stage("transcribe").unsettled == 0
        assert app.reconnects == 0


async def test_cc_and_forged_worker_headers_are_not_carried(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    """A job with CC: ["x-leak"] must not copy its later stage messages (transcript included) to
    routing key x-leak; x-stage, x-job-id and x-error-message are the worker's own words."""
    forged_job = str(uuid.uuid4())
    headers = {
        "CC": ["x-leak"],
        "BCC": ["x-leak"],
        "x-stage": "note",
        "x-job-id": forged_job,
        "x-error-message": "forged",
        "x-http-status": 599,
        "x-anything": "copied?",
    }
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        leak = await watcher.channel.declare_queue(exclusive=True)
        await leak.bind(watcher.names.jobs_exchange, routing_key="x-leak")
        job = make_job(audio_file)
        job_id = await watcher.submit(job, headers=headers)
        assert (await watcher.outcome(job_id))["type"] == "job.completed"
        await asyncio.sleep(0.3)
        # The publish to the jobs exchange itself honours CC (the broker's doing): only that
        # first copy may sit in the leak queue; nothing the worker published may.
        copies = []
        while (message := await leak.get(fail=False, no_ack=True)) is not None:
            copies.append(message)
        assert len(copies) <= 1
        assert all(json.loads(copy.body).get("job") is None for copy in copies)
        # A failing job: its dead letter names the real stage and job, in the worker's words.
        bad = make_job(audio_file, audio={"path": str(storage_root / "missing.wav")})
        bad_id = await watcher.submit(bad, headers=headers)
        assert (await watcher.outcome(bad_id))["type"] == "job.failed"
        [dead] = await watcher.dead_letters(1)
    assert dead.headers["x-stage"] == "transcribe"
    assert dead.headers["x-job-id"] == bad_id
    assert dead.headers["x-error-message"] != "forged"
    assert "x-http-status" not in dead.headers
    assert not {"CC", "BCC", "x-anything"} & set(dead.headers)


@pytest.mark.parametrize("through_delay_tier", [False, True])
async def test_broker_made_dead_letters_emit_job_failed(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    through_delay_tier: bool,
) -> None:
    """A message the broker dead-letters itself (deliveryLimitExceeded) announces job.failed,
    with the stage the broker's newest x-death entry and the routing key agree on: not a forged
    x-first-death-queue, and not the delay queue a retried job came back through."""
    env = worker_env(
        prefix, sandbox.base_url, storage_root, SCRIBE_STAGES="poll", SCRIBE_DELIVERY_LIMIT="1"
    )
    forged = {"x-first-death-queue": f"{prefix}.note", "x-stage": "note"}
    async with running_worker(env), watching(prefix) as watcher:
        job = make_job(audio_file)
        job_id = str(job.job_id)
        if through_delay_tier:
            delayed = build_message(
                job.to_wire(), correlation_id=job_id, headers={**forged, "scribe-delay-ms": "50"}
            )
            await Publisher(watcher.channel).publish(
                watcher.names.delay_exchange, "transcribe", delayed
            )
        else:
            await watcher.submit(job, headers=forged)
        await watcher.nack_until_the_broker_gives_up("transcribe")
        failed = await watcher.outcome(job_id)
        [dead] = await watcher.dead_letters(1)
    assert (failed["type"], failed["stage"], failed["errorType"]) == (
        "job.failed",
        "transcribe",
        ErrorType.DELIVERY_LIMIT_EXCEEDED.value,
    )
    assert dead.routing_key == "transcribe.deliveryLimitExceeded"


async def test_readyz_turns_false_while_a_stage_holds_messages_without_progress(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    hang = {"endpoint": "intron.upload", "kind": "timeout", "delayS": 4.0, "times": 1}
    await sandbox_control(sandbox.base_url, "faults", [hang])
    env = worker_env(
        prefix,
        sandbox.base_url,
        storage_root,
        SCRIBE_STALL_AFTER_S="1",
        SCRIBE_HTTP_TIMEOUT_S="10",
        SCRIBE_STAGES="transcribe",
    )
    async with running_worker(env) as app, watching(prefix) as watcher:
        url = f"http://127.0.0.1:{app.http_port}/readyz"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                assert response.status == 200
            await watcher.submit(make_job(audio_file))
            await asyncio.sleep(2.0)
            async with session.get(url) as response:
                assert response.status == 503
                assert (await response.json())["stalledStages"] == ["transcribe"]
            for _ in range(100):
                await asyncio.sleep(0.1)
                async with session.get(url) as response:
                    if response.status == 200:
                        break
            assert response.status == 200
    assert app.http_address is not None
    assert app.http_address[0] == "127.0.0.1"  # the default bind address: loopback


async def test_tolerant_decoding_reads_what_pamqp_alone_cannot() -> None:
    """The client side of item 1 without a worker: aio-pika reads the frames back."""
    from worker import amqp_decoding

    amqp_decoding.install()
    queue_name = f"test-raw-{uuid.uuid4().hex[:10]}"
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, exclusive=True)
        publisher = await RawPublisher.connect()
        try:
            properties = RawProperties(correlation_id=b"\xff", message_id=b"ok", timestamp=LONG_MAX)
            await publisher.publish("", queue_name, b"{}", properties)
        finally:
            await publisher.close()
        message: Any = None
        for _ in range(50):
            message = await queue.get(fail=False, no_ack=True)
            if message is not None:
                break
            await asyncio.sleep(0.05)
        assert message is not None
        assert message.message_id == "ok"
        assert message.timestamp.year == 9999
        assert not channel.is_closed


async def test_a_forged_x_death_is_dead_lettered_by_the_worker_not_left_for_the_broker(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    """RabbitMQ 3.10 crashes its at-least-once dead-lettering (for every queue of the node) when
    it dead-letters a message whose x-death is not a list of tables; the worker takes such a job
    out of the stage queue at once, as invalidMessage, with headers of its own."""
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env), watching(prefix) as watcher:
        job_id = await watcher.submit(make_job(audio_file), headers={"x-death": ["str"]})
        failed = await watcher.outcome(job_id)
        [dead] = await watcher.dead_letters(1)
        # The stage goes on with the next job.
        after = await watcher.submit(make_job(audio_file))
        assert (await watcher.outcome(after))["type"] == "job.completed"
    assert (failed["type"], failed["errorType"]) == ("job.failed", "invalidMessage")
    assert "x-death" in failed["message"]
    assert "x-death" not in dead.headers


@pytest.mark.redis
async def test_a_stale_copy_of_a_done_stage_announces_no_false_failure(
    redis_prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    """A duplicate of a job whose transcribe stage is done (left by a worker killed between its
    publish and its ack) that the broker dead-letters later must not announce job.failed for a
    job that completed."""
    env = worker_env(
        redis_prefix,
        sandbox.base_url,
        storage_root,
        SCRIBE_REDIS_URL=REDIS_URL,
        SCRIBE_DELIVERY_LIMIT="1",
    )
    job = make_job(audio_file)
    job_id = str(job.job_id)
    async with running_worker({**env, "SCRIBE_STAGES": "poll"}):
        pass  # declares the topology, so that the watcher can bind before the first job
    async with watching(redis_prefix) as watcher:
        async with running_worker(env):
            await watcher.submit(job)
            assert (await watcher.outcome(job_id))["type"] == "job.completed"
        async with running_worker({**env, "SCRIBE_STAGES": "poll"}):
            await watcher.submit(job)  # the stale copy
            await watcher.nack_until_the_broker_gives_up("transcribe")
            [dead] = await watcher.dead_letters(1)
            await asyncio.sleep(1.0)  # the reaper has seen it by now
    assert dead.routing_key == "transcribe.deliveryLimitExceeded"
    assert [event["type"] for event in watcher.events[job_id]].count("job.failed") == 0
