"""The job index: per job, its stage transitions with times, providers, attempts, outcome and
errorType, in PostgreSQL (SCRIBE_DATABASE_URL). Never patient text: no transcript, summary, note
or audio reference is ever handed to it.

Written only after the broker has confirmed what a delivery caused (worker/delivery.py calls
IndexWriter.record, which never waits and never raises), read by the status API
(worker/jobs_api.py). Writes go through a bounded in-memory queue that one background task
drains in batches; a batch that fails is retried with backoff (INDEX_WRITE_ATTEMPTS times), then
dropped and counted (scribe_index_entries_total{outcome="dropped_failed"}): the index is a view of
the pipeline, never its record (the events are). The schema comes from numbered migrations
(MIGRATIONS), applied in one transaction under an advisory lock, so that replicas starting
together apply each exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, TypeAlias

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.status import JobOutcome, JobStatus, JobSummary, Transition, TransitionKind
from worker.constants import Stage

log = structlog.get_logger("scribe.jobindex")

# pg_advisory_xact_lock key of the migrations: any constant the deployment uses for nothing else.
MIGRATION_LOCK_KEY: Final = 0x5C81BE17
INDEX_CONNECT_TIMEOUT_S: Final = 5.0
INDEX_COMMAND_TIMEOUT_S: Final = 10.0
INDEX_BATCH_MAX: Final = 500
# A batch that fails is tried again after 0.5 s, 1 s, 2 s, ... (at most 30 s), this many times in
# all; then it is dropped and counted.
INDEX_WRITE_ATTEMPTS: Final = 8
INDEX_RETRY_BASE_S: Final = 0.5
INDEX_RETRY_MAX_S: Final = 30.0
# At stop, what is queued gets this long (at most) to be written.
INDEX_STOP_FLUSH_S: Final = 5.0
# The longest stored provider name and errorType (schemas/status.py patterns say the same).
_TEXT_MAX = 64
_PROVIDER_MAX = 32

# A connection of its own (scribe-db) or one lent by the worker's pool.
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

# What an index operation raises when PostgreSQL is down, refuses us or is too slow.
INDEX_ERRORS: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "jobs and their stage transitions",
        """
        CREATE TABLE scribe_jobs (
            job_id uuid PRIMARY KEY,
            stage text NOT NULL,
            outcome text NOT NULL CHECK (outcome IN ('running', 'completed', 'failed')),
            provider text,
            attempts integer NOT NULL,
            error_type text,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        );
        CREATE INDEX scribe_jobs_updated ON scribe_jobs (updated_at DESC, job_id);
        CREATE INDEX scribe_jobs_outcome ON scribe_jobs (outcome, updated_at DESC);
        CREATE INDEX scribe_jobs_error_type ON scribe_jobs (error_type, updated_at DESC)
            WHERE error_type IS NOT NULL;
        CREATE TABLE scribe_job_transitions (
            job_id uuid NOT NULL,
            key text NOT NULL,
            stage text NOT NULL,
            kind text NOT NULL CHECK (kind IN ('done', 'retry', 'completed', 'failed')),
            provider text,
            attempts integer NOT NULL,
            error_type text,
            duration_ms double precision,
            at timestamptz NOT NULL,
            PRIMARY KEY (job_id, key)
        );
        """,
    ),
    Migration(
        2,
        "the console's audit of dead-letter replays and purges",
        # Written by ops/console/app.py before a replay or purge moves anything: who, when, the
        # filters and how many were planned, then how many were done.
        """
        CREATE TABLE scribe_console_audit (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            actor text NOT NULL,
            action text NOT NULL CHECK (action IN ('replay', 'purge')),
            filters jsonb NOT NULL,
            planned integer NOT NULL,
            done integer,
            outcome text NOT NULL CHECK (outcome IN ('started', 'done', 'failed'))
        );
        CREATE INDEX scribe_console_audit_at ON scribe_console_audit (at DESC);
        """,
    ),
)

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(
    connection: Connection, migrations: Sequence[Migration] = MIGRATIONS
) -> list[int]:
    """Apply the migrations not applied yet, in version order, in one transaction; returns the
    versions applied now (none when the schema is current). Concurrent callers wait on the
    advisory lock, then find the work done."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await connection.execute(_MIGRATIONS_TABLE)
        rows = await connection.fetch("SELECT version FROM schema_migrations")
        applied = {int(row["version"]) for row in rows}
        done: list[int] = []
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in applied:
                continue
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            done.append(migration.version)
    return done


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One transition of one job, as recorded: identifiers, names, counts and times only."""

    job_id: str
    stage: Stage
    kind: TransitionKind
    at: datetime
    provider: str | None = None
    attempts: int = 0
    error_type: str | None = None
    duration_ms: float | None = None
    replays: int = 0

    @property
    def outcome(self) -> JobOutcome:
        if self.kind == "completed":
            return "completed"
        if self.kind == "failed":
            return "failed"
        return "running"

    @property
    def key(self) -> str:
        """The transition's identity within its job: a retried write, or the same transition
        rebuilt from its event, is stored once."""
        if self.kind == "retry":
            return f"{self.stage}/retry/{self.attempts}/{self.replays}"
        if self.kind == "failed":
            return f"failed/{self.replays}"
        return f"{self.stage}/{self.kind}/{self.replays}"


def _short(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]


# The job's row follows its newest transition, except that a job's end at a stage beats a
# "done" at that same stage stamped a moment later (job.completed is stamped before its stage's
# progress event). An older transition written late (a retried batch, scribe-db follow) only adds
# its transition row; created_at is the oldest seen.
_WINS = (
    "(excluded.updated_at >= j.updated_at OR (j.outcome = 'running'"
    " AND excluded.outcome <> 'running' AND excluded.stage = j.stage))"
)
# _WINS is a constant; every value is a $n parameter.
_UPSERT_JOB = f"""
INSERT INTO scribe_jobs AS j
    (job_id, stage, provider, attempts, error_type, created_at, updated_at, outcome)
VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
ON CONFLICT (job_id) DO UPDATE SET
    stage = CASE WHEN {_WINS} THEN excluded.stage ELSE j.stage END,
    outcome = CASE WHEN {_WINS} THEN excluded.outcome ELSE j.outcome END,
    provider = CASE WHEN {_WINS} THEN coalesce(excluded.provider, j.provider) ELSE j.provider END,
    attempts = CASE WHEN {_WINS} THEN excluded.attempts ELSE j.attempts END,
    error_type = CASE WHEN {_WINS} THEN excluded.error_type ELSE j.error_type END,
    created_at = least(j.created_at, excluded.created_at),
    updated_at = greatest(j.updated_at, excluded.updated_at)
"""  # noqa: S608
_INSERT_TRANSITION = """
INSERT INTO scribe_job_transitions
    (job_id, stage, provider, attempts, error_type, at, key, kind, duration_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (job_id, key) DO NOTHING
"""
_SUMMARY_COLUMNS = "job_id, stage, outcome, provider, attempts, error_type, created_at, updated_at"


def _shared(entry: IndexEntry) -> tuple[Any, ...]:
    """$1..$6 of both statements: job, stage, provider, attempts, errorType, time."""
    provider, error_type = (
        _short(entry.provider, _PROVIDER_MAX),
        _short(entry.error_type, _TEXT_MAX),
    )
    return (entry.job_id, entry.stage, provider, entry.attempts, error_type, entry.at)


async def write_entries(connection: Connection, entries: Sequence[IndexEntry]) -> None:
    """One transaction for a batch: every job row (in the order recorded: one job's in the order
    they happened), then every transition row."""
    jobs = [(*_shared(entry), entry.outcome) for entry in entries]
    transitions = [(*_shared(entry), entry.key, entry.kind, entry.duration_ms) for entry in entries]
    async with connection.transaction():
        await connection.executemany(_UPSERT_JOB, jobs)
        await connection.executemany(_INSERT_TRANSITION, transitions)


@dataclass(frozen=True)
class JobFilter:
    """GET /jobs's filters, validated (worker/jobs_api.py); None: any."""

    stage: Stage | None = None
    outcome: JobOutcome | None = None
    error_type: str | None = None
    provider: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        values: list[Any] = []
        for column, value in (
            ("stage", self.stage),
            ("outcome", self.outcome),
            ("error_type", self.error_type),
            ("provider", self.provider),
        ):
            if value is not None:
                values.append(value)
                clauses.append(f"{column} = ${len(values)}")
        if self.since is not None:
            values.append(self.since)
            clauses.append(f"updated_at >= ${len(values)}")
        if self.until is not None:
            values.append(self.until)
            clauses.append(f"updated_at < ${len(values)}")
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), values


def _summary(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "job_id": row["job_id"],
        "stage": row["stage"],
        "outcome": row["outcome"],
        "provider": row["provider"],
        "attempts": row["attempts"],
        "error_type": row["error_type"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


class IndexReader:
    """The status API's queries, over the worker's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def job(self, job_id: str) -> JobStatus | None:
        async with self._pool.acquire() as connection:
            row = await connection.fetchrow(
                f"SELECT {_SUMMARY_COLUMNS} FROM scribe_jobs WHERE job_id = $1",  # noqa: S608 - constant columns
                job_id,
            )
            if row is None:
                return None
            steps = await connection.fetch(
                "SELECT stage, kind, at, provider, attempts, error_type, duration_ms"
                " FROM scribe_job_transitions WHERE job_id = $1 ORDER BY at, key LIMIT 10000",
                job_id,
            )
        transitions = [Transition.model_validate(dict(step)) for step in steps]
        return JobStatus.model_validate({**_summary(row), "transitions": transitions})

    async def jobs(self, wanted: JobFilter) -> list[JobSummary]:
        where, values = wanted.where()
        values.append(wanted.limit)
        query = (
            f"SELECT {_SUMMARY_COLUMNS} FROM scribe_jobs{where}"  # noqa: S608 - placeholders only
            f" ORDER BY updated_at DESC, job_id LIMIT ${len(values)}"
        )
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(query, *values)
        return [JobSummary.model_validate(_summary(row)) for row in rows]


async def open_pool(url: str, max_size: int = 4) -> asyncpg.Pool:
    """A pool that connects on first use (min_size 0): a worker starts with the index down."""
    pool = await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=max_size,
        timeout=INDEX_CONNECT_TIMEOUT_S,
        command_timeout=INDEX_COMMAND_TIMEOUT_S,
    )
    assert pool is not None
    return pool


@dataclass
class IndexCounts:
    """What the writer did, for /metrics and the tests (plain numbers; the event loop alone
    writes them)."""

    recorded: int = 0
    written: int = 0
    write_failures: int = 0
    dropped_full: int = 0
    dropped_failed: int = 0


class IndexWriter:
    """record() puts an entry on a bounded queue and returns at once; run() drains it.

    A full queue drops the new entry (counted, logged once per outage): the index never holds
    up an ack. A batch the database refuses is kept and tried again with backoff, up to
    INDEX_WRITE_ATTEMPTS times; the queue fills meanwhile, and drops once full.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        max_queue: int,
        *,
        migrate_first: bool = True,
        retry_base_s: float = INDEX_RETRY_BASE_S,
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self._queue: asyncio.Queue[IndexEntry] = asyncio.Queue(maxsize=max_queue)
        self._migrated = not migrate_first
        self._retry_base_s = retry_base_s
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._warned_full = False
        self.counts = IndexCounts()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def record(self, entry: IndexEntry) -> None:
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.counts.dropped_full += 1
            if not self._warned_full:
                self._warned_full = True
                log.warning("index.queue_full", outcome="dropped", pending=self._queue.qsize())
            return
        self.counts.recorded += 1

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="job-index-writer")

    async def ensure_schema(self) -> bool:
        """Apply the migrations if not done yet; False (logged) when the index is unreachable."""
        if self._migrated:
            return True
        try:
            async with self._pool.acquire() as connection:
                applied = await migrate(connection)
        except INDEX_ERRORS as exc:
            log.warning("index.migrate_failed", error=type(exc).__name__)
            return False
        self._migrated = True
        log.info("index.migrated", applied=applied)
        return True

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < INDEX_BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write_with_retries(batch)

    async def _write_with_retries(self, batch: list[IndexEntry]) -> None:
        for attempt in range(1, INDEX_WRITE_ATTEMPTS + 1):
            if await self._write(batch):
                return
            self.counts.write_failures += 1
            if attempt < INDEX_WRITE_ATTEMPTS:
                backoff = min(INDEX_RETRY_MAX_S, self._retry_base_s * 2 ** (attempt - 1))
                await asyncio.sleep(backoff * self._rng.uniform(0.5, 1.0))
        self.counts.dropped_failed += len(batch)
        log.warning("index.batch_dropped", outcome="dropped", entries=len(batch))

    async def _write(self, batch: list[IndexEntry]) -> bool:
        if not await self.ensure_schema():
            return False
        try:
            async with self._pool.acquire() as connection:
                await write_entries(connection, batch)
        except INDEX_ERRORS as exc:
            log.warning("index.write_failed", outcome="retry", error=type(exc).__name__)
            return False
        self.counts.written += len(batch)
        self._warned_full = False
        return True

    async def flush(self, timeout_s: float) -> bool:
        """Wait (at most timeout_s) until everything recorded so far is written or dropped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.counts.recorded > self.counts.written + self.counts.dropped_failed:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def close(self, grace_s: float) -> None:
        """Write what is queued within grace_s, then stop (what is left is lost from the index,
        not from the pipeline: the events still carry it)."""
        if self._task is None:
            return
        await self.flush(grace_s)
        task, self._task = self._task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self.pending:
            log.warning("index.unwritten_at_stop", entries=self.pending)


class Indexing(Protocol):
    """What worker/delivery.py needs of the index: a call that never waits and never raises."""

    def record(self, entry: IndexEntry) -> None: ...


class IndexCollector(Collector):
    """The writer's figures on the worker's /metrics (read on scrape, no locks per entry)."""

    def __init__(self, writer: IndexWriter) -> None:
        self._writer = writer

    def collect(self) -> Iterator[Metric]:
        counts = self._writer.counts
        entries = CounterMetricFamily(
            "scribe_index_entries",
            "Job index entries by what became of them (written, dropped_full, dropped_failed).",
            labels=["outcome"],
        )
        entries.add_metric(["written"], counts.written)
        entries.add_metric(["dropped_full"], counts.dropped_full)
        entries.add_metric(["dropped_failed"], counts.dropped_failed)
        yield entries
        yield CounterMetricFamily(
            "scribe_index_write_failures",
            "Job index batch writes that failed (each is tried again, up to a bound).",
            value=counts.write_failures,
        )
        yield GaugeMetricFamily(
            "scribe_index_pending", "Job index entries waiting to be written.", self._writer.pending
        )
