"""scribe-db follow: keep (or rebuild) the job index from <prefix>.events.

A durable quorum queue, <prefix>.job-index, bound to every job.# event, holds the events while
this follower or PostgreSQL is down; the follower takes them in batches, writes each batch in
one transaction (worker/jobindex.py write_entries) and acks the batch only after the commit. A
batch the database refuses goes back to the queue and is tried again after a pause: nothing is
lost while the queue holds it. The worker's own writes and the follower's agree (each transition
has the same key whichever wrote it), so both may run.

From events, a job's row has its stage transitions (job.stage.<stage>, where SCRIBE_STAGE_EVENTS
publishes them), its completion (job.completed) or failure (job.failed, with errorType and
attempts); retries publish no event, so only the worker's own writes show them. An event that
cannot be read is acked and counted, never retried.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from schemas.base import Stage, WireDatetime, WireInt, WireModel, WireUuid
from worker.constants import EVENT_COMPLETED, EVENT_FAILED, EVENT_STAGE_PREFIX
from worker.jobindex import INDEX_ERRORS, IndexEntry, migrate, write_entries
from worker.payload_crypto import PayloadCipher, PayloadUndecryptable
from worker.topology import Names, declare_events_exchange

log = structlog.get_logger("scribe.index_follow")

FOLLOW_BATCH = 200
# Events larger than this are not read (a job.completed carries the transcript and the note).
MAX_EVENT_BYTES = 32 * 1024 * 1024
RETRY_PAUSE_S = 2.0
# --until-empty gives up after this many failed writes in a row (the events stay queued).
UNTIL_EMPTY_MAX_FAILURES = 5
IDLE_PAUSE_S = 0.2


class _Head(WireModel, extra="ignore"):
    """The fields of an event the index keeps; everything else (patient text) is ignored."""

    type: str
    job_id: WireUuid
    occurred_at: WireDatetime
    stage: Stage | None = None
    provider: str | None = None
    duration_ms: float | None = None
    error_type: str | None = None
    attempts: WireInt | None = None
    clinical_note: Any = None
    summary: dict[str, Any] | None = None


def entry_of(routing_key: str, body: bytes) -> IndexEntry | None:
    """The index entry an event means, or None (not an event the index keeps, or unreadable)."""
    if len(body) > MAX_EVENT_BYTES:
        return None
    try:
        head = _Head.model_validate(json.loads(body))
    except (ValueError, ValidationError):
        return None
    job_id, at = str(head.job_id), head.occurred_at
    if routing_key.startswith(EVENT_STAGE_PREFIX) and head.type == "job.stage" and head.stage:
        return IndexEntry(job_id, head.stage, "done", at, head.provider, 1, None, head.duration_ms)
    if routing_key == EVENT_FAILED and head.type == "job.failed" and head.stage:
        return IndexEntry(
            job_id, head.stage, "failed", at, None, head.attempts or 0, head.error_type
        )
    if routing_key == EVENT_COMPLETED and head.type == "job.completed":
        stage: Stage = "note" if head.clinical_note else "summarize"
        provider = (head.summary or {}).get("provider") if stage == "summarize" else None
        return IndexEntry(
            job_id, stage, "completed", at, provider if isinstance(provider, str) else None, 1
        )
    return None


@dataclass
class FollowReport:
    written: int = 0
    skipped: int = 0
    write_failures: int = 0
    # Whether the last batch taken was handed back unwritten (the database refused it).
    unwritten: bool = False

    def line(self) -> str:
        return f"written={self.written} skipped={self.skipped} write_failures={self.write_failures}"


async def declare(channel: AbstractChannel, names: Names) -> AbstractQueue:
    """<prefix>.job-index, bound to every job event (idempotent)."""
    exchange = await declare_events_exchange(channel, names)
    queue = await channel.declare_queue(
        names.index_events_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(exchange, routing_key="job.#")
    return queue


async def _take(queue: AbstractQueue) -> list[AbstractIncomingMessage]:
    batch: list[AbstractIncomingMessage] = []
    while len(batch) < FOLLOW_BATCH:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        batch.append(message)
    return batch


def _entries(
    cipher: PayloadCipher, batch: Sequence[AbstractIncomingMessage]
) -> list[IndexEntry | None]:
    return [entry_of(message.routing_key or "", _clear(cipher, message)) for message in batch]


async def _write(database_url: str, entries: list[IndexEntry]) -> None:
    connection = await asyncpg.connect(database_url, timeout=5.0)
    try:
        await migrate(connection)
        await write_entries(connection, entries)
    finally:
        await connection.close()


def _clear(cipher: PayloadCipher, message: AbstractIncomingMessage) -> bytes:
    """The event's body, opened when SCRIBE_ENCRYPT_EVENTS sealed it; one no key here opens is
    empty (skipped and counted, as any unreadable event)."""
    try:
        return cipher.open(
            message.body,
            message.headers,
            purpose=message.routing_key or "",
            binding=message.correlation_id,
        )
    except PayloadUndecryptable:
        return b""


async def follow_once(
    queue: AbstractQueue,
    database_url: str,
    report: FollowReport,
    retry_pause_s: float,
    cipher: PayloadCipher | None = None,
) -> int:
    """One batch: taken, written, acked (or handed back on a database failure); its size."""
    batch = await _take(queue)
    if not batch:
        return 0
    # Opening and parsing a job.completed is CPU work on a large body: off the event loop.
    read = await asyncio.to_thread(_entries, cipher or PayloadCipher(None), batch)
    entries = [entry for entry in read if entry is not None]
    try:
        if entries:
            await _write(database_url, entries)
    except INDEX_ERRORS as exc:
        report.write_failures += 1
        report.unwritten = True
        log.warning("index.follow_write_failed", error=type(exc).__name__, entries=len(entries))
        for message in batch:
            await message.nack(requeue=True)
        await asyncio.sleep(retry_pause_s)
        return len(batch)
    for message in batch:
        await message.ack()
    report.unwritten = False
    report.written += len(entries)
    report.skipped += len(batch) - len(entries)
    return len(batch)


async def follow(
    amqp_url: str,
    names: Names,
    database_url: str,
    until_empty: bool,
    stop: asyncio.Event,
    retry_pause_s: float = RETRY_PAUSE_S,
    cipher: PayloadCipher | None = None,
) -> FollowReport:
    """cipher: the keys that open sealed events (SCRIBE_ENCRYPT_EVENTS)."""
    report = FollowReport()
    connection = await aio_pika.connect_robust(
        amqp_url, client_properties={"connection_name": "scribe-db follow"}
    )
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=FOLLOW_BATCH)
        queue = await declare(channel, names)
        streak = 0
        while not stop.is_set():
            failures = report.write_failures
            taken = await follow_once(queue, database_url, report, retry_pause_s, cipher)
            streak = streak + 1 if report.write_failures > failures else 0
            if until_empty and (taken == 0 or streak >= UNTIL_EMPTY_MAX_FAILURES):
                break
            if taken == 0:
                await asyncio.sleep(IDLE_PAUSE_S)
    return report
