"""Helpers shared by the integration tests: unique names, broker clean-up, workers, watchers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from ops.procs import delete_prefix
from ops.sandbox import SandboxConfig
from ops.wav import write_wav as write_wav
from schemas.jobs import JobRequest
from worker.app import WorkerApp
from worker.broker import Publisher, build_message
from worker.constants import Stage
from worker.payload_crypto import PayloadCipher
from worker.providers.factory import build_registry
from worker.settings import Settings
from worker.topology import Names

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/15"
TEST_DELAY_TIERS_MS = "50,150,400,1000"
INTRON_KEY = "sandbox-intron-key"
INVOX_TOKEN = "sandbox-static-token"
INVOX_ALL = {"providers": {"transcriber": "invox", "summarizer": "invox", "note": "invox"}}

SAMPLE_TEMPLATE: dict[str, Any] = {
    "id": "tmpl-1",
    "template_name": "Outpatient note",
    "template_description": "Structured outpatient note",
    "template_language": "en",
    "fields": [
        {
            "id": "f1",
            "name": "Chief complaint",
            "description": "Main reason for the visit",
            "type": "string",
            "value": "",
        },
        {"id": "f2", "name": "Pain score", "description": "0 to 10", "type": "number", "value": 0},
        {
            "id": "f3",
            "name": "Follow-up needed",
            "description": "",
            "type": "boolean",
            "value": False,
        },
        {
            "id": "f4",
            "name": "Side",
            "description": "Affected side",
            "type": "enum",
            "enumerableOptions": ["left", "right", "both"],
            "value": "",
        },
        {"id": "f5", "name": "Medications", "description": "", "type": "array", "value": []},
    ],
}


def default_sandbox_config() -> SandboxConfig:
    """The emulator as the tests use it: the harness's credentials, one poll before ready."""
    return SandboxConfig(
        intron_api_key=INTRON_KEY, invox_static_token=INVOX_TOKEN, polls_before_ready=1
    )


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def worker_env(prefix: str, sandbox_url: str, storage_root: Path, **extra: str) -> dict[str, str]:
    env = {
        "SCRIBE_AMQP_URL": AMQP_URL,
        "SCRIBE_PREFIX": prefix,
        "SCRIBE_INTRON_BASE_URL": sandbox_url,
        "SCRIBE_INTRON_API_KEY": INTRON_KEY,
        "SCRIBE_INVOX_BASE_URL": sandbox_url,
        "SCRIBE_INVOX_ACCESS_TOKEN": INVOX_TOKEN,
        "SCRIBE_DELAY_TIERS_MS": TEST_DELAY_TIERS_MS,
        "SCRIBE_POLL_INTERVAL_MS": "50",
        "SCRIBE_RETRY_BASE_MS": "20",
        "SCRIBE_MAX_ATTEMPTS": "3",
        "SCRIBE_HTTP_TIMEOUT_S": "2",
        "SCRIBE_STORAGE_ROOT": str(storage_root),
        "SCRIBE_URL_ALLOWLIST": "127.0.0.1,localhost",
        "SCRIBE_HTTP_PORT": "0",
        "SCRIBE_SHUTDOWN_GRACE_S": "2",
        "SCRIBE_RATE_LIMITS": "none",  # tests/integration/test_rate_limits.py turns them on
    }
    env.update(extra)
    return env


def make_job(audio_path: Path, **overrides: Any) -> JobRequest:
    data: dict[str, Any] = {
        "jobId": str(uuid.uuid4()),
        "audio": {"path": str(audio_path), "mimeType": "audio/wav"},
    }
    data.update(overrides)
    return JobRequest.model_validate(data)


async def delete_topology(prefix: str) -> None:
    """Remove every queue and exchange a test created under its prefix."""
    tiers = tuple(int(t) for t in TEST_DELAY_TIERS_MS.split(","))
    await delete_prefix(AMQP_URL, prefix, tiers)


@dataclass
class Watcher:
    """Collects events and dead letters of a test run, keyed by jobId."""

    names: Names
    connection: AbstractRobustConnection
    channel: AbstractChannel
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # Opens events sealed under SCRIBE_ENCRYPT_EVENTS (worker/payload_crypto.py).
    cipher: PayloadCipher = field(default_factory=lambda: PayloadCipher(None))

    async def start(self) -> None:
        queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        exchange = await self.channel.get_exchange(self.names.events_exchange)
        await queue.bind(exchange, routing_key="job.#")
        await queue.consume(self._on_event)

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            opened = self.cipher.open(
                message.body,
                message.headers,
                purpose=message.routing_key or "",
                binding=message.correlation_id,
            )
            body = json.loads(opened)
            body["_routingKey"] = message.routing_key
            body["_traceparent"] = (message.headers or {}).get("traceparent")
            self.events.setdefault(str(body.get("jobId")), []).append(body)
            self.arrived.set()

    async def outcome(self, job_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
        """The first job.completed or job.failed event for job_id."""

        async def wait() -> dict[str, Any]:
            while True:
                for event in self.events.get(job_id, []):
                    if event["type"] in ("job.completed", "job.failed"):
                        return event
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(wait(), timeout_s)

    async def publish(
        self,
        body: bytes,
        routing_key: str = "transcribe",
        correlation_id: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        message = build_message(body, correlation_id=correlation_id, headers=headers)
        await Publisher(self.channel).publish(self.names.jobs_exchange, routing_key, message)

    async def submit(self, job: JobRequest, headers: dict[str, Any] | None = None) -> str:
        job_id = str(job.job_id)
        await self.publish(job.to_wire(), correlation_id=job_id, headers=headers)
        return job_id

    async def nack_until_the_broker_gives_up(self, stage: Stage, at_least: int = 2) -> int:
        """Act as a consumer of the stage queue that keeps failing: take each delivery and nack
        it back, until the queue stays empty after at_least nacks (the broker dead-lettered the
        message at its delivery limit). Returns the number of nacks; bounded (200 polls)."""
        queue = await self.channel.get_queue(self.names.stage_queue(stage))
        nacked = 0
        for _ in range(200):
            message = await queue.get(fail=False)
            if message is None:
                if nacked >= at_least:
                    break
                await asyncio.sleep(0.05)
                continue
            await message.nack(requeue=True)
            nacked += 1
        return nacked

    async def dead_letters(
        self, expected: int, timeout_s: float = 20.0
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Take `expected` messages from <prefix>.dead-letters (acking them)."""
        queue = await self.channel.get_queue(self.names.dead_letter_queue)
        found: list[AbstractIncomingMessage] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found) < expected:
            message = await queue.get(fail=False)
            if message is None:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"only {len(found)} of {expected} dead letters arrived")
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            found.append(message)
        return found


@asynccontextmanager
async def watching(
    prefix: str, amqp_url: str = AMQP_URL, cipher: PayloadCipher | None = None
) -> AsyncIterator[Watcher]:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        watcher = Watcher(Names(prefix), connection, channel, cipher=cipher or PayloadCipher(None))
        await watcher.start()
        yield watcher


@asynccontextmanager
async def running_worker(env: dict[str, str]) -> AsyncIterator[WorkerApp]:
    app = WorkerApp(Settings.from_env(env), build_registry)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def sandbox_control(base_url: str, path: str, payload: Any) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base_url}/_sandbox/{path}", json=payload) as response,
    ):
        response.raise_for_status()
        return await response.json()


async def sandbox_stats(base_url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url}/_sandbox/stats") as response,
    ):
        response.raise_for_status()
        result: dict[str, Any] = await response.json()
        return result


async def wait_for_call(base_url: str, endpoint: str, count: int = 1) -> None:
    """Until the emulator has seen `count` calls to `endpoint` (bounded: 20 s)."""
    for _ in range(400):
        if (await sandbox_stats(base_url))["calls"].get(endpoint, 0) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{endpoint} was not called {count} times")
