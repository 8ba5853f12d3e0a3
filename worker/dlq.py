"""Reading, filtering, replaying and purging <prefix>.dead-letters (the library behind scribe-dlq).

Safety rules, each covered by tests/integration/test_dlq.py against the real broker:

* Reading never removes anything. Messages are taken with basic.get and manual acks on a
  dedicated channel and *held* unacked while the scan goes on (so the scan reaches every message
  exactly once, however the queue orders returns), then handed back with basic.nack(requeue=True).
  A scan stops when basic.get finds the queue empty (everything it took is held, so it never
  gets a message twice) or at the first message it has already seen (returned under it by
  another client). The message count of queue.declare-ok is not used to stop: for quorum
  queues it is a lagging statistic (a scan right after another one saw 1 of 4 messages), while
  basic.get goes through the queue's state machine and sees every returned message.
* Replay publishes each matching message to <prefix>.jobs with publisher confirms and only then
  acks the dead letter, one message at a time. Messages that do not match stay held and go back
  to the queue at the end. A crash (kill -9) returns every unacked message to the queue, so
  nothing is lost; the only duplicate possible is the one message whose publish was confirmed
  but whose ack had not reached the broker (at most one per interruption).
* With SCRIBE_REDIS_URL set, every replayed identity is recorded in Redis between the confirm and
  the ack; a later run that finds the identity recorded acks the dead letter without publishing
  it again. That narrows the duplicate window to the single Redis round trip after the confirm.
  Each replayed message also carries x-replay-of=<identity>, so a duplicate is recognisable.
* Purge counts the matching messages, asks, then acks exactly the identities it counted.

The identity of a dead letter is a sha256 over its properties, headers (minus the broker's
per-delivery counters), routing key and body. message_id alone is not enough: the worker copies
the consumed message's message_id onto its dead letters, so a message that fails again after a
replay would reuse it, and a Redis ledger keyed by message_id would then ack it unpublished.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import redis.asyncio as aioredis
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aio_pika.exceptions import AMQPError, ChannelClosed

from worker import constants as c
from worker.broker import Publisher, build_message, carried_headers
from worker.constants import STAGES, Stage
from worker.topology import Names

HEADER_REPLAY_OF = "x-replay-of"
REPLAY_LEDGER_TTL_S = 30 * 24 * 3600
# RabbitMQ 4.0-4.2 drop a quorum-queue message returned more than 20 times (the default
# delivery limit); every read of the dead letters returns each message once.
DELIVERY_COUNT_WARNING = 15

# Counters the broker changes on every delivery; they must not change a dead letter's identity.
_VOLATILE_HEADERS = frozenset({"x-delivery-count", "x-acquired-count"})
# What a replay drops so that attempt counters, poll counts and delays restart fresh.
_FAILURE_HEADERS = frozenset(
    {
        c.HEADER_ERROR_TYPE,
        c.HEADER_ERROR_MESSAGE,
        c.HEADER_HTTP_STATUS,
        c.HEADER_ATTEMPTS,
        c.HEADER_FIRST_FAILURE_AT,
        c.HEADER_LAST_FAILURE_AT,
        c.HEADER_STAGE,
        c.HEADER_JOB_ID,
        c.HEADER_POLLS,
        c.HEADER_DELAY_TIER_MS,
        HEADER_REPLAY_OF,
        *_VOLATILE_HEADERS,
    }
)
_FAILURE_HEADER_PREFIXES = ("x-error-", "x-death", "x-first-death-", "x-last-death-")


class DeadLetterQueueMissing(Exception):
    def __init__(self, queue: str) -> None:
        super().__init__(f"queue {queue!r} does not exist (wrong SCRIBE_PREFIX?)")


def jsonable(value: Any) -> Any:
    """Header values (aiormq decodes datetimes, bytes, decimals) as plain JSON values."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            return _utc(datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def dead_letter_identity(message: AbstractIncomingMessage) -> str:
    headers = {
        key: value for key, value in (message.headers or {}).items() if key not in _VOLATILE_HEADERS
    }
    canonical = {
        "messageId": message.message_id,
        "correlationId": message.correlation_id,
        "timestamp": jsonable(message.timestamp),
        "routingKey": message.routing_key,
        "headers": jsonable(headers),
        "body": hashlib.sha256(message.body).hexdigest(),
    }
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def _job_id(headers: Mapping[str, Any], message: AbstractIncomingMessage) -> str | None:
    job_id = _text(headers.get(c.HEADER_JOB_ID)) or message.correlation_id
    if job_id:
        return str(job_id)
    try:
        decoded = json.loads(message.body)
    except (ValueError, UnicodeDecodeError):
        return None
    value = decoded.get("jobId") if isinstance(decoded, dict) else None
    return value if isinstance(value, str) else None


def _last_death_time(headers: Mapping[str, Any]) -> datetime | None:
    """When the broker itself dead-lettered the message (deliveryLimitExceeded)."""
    deaths = headers.get("x-death")
    times = [
        parse_time(death.get("time"))
        for death in (deaths if isinstance(deaths, list) else [])
        if isinstance(death, Mapping)
    ]
    found = [moment for moment in times if moment is not None]
    return max(found) if found else None


@dataclass(frozen=True)
class DeadLetter:
    """What a dead letter says about itself; the body is kept as consumed."""

    identity: str
    routing_key: str
    job_id: str | None
    stage: str | None
    error_type: str | None
    error_message: str
    http_status: int | None
    attempts: int | None
    first_failure_at: datetime | None
    last_failure_at: datetime | None
    replays: int
    delivery_count: int
    correlation_id: str | None
    message_id: str | None
    content_type: str | None
    headers: dict[str, Any]
    body: bytes

    @classmethod
    def from_message(cls, message: AbstractIncomingMessage) -> DeadLetter:
        headers = dict(message.headers or {})
        key_stage, _, key_error = (message.routing_key or "").partition(".")
        # The routing key decides the errorType: a broker dead letter (deliveryLimitExceeded)
        # may still carry a stale x-error-type from an earlier retry.
        error_type = key_error or _text(headers.get(c.HEADER_ERROR_TYPE))
        last = parse_time(headers.get(c.HEADER_LAST_FAILURE_AT)) or _last_death_time(headers)
        return cls(
            identity=dead_letter_identity(message),
            routing_key=message.routing_key or "",
            job_id=_job_id(headers, message),
            stage=_text(headers.get(c.HEADER_STAGE)) or key_stage or None,
            error_type=error_type or None,
            error_message=_text(headers.get(c.HEADER_ERROR_MESSAGE)) or "",
            http_status=_int_or_none(headers.get(c.HEADER_HTTP_STATUS)),
            attempts=_int_or_none(headers.get(c.HEADER_ATTEMPTS)),
            first_failure_at=parse_time(headers.get(c.HEADER_FIRST_FAILURE_AT)) or last,
            last_failure_at=last or (_utc(message.timestamp) if message.timestamp else None),
            replays=_int_or_none(headers.get(c.HEADER_REPLAYS)) or 0,
            delivery_count=_int_or_none(headers.get("x-delivery-count")) or 0,
            correlation_id=message.correlation_id,
            message_id=message.message_id,
            content_type=message.content_type,
            headers=headers,
            body=message.body,
        )

    def summary(self) -> dict[str, Any]:
        """One line of `scribe-dlq list --json`: no body, nothing patient-identifying."""
        return {
            "jobId": self.job_id,
            "stage": self.stage,
            "errorType": self.error_type,
            "attempts": self.attempts,
            "httpStatus": self.http_status,
            "firstFailureAt": jsonable(self.first_failure_at),
            "lastFailureAt": jsonable(self.last_failure_at),
            "message": self.error_message,
            "replays": self.replays,
            "routingKey": self.routing_key,
            "identity": self.identity,
        }


@dataclass(frozen=True)
class Filters:
    """Empty sets match everything; several values of one filter are alternatives."""

    error_types: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    job_ids: frozenset[str] = frozenset()
    since: datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.error_types and letter.error_type not in self.error_types:
            return False
        if self.stages and letter.stage not in self.stages:
            return False
        if self.job_ids and letter.job_id not in self.job_ids:
            return False
        if self.since is not None:
            return letter.last_failure_at is not None and letter.last_failure_at >= self.since
        return True


@dataclass(frozen=True)
class Taken:
    message: AbstractIncomingMessage
    letter: DeadLetter


class DeadLetterReader:
    """A dedicated channel on <prefix>.dead-letters. Everything taken and not acked is held and
    handed back (nack, requeue) by release(); if the process dies, the broker hands it back."""

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue, start_count: int) -> None:
        self._channel = channel
        self._queue = queue
        self.start_count = start_count
        self._held: list[AbstractIncomingMessage] = []
        self.max_delivery_count = 0

    @classmethod
    async def open(cls, connection: AbstractConnection, names: Names) -> DeadLetterReader:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(names.dead_letter_queue, passive=True)
        except ChannelClosed as exc:
            raise DeadLetterQueueMissing(names.dead_letter_queue) from exc
        result = queue.declaration_result
        return cls(channel, queue, int(result.message_count or 0))

    async def taken(self) -> AsyncIterator[Taken]:
        """Every message in the queue, once; stop early by breaking out. start_count (from
        queue.declare-ok) is only an estimate for progress display."""
        seen: set[str] = set()
        while True:
            message = await self._queue.get(no_ack=False, fail=False)
            if message is None:
                return
            letter = DeadLetter.from_message(message)
            self.max_delivery_count = max(self.max_delivery_count, letter.delivery_count)
            if letter.identity in seen:  # returned under us by another client: a full lap
                self.hold(message)
                return
            seen.add(letter.identity)
            yield Taken(message, letter)

    def hold(self, message: AbstractIncomingMessage) -> None:
        self._held.append(message)

    async def release(self) -> None:
        """Hand held messages back. basic.nack (not reject): RabbitMQ 4.3+ does not count it as
        a failed delivery."""
        held, self._held = self._held, []
        for message in held:
            try:
                await message.nack(requeue=True)
            except (AMQPError, ConnectionError, RuntimeError):
                return  # the channel is gone: the broker returns unacked messages by itself

    async def close(self) -> None:
        await self.release()
        if not self._channel.is_closed:
            await self._channel.close()


async def read_matching(
    reader: DeadLetterReader, filters: Filters, stop: asyncio.Event | None = None
) -> list[DeadLetter]:
    """Every matching dead letter, leaving all of them in the queue."""
    found: list[DeadLetter] = []
    try:
        async for item in reader.taken():
            reader.hold(item.message)
            if filters.matches(item.letter):
                found.append(item.letter)
            if stop is not None and stop.is_set():
                break
    finally:
        await reader.release()
    return found


def stats(letters: list[DeadLetter]) -> dict[str, Any]:
    by_error: dict[str, int] = {}
    by_stage: dict[str, int] = {}
    by_pair: dict[tuple[str, str], int] = {}
    for letter in letters:
        error = letter.error_type or "?"
        stage = letter.stage or "?"
        by_error[error] = by_error.get(error, 0) + 1
        by_stage[stage] = by_stage.get(stage, 0) + 1
        by_pair[(stage, error)] = by_pair.get((stage, error), 0) + 1
    return {
        "total": len(letters),
        "byErrorType": dict(sorted(by_error.items(), key=lambda kv: (-kv[1], kv[0]))),
        "byStage": dict(sorted(by_stage.items(), key=lambda kv: (-kv[1], kv[0]))),
        "byStageAndErrorType": [
            {"stage": stage, "errorType": error, "count": count}
            for (stage, error), count in sorted(by_pair.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }


# --- redaction -------------------------------------------------------------------------------

REDACTED = "[redacted]"
# Keys whose values are patient data in the wire models (schemas/jobs.py, schemas/events.py):
# transcript and segment text, summary/note field values, Intron post-processing Markdown,
# audio/document locations and file names.
_REDACT_KEYS = frozenset(
    {
        "text",
        "value",
        "postProcessing",
        "url",
        "path",
        "fileName",
        "documentName",
        "clinicalNote",
    }
)


def _redact_all(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _redact_all(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_all(item) for item in value]
    if value is None:
        return None
    return REDACTED


def redact(value: Any) -> Any:
    """The same structure with every patient-data leaf replaced by "[redacted]"."""
    if isinstance(value, dict):
        return {
            key: _redact_all(item) if key in _REDACT_KEYS else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def decode_body(body: bytes, *, redacted: bool) -> Any:
    """The body as JSON when it is JSON; otherwise text, or base64 for non-UTF-8 bytes."""
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        if redacted:
            return f"{REDACTED} ({len(body)} bytes, not JSON)"
        try:
            return {"text": body.decode("utf-8")}
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(body).decode("ascii")}
    return redact(decoded) if redacted else decoded


# --- replay ----------------------------------------------------------------------------------


class ReplayLedger(Protocol):
    """Identities already replayed: consulted before publishing, written after the confirm."""

    async def was_replayed(self, identity: str) -> bool: ...

    async def record(self, identity: str) -> None: ...

    async def close(self) -> None: ...


class NoReplayLedger:
    async def was_replayed(self, identity: str) -> bool:
        return False

    async def record(self, identity: str) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisReplayLedger:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    @classmethod
    async def connect(cls, url: str, prefix: str) -> RedisReplayLedger:
        ledger = cls(aioredis.Redis.from_url(url), prefix)
        await ledger._redis.ping()  # fail before touching the queue, not half-way
        return ledger

    def key(self, identity: str) -> str:
        return f"{self._prefix}:dlq:replayed:{identity}"

    async def was_replayed(self, identity: str) -> bool:
        return bool(await self._redis.exists(self.key(identity)))

    async def record(self, identity: str) -> None:
        await self._redis.set(self.key(identity), "1", ex=REPLAY_LEDGER_TTL_S)

    async def close(self) -> None:
        await self._redis.aclose()


def replay_headers(letter: DeadLetter) -> dict[str, Any]:
    """The dead letter's headers without failure bookkeeping, plus x-replays and x-replay-of."""
    headers = {
        key: value
        for key, value in carried_headers(letter.headers).items()
        if key not in _FAILURE_HEADERS and not key.startswith(_FAILURE_HEADER_PREFIXES)
    }
    headers[c.HEADER_REPLAYS] = letter.replays + 1
    headers[HEADER_REPLAY_OF] = letter.identity
    return headers


def target_stage(letter: DeadLetter, to_stage: Stage | None) -> Stage | None:
    if to_stage is not None:
        return to_stage
    for stage in STAGES:
        if stage == letter.stage:
            return stage
    return None


@dataclass(frozen=True)
class ReplayOptions:
    filters: Filters = Filters()
    to_stage: Stage | None = None
    limit: int | None = None
    rate: float | None = None
    dry_run: bool = False


@dataclass
class ReplaySummary:
    replayed: int = 0
    would_replay: int = 0
    skipped: int = 0
    already_replayed: int = 0
    scanned: int = 0
    total: int = 0
    dry_run: bool = False
    interrupted: bool = False
    planned: list[tuple[DeadLetter, Stage]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"replayed={self.replayed} would_replay={self.would_replay} skipped={self.skipped} "
            f"already_replayed={self.already_replayed} dry_run={str(self.dry_run).lower()} "
            f"interrupted={str(self.interrupted).lower()}"
        )


class _Pacer:
    """At most `rate` publishes per second, without sleeping past a stop request."""

    def __init__(self, rate: float | None, stop: asyncio.Event) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()
        self._stop = stop

    async def wait(self) -> None:
        if not self._interval:
            return
        delay = self._next - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        self._next = max(self._next, time.monotonic()) + self._interval


async def replay(
    reader: DeadLetterReader,
    publisher: Publisher,
    names: Names,
    options: ReplayOptions,
    ledger: ReplayLedger,
    *,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[ReplaySummary], None] | None = None,
) -> ReplaySummary:
    """Publish-confirm, record, then ack: one message at a time (see the module docstring)."""
    stop = stop or asyncio.Event()
    summary = ReplaySummary(dry_run=options.dry_run, total=reader.start_count)
    pacer = _Pacer(options.rate, stop)
    published: set[str] = set()
    try:
        async for item in reader.taken():
            summary.scanned += 1
            letter = item.letter
            stage = target_stage(letter, options.to_stage)
            # A replay of this run that failed again (workers are running) is a new dead letter
            # carrying our x-replay-of: leave it for a later run instead of looping on it.
            again = _text(letter.headers.get(HEADER_REPLAY_OF)) in published
            if again or not options.filters.matches(letter) or stage is None:
                reader.hold(item.message)
                summary.skipped += 1
            elif options.dry_run:
                reader.hold(item.message)
                summary.would_replay += 1
                summary.planned.append((letter, stage))
            else:
                await _replay_one(item, stage, publisher, names, ledger, pacer, reader, summary)
                published.add(letter.identity)
            if on_progress is not None:
                on_progress(summary)
            done = summary.replayed + summary.already_replayed + summary.would_replay
            if options.limit is not None and done >= options.limit:
                break
            if stop.is_set():
                summary.interrupted = True
                break
    finally:
        await reader.release()
    return summary


async def _replay_one(
    item: Taken,
    stage: Stage,
    publisher: Publisher,
    names: Names,
    ledger: ReplayLedger,
    pacer: _Pacer,
    reader: DeadLetterReader,
    summary: ReplaySummary,
) -> None:
    letter = item.letter
    try:
        if await ledger.was_replayed(letter.identity):
            # An earlier run published it (confirmed) and died before the ack.
            await item.message.ack()
            summary.already_replayed += 1
            return
        await pacer.wait()
        message = build_message(
            letter.body,
            correlation_id=letter.correlation_id,
            headers=replay_headers(letter),
            message_id=letter.message_id,
            content_type=letter.content_type or "application/json",
        )
        await publisher.publish(names.jobs_exchange, stage, message)
    except BaseException:
        reader.hold(item.message)  # not replayed: it goes back to the queue
        raise
    await ledger.record(letter.identity)
    await item.message.ack()
    summary.replayed += 1


# --- purge -----------------------------------------------------------------------------------


async def purge(reader: DeadLetterReader, identities: set[str]) -> int:
    """Ack exactly the dead letters with these identities (counted and confirmed earlier)."""
    purged = 0
    try:
        async for item in reader.taken():
            if item.letter.identity in identities:
                await item.message.ack()
                purged += 1
            else:
                reader.hold(item.message)
            if purged == len(identities):
                break
    finally:
        await reader.release()
    return purged
