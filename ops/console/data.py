"""What the console shows, gathered from where it lives: queue depths and consumers from the
broker (a passive queue.declare per queue: the management plugin is not assumed), dead letters
through ops/dlq.py (read and handed back, as `scribe-dlq list` does), rate-limit use from the
limiter's Redis keys, and jobs from the job index (PostgreSQL). Nothing here holds patient text
except a dead letter's body, which pages show redacted unless the session may see it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import aio_pika
import asyncpg
import redis.asyncio as aioredis
from aio_pika.abc import AbstractConnection
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity
from redis.exceptions import RedisError

from ops import dlq
from worker import constants as c
from worker.constants import STAGES, Stage
from worker.jobindex import INDEX_ERRORS
from worker.payload_crypto import PayloadCipher
from worker.ratelimit import interval_s
from worker.topology import Names

QueueKind = Literal["stage", "delay", "dead", "broker-dead", "unrouted"]
# The history kept for the charts: one sample per SAMPLE_EVERY_S for HISTORY_S.
HISTORY_S: Final = 3600.0
DURATION_BUCKET_S: Final = 300


@dataclass(frozen=True)
class QueueDepth:
    name: str
    kind: QueueKind
    stage: Stage | None
    messages: int | None
    consumers: int | None

    @property
    def present(self) -> bool:
        return self.messages is not None


@dataclass(frozen=True)
class Sample:
    at: float
    depths: dict[str, int]


@dataclass
class History:
    """Queue depths over the last hour, sampled by the console itself."""

    samples: deque[Sample] = field(default_factory=deque)

    def add(self, depths: Sequence[QueueDepth], at: float | None = None) -> None:
        now = time.time() if at is None else at
        known = {d.name: d.messages for d in depths if d.messages is not None}
        self.samples.append(Sample(now, {k: v for k, v in known.items() if v is not None}))
        while self.samples and now - self.samples[0].at > HISTORY_S:
            self.samples.popleft()

    def series(self, name: str) -> list[tuple[float, float]]:
        return [(s.at, float(s.depths[name])) for s in self.samples if name in s.depths]


def queues_of(
    names: Names, delay_tiers_ms: Sequence[int]
) -> list[tuple[str, QueueKind, Stage | None]]:
    queues: list[tuple[str, QueueKind, Stage | None]] = [
        (names.stage_queue(stage), "stage", stage) for stage in STAGES
    ]
    queues += [(names.delay_queue(ms), "delay", None) for ms in delay_tiers_ms]
    queues += [
        (names.dead_letter_queue, "dead", None),
        (names.broker_dead_letter_queue, "broker-dead", None),
        (names.unrouted_events_queue, "unrouted", None),
    ]
    return queues


async def queue_depths(
    connection: AbstractConnection, names: Names, delay_tiers_ms: Sequence[int]
) -> list[QueueDepth]:
    """Each queue's ready messages and consumers; a queue not declared yet shows as absent (a
    passive declare of a missing queue closes its channel, so each gets its own)."""
    found = []
    for name, kind, stage in queues_of(names, delay_tiers_ms):
        messages = consumers = None
        try:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
                result = queue.declaration_result
                messages, consumers = result.message_count, result.consumer_count
            finally:
                if not channel.is_closed:
                    await channel.close()
        except ChannelNotFoundEntity:
            pass
        found.append(QueueDepth(name, kind, stage, messages, consumers))
    return found


@dataclass(frozen=True)
class DeadLetterView:
    """The dead letters as one scan found them (and handed back)."""

    letters: list[dlq.DeadLetter]

    def by_error_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for letter in self.letters:
            key = letter.error_type or "unknown"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def by_stage(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for letter in self.letters:
            key = letter.stage or "unknown"
            counts[key] = counts.get(key, 0) + 1
        return counts


async def dead_letters(
    connection: AbstractConnection,
    names: Names,
    filters: dlq.Filters,
    cipher: PayloadCipher | None = None,
) -> DeadLetterView:
    """Read (and hand back) the dead letters matching filters; an absent queue is empty.
    cipher: the keys that open sealed bodies (unset: they are shown as sealed)."""
    try:
        reader = await dlq.DeadLetterReader.open(connection, names, cipher)
    except dlq.DeadLetterQueueMissing:
        return DeadLetterView([])
    try:
        return DeadLetterView(await dlq.read_matching(reader, filters))
    finally:
        await reader.close()


@dataclass(frozen=True)
class RateLimitUse:
    endpoint: str
    per_minute: int
    booked_ahead_s: float

    @property
    def queued_calls(self) -> int:
        """Calls already given a slot in the future: the limiter's backlog."""
        return int(self.booked_ahead_s / interval_s(self.per_minute)) if self.per_minute else 0


async def rate_limit_use(
    client: aioredis.Redis | None, prefix: str, limits: dict[str, int]
) -> list[RateLimitUse] | None:
    """Per vendor endpoint with a limit: how far ahead its next free slot is booked (0 = idle).
    None without Redis (each worker then limits on its own, and nothing is shared to read)."""
    if client is None:
        return None
    found = []
    now = time.time()
    for endpoint, per_minute in sorted(limits.items()):
        key = f"{prefix}:{c.REDIS_RATE_LIMIT_NAMESPACE}:{endpoint}"
        try:
            raw = await client.get(key)
        except RedisError:
            return None
        try:
            next_free = float(raw) if raw is not None else 0.0
        except ValueError:
            next_free = 0.0
        found.append(RateLimitUse(endpoint, per_minute, max(0.0, next_free - now)))
    return found


@dataclass(frozen=True)
class StageActivity:
    stage: Stage
    per_minute: float
    median_duration_ms: float | None
    # Jobs not finished whose latest recorded transition is at this stage: in flight there or
    # handed on to the next stage's queue (the broker's unacked count needs the management API).
    running: int = 0


_ACTIVITY_SQL: Final = """
SELECT stage, count(*) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS median_ms
FROM scribe_job_transitions
WHERE at > $1 AND kind IN ('done', 'completed')
GROUP BY stage
"""

_RUNNING_SQL: Final = """
SELECT stage, count(*) AS n FROM scribe_jobs WHERE outcome = 'running' GROUP BY stage
"""

_DURATIONS_SQL: Final = """
SELECT stage, floor(extract(epoch FROM at) / $2) * $2 AS bucket,
       avg(duration_ms) AS mean_ms
FROM scribe_job_transitions
WHERE at > $1 AND duration_ms IS NOT NULL
GROUP BY stage, bucket
ORDER BY bucket
"""


async def stage_activity(pool: asyncpg.Pool | None, minutes: int = 5) -> list[StageActivity] | None:
    """Per stage: transitions finished per minute over the last minutes, and their median
    duration, from the job index. None without an index or when it cannot answer."""
    if pool is None:
        return None
    since = datetime.now(UTC) - timedelta(minutes=minutes)
    try:
        rows = await pool.fetch(_ACTIVITY_SQL, since)
        running = {row["stage"]: int(row["n"]) for row in await pool.fetch(_RUNNING_SQL)}
    except INDEX_ERRORS:
        return None
    by_stage = {row["stage"]: row for row in rows}
    return [
        StageActivity(
            stage,
            float(by_stage[stage]["n"]) / minutes if stage in by_stage else 0.0,
            _float_or_none(by_stage[stage]["median_ms"]) if stage in by_stage else None,
            running.get(stage, 0),
        )
        for stage in STAGES
    ]


async def stage_durations(
    pool: asyncpg.Pool | None,
) -> dict[str, list[tuple[float, float]]] | None:
    """Mean stage duration per DURATION_BUCKET_S over the last hour, per stage."""
    if pool is None:
        return None
    since = datetime.now(UTC) - timedelta(seconds=HISTORY_S)
    try:
        rows = await pool.fetch(_DURATIONS_SQL, since, DURATION_BUCKET_S)
    except INDEX_ERRORS:
        return None
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        series.setdefault(row["stage"], []).append((float(row["bucket"]), float(row["mean_ms"])))
    return series


def _float_or_none(value: Any) -> float | None:
    return float(value) if value is not None else None


async def connect_broker(url: str) -> AbstractConnection:
    return await asyncio.wait_for(
        aio_pika.connect_robust(url, client_properties={"connection_name": "scribe-console"}),
        timeout=30,
    )


BROKER_ERRORS: Final = (AMQPError, OSError, TimeoutError, aio_pika.exceptions.AMQPException)
