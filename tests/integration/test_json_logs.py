"""Every line a worker process writes to stderr is one JSON object (issue 13, item 11): its own
structlog lines, and the standard library's through structlog's ProcessorFormatter: aiormq and
aio-pika when the broker closes the connection (tracebacks as a field), faster-whisper's
"Processing audio with duration". None of them carries the job's patient data."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ops.procs import stop
from tests.harness import make_job, watching, worker_env, write_wav
from worker.settings import Settings

pytestmark = [pytest.mark.broker, pytest.mark.slow]

# In the audio's file name and the job's session id: neither may reach a log line.
PATIENT_MARKER = "jane-doe-hiv-positive"
LOCAL = {"transcriber": "local", "summarizer": "local", "note": "local"}


class StderrLines:
    """The child's stderr, line by line, kept whole; wait_for() until a line matches."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        self._stream = process.stderr
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while line := await self._stream.readline():
            self.lines.append(line.decode("utf-8", "replace").rstrip("\n"))
            self._changed.set()

    async def wait_for(self, needle: str, timeout_s: float = 60.0) -> None:
        async def found() -> None:
            while not any(needle in line for line in self.lines):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(found(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"no {needle!r} line in:\n" + "\n".join(self.lines)) from None

    async def closed(self) -> None:
        await asyncio.wait_for(self._task, 30)


def connection_pids(connection_name: str) -> list[str]:
    """The broker's pids of the connections whose connection_name is exactly this one."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    wanted = f'{{"connection_name","{connection_name}"}}'
    return [line.split("\t")[0] for line in listed.stdout.splitlines() if wanted in line]


async def close_connection_named(connection_name: str) -> None:
    """Close the worker's own connection from the broker side; nothing else is touched."""
    pids = await asyncio.to_thread(connection_pids, connection_name)
    assert len(pids) == 1, pids
    await asyncio.to_thread(
        subprocess.run,
        ["rabbitmqctl", "-q", "close_connection", pids[0], "test: forced reconnect"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(record, dict), line
        assert isinstance(record.get("event"), str), line
        assert record.get("level") in {"debug", "info", "warning", "error", "critical"}, line
        records.append(record)
    return records


async def run_local_job(prefix: str, audio: Path) -> str:
    async with watching(prefix) as watcher:
        job = make_job(audio, providers=LOCAL, consultationSessionId=PATIENT_MARKER)
        outcome = await watcher.outcome(await watcher.submit(job), timeout_s=120)
    # Completed, or dead-lettered as a recording without speech: either way it went through
    # faster-whisper.
    return str(outcome["type"])


async def test_every_stderr_line_is_json_across_a_reconnect(
    prefix: str, storage_root: Path
) -> None:
    audio = write_wav(storage_root / f"{PATIENT_MARKER}.wav", seconds=2.0)
    env = worker_env(prefix, "http://127.0.0.1:9", storage_root, SCRIBE_LOG_LEVEL="info")
    connection_name = f"scribe-worker {Settings.from_env(env).prefix}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli_worker",
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    stderr = StderrLines(process)
    try:
        await stderr.wait_for('"worker.started"')
        assert await run_local_job(prefix, audio) in {"job.completed", "job.failed"}
        await stderr.wait_for("Processing audio with duration")

        await close_connection_named(connection_name)
        await stderr.wait_for('"broker.reconnected"', timeout_s=90)
        assert await run_local_job(prefix, audio) in {"job.completed", "job.failed"}
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await stop(process)
        await stderr.closed()
    assert process.returncode == 0, "\n".join(stderr.lines)

    records = parsed(stderr.lines)
    loggers = {record.get("logger") for record in records}
    assert "faster_whisper" in loggers
    # The reconnect was logged by the AMQP libraries themselves, as JSON.
    assert loggers & {"aio_pika.robust_connection", "aiormq.connection", "aio_pika.connection"}
    assert PATIENT_MARKER not in "\n".join(stderr.lines)
    assert "guest:guest" not in "\n".join(stderr.lines)
