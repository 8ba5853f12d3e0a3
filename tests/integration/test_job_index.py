"""The job index against the real PostgreSQL: migrations (idempotent, one winner among concurrent
starters), the writer (batches, ordering, retries, a bounded queue) and scribe-db."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ops import cli_db
from worker.jobindex import (
    INDEX_WRITE_ATTEMPTS,
    MIGRATIONS,
    IndexEntry,
    IndexReader,
    IndexWriter,
    JobFilter,
    migrate,
    open_pool,
)

pytestmark = pytest.mark.postgres

# Nothing listens here: the index is down.
DEAD_URL = "postgresql://postgres@127.0.0.1:1/none"


def _entries(job_id: str, start: datetime) -> list[IndexEntry]:
    """A job that retried once at transcribe and then went through every stage."""
    at = [start + timedelta(seconds=step) for step in range(6)]
    return [
        IndexEntry(job_id, "transcribe", "retry", at[0], attempts=1, error_type="upstreamTimeout"),
        IndexEntry(job_id, "transcribe", "done", at[1], "intron", 2, duration_ms=12.5),
        IndexEntry(job_id, "poll", "done", at[2], "intron", 1, duration_ms=3.0),
        IndexEntry(job_id, "summarize", "done", at[3], "invox", 1, duration_ms=40.0),
        IndexEntry(job_id, "note", "completed", at[4], "invox", 1, duration_ms=41.0),
    ]


async def test_migrations_apply_once_even_when_workers_start_together(database_url: str) -> None:
    connections = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in connections))
        assert sorted(results) == [[], [], [], [m.version for m in MIGRATIONS]]
        assert await migrate(connections[0]) == []
        rows = await connections[0].fetch("SELECT version, name FROM schema_migrations")
        assert [(r["version"], r["name"]) for r in rows] == [
            (m.version, m.name) for m in MIGRATIONS
        ]
        tables = await connections[0].fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        assert [t["tablename"] for t in tables] == [
            "schema_migrations",
            "scribe_console_audit",
            "scribe_job_transitions",
            "scribe_jobs",
        ]
    finally:
        for connection in connections:
            await connection.close()


async def test_writer_records_transitions_and_the_newest_state_wins(database_url: str) -> None:
    pool = await open_pool(database_url)
    writer = IndexWriter(pool, max_queue=100)
    writer.start()
    try:
        job_id = str(uuid.uuid4())
        entries = _entries(job_id, datetime(2026, 1, 1, tzinfo=UTC))
        # Newest first, and one twice: the row follows the newest, each transition is kept once.
        for entry in [*reversed(entries), entries[2]]:
            writer.record(entry)
        assert await writer.flush(10.0)
        status = await IndexReader(pool).job(job_id)
        assert status is not None
        assert (status.stage, status.outcome, status.provider) == ("note", "completed", "invox")
        assert status.error_type is None
        assert status.created_at == entries[0].at
        assert status.updated_at == entries[-1].at
        assert [(t.stage, t.kind, t.attempts) for t in status.transitions] == [
            ("transcribe", "retry", 1),
            ("transcribe", "done", 2),
            ("poll", "done", 1),
            ("summarize", "done", 1),
            ("note", "completed", 1),
        ]
        assert status.transitions[0].error_type == "upstreamTimeout"
        assert status.transitions[1].duration_ms == 12.5
        assert await IndexReader(pool).job(str(uuid.uuid4())) is None
    finally:
        await writer.close(5.0)
        await pool.close()


async def test_filters_select_jobs_newest_first(database_url: str) -> None:
    pool = await open_pool(database_url)
    writer = IndexWriter(pool, max_queue=100)
    writer.start()
    try:
        start = datetime(2026, 2, 1, tzinfo=UTC)
        done, failed = str(uuid.uuid4()), str(uuid.uuid4())
        for entry in _entries(done, start):
            writer.record(entry)
        writer.record(
            IndexEntry(
                failed, "summarize", "failed", start + timedelta(hours=1), "invox", 3, "rateLimited"
            )
        )
        assert await writer.flush(10.0)
        reader = IndexReader(pool)
        everything = await reader.jobs(JobFilter())
        assert [str(j.job_id) for j in everything] == [failed, done]
        only_failed = await reader.jobs(JobFilter(outcome="failed", error_type="rateLimited"))
        assert [str(j.job_id) for j in only_failed] == [failed]
        assert await reader.jobs(JobFilter(error_type="upstreamTimeout")) == []
        by_stage = await reader.jobs(JobFilter(stage="note", provider="invox"))
        assert [str(j.job_id) for j in by_stage] == [done]
        window = await reader.jobs(JobFilter(since=start, until=start + timedelta(minutes=30)))
        assert [str(j.job_id) for j in window] == [done]
        assert len(await reader.jobs(JobFilter(limit=1))) == 1
        # A vendor's 403 may carry its own errorType (worker/providers/http.py lets hyphens in).
        forbidden = str(uuid.uuid4())
        writer.record(
            IndexEntry(forbidden, "note", "failed", start, "invox", 1, "missing-permission")
        )
        assert await writer.flush(10.0)
        shown = await reader.jobs(JobFilter(error_type="missing-permission"))
        assert [(str(j.job_id), j.error_type) for j in shown] == [(forbidden, "missing-permission")]
    finally:
        await writer.close(5.0)
        await pool.close()


async def test_a_failed_write_is_retried_until_the_index_takes_it(database_url: str) -> None:
    """The first writes find no tables (as if the database had been restored empty): each fails
    and is tried again; once the schema is back the same batch is written, nothing lost."""
    pool = await open_pool(database_url)
    writer = IndexWriter(pool, max_queue=100, migrate_first=False, retry_base_s=0.05)
    writer.start()
    try:
        job_id = str(uuid.uuid4())
        for entry in _entries(job_id, datetime(2026, 3, 1, tzinfo=UTC)):
            writer.record(entry)
        for _ in range(1000):  # bounded: 20 s
            if writer.counts.write_failures >= 2:
                break
            await asyncio.sleep(0.02)
        assert writer.counts.write_failures >= 2
        assert writer.counts.written == 0
        async with pool.acquire() as connection:
            await migrate(connection)
        assert await writer.flush(20.0)
        assert writer.counts.written == 5
        assert writer.counts.dropped_failed == 0
        status = await IndexReader(pool).job(job_id)
        assert status is not None
        assert len(status.transitions) == 5
    finally:
        await writer.close(5.0)
        await pool.close()


async def test_retries_are_bounded_and_a_full_queue_drops_without_waiting() -> None:
    pool = await open_pool(DEAD_URL)
    writer = IndexWriter(pool, max_queue=3, retry_base_s=0.001)
    try:
        job_id = str(uuid.uuid4())
        entries = _entries(job_id, datetime(2026, 4, 1, tzinfo=UTC))
        for entry in entries:  # not started: nothing drains the queue
            writer.record(entry)
        assert (writer.pending, writer.counts.dropped_full) == (3, 2)
        writer.start()
        assert await writer.flush(30.0)
        assert writer.counts.write_failures == INDEX_WRITE_ATTEMPTS
        assert (writer.counts.written, writer.counts.dropped_failed) == (0, 3)
    finally:
        await writer.close(1.0)
        await pool.close()


async def test_scribe_db_migrates_and_reports(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"SCRIBE_DATABASE_URL": database_url}
    versions = [m.version for m in MIGRATIONS]
    assert await asyncio.to_thread(cli_db.main, ["status"], env) == cli_db.EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"applied": [], "known": versions}
    assert await asyncio.to_thread(cli_db.main, ["migrate"], env) == cli_db.EXIT_OK
    first = json.loads(capsys.readouterr().out)
    assert first == {"applied_now": versions, "applied": versions, "known": versions}
    assert await asyncio.to_thread(cli_db.main, ["migrate"], env) == cli_db.EXIT_OK
    assert json.loads(capsys.readouterr().out)["applied_now"] == []


def test_scribe_db_refuses_bad_settings_and_names_no_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli_db.main(["migrate"], {}) == cli_db.EXIT_USAGE
    assert cli_db.main(["migrate"], {"SCRIBE_DATABASE_URL": "mysql://h/db"}) == cli_db.EXIT_USAGE
    secret_url = "postgresql://postgres:s3cret-pw@127.0.0.1:1/none"
    assert cli_db.main(["migrate", "--database-url", secret_url], {}) == cli_db.EXIT_FAILED
    captured = capsys.readouterr()
    assert "s3cret-pw" not in captured.out + captured.err
    assert "SCRIBE_DATABASE_URL" in captured.err
