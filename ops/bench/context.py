"""What a scenario runs in: its options and result, and one run context that owns the set-up
every scenario used to repeat (a queue prefix, the emulator, worker processes, a connection, an
event collector) and undoes it in reverse order, then deletes the prefix's queues, exchanges and
(if asked) Redis keys, whatever happened in between."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aio_pika
import aiohttp
from aio_pika.abc import AbstractRobustConnection

from ops.bench.common import (
    Collector,
    delete_all,
    delete_redis_keys,
    free_port,
    python_child,
    scribe_worker,
    unique_prefix,
)
from ops.procs import sandbox_process
from ops.wav import write_wav
from schemas.jobs import JobRequest, Providers
from worker.topology import Names

SANDBOX_INTRON_KEY = "bench-intron-key"
SANDBOX_INVOX_TOKEN = "bench-invox-token"  # noqa: S105 - the emulator's, not a credential
TEMPLATE = {
    "id": "bench",
    "template_name": "Bench note",
    "template_language": "en",
    "fields": [{"id": "f1", "name": "Assessment", "type": "string"}],
}
EVENT_KEYS: tuple[str, ...] = ("job.completed", "job.failed")


@dataclass
class Options:
    amqp_url: str
    redis_url: str
    jobs: int | None
    runs: int | None
    prefetch: int | None
    rate: float
    duration_s: float
    timeout_s: float
    polls: int
    latency_ms: int
    rate_limit: int
    rate_window_s: float
    workdir: Path
    warmup_s: float = 1.0
    stage_events: bool = False
    worker_env: dict[str, str] = field(default_factory=dict)
    # index: the PostgreSQL server (a scratch database is made on it) and the jobs recorded.
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    index_jobs: int = 100_000
    # long-recording: the consultation's length in seconds.
    recording_s: float = 2400.0
    # floor: a fourth side, ours with payload encryption on (SCRIBE_PAYLOAD_KEY_ID set).
    encryption: bool = False


@dataclass
class Result:
    scenario: str
    header: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    data: dict[str, Any]
    last_line: str
    notes: list[str] = field(default_factory=list)


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def our_job(audio: Path) -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": str(uuid.uuid4()),
            "audio": {"path": str(audio), "mimeType": "audio/wav"},
            "providers": {"transcriber": "local", "summarizer": "local", "note": "local"},
            "template": TEMPLATE,
            "noteLanguage": "en",
        }
    )


def vendor_job(audio: Path, transcriber: Literal["intron", "invox"]) -> JobRequest:
    """A job for the real worker against the emulator: vendor providers, no template."""
    providers = Providers(transcriber=transcriber, summarizer="invox", note="invox")
    return our_job(audio).model_copy(update={"providers": providers, "template": None})


def sandbox_flags(**extra: str) -> list[str]:
    flags = ["--intron-api-key", SANDBOX_INTRON_KEY, "--invox-static-token", SANDBOX_INVOX_TOKEN]
    for name, value in extra.items():
        flags += [f"--{name.replace('_', '-')}", value]
    return flags


async def sample_every(
    interval_s: float, stop: asyncio.Event, sample: Callable[[], Awaitable[None]]
) -> None:
    while not stop.is_set():
        with suppress(Exception):  # a sample that fails (broker restarting) is just skipped
            await sample()
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


class BenchRun:
    """One run under one prefix. Each start method enters what it starts into the run's exit
    stack, so clean-up is the reverse of set-up: the connection closes before the workers stop,
    the workers stop before the emulator does."""

    def __init__(self, options: Options, prefix: str, stack: AsyncExitStack) -> None:
        self.options = options
        self.prefix = prefix
        self.names = Names(prefix)
        self.audio = write_wav(options.workdir / "bench.wav", seconds=0.25)
        self.base_url = ""
        self._stack = stack
        self._session: aiohttp.ClientSession | None = None
        self._connection: AbstractRobustConnection | None = None
        self._logs = 0

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("no emulator started in this run")
        return self._session

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("no connection opened in this run")
        return self._connection

    def _log(self) -> Path:
        self._logs += 1
        return self.options.workdir / f"{self.prefix}-{self._logs}.log"

    async def emulator(self, *flags: str) -> str:
        """The vendor emulator (scribe-sandbox) and an HTTP session to read its stats."""
        self.base_url = await self._stack.enter_async_context(sandbox_process(*flags))
        self._session = await self._stack.enter_async_context(aiohttp.ClientSession())
        return self.base_url

    def vendor_env(self, **extra: str) -> dict[str, str]:
        """The real worker's settings against this run's emulator and prefix."""
        env = {
            "SCRIBE_AMQP_URL": self.options.amqp_url,
            "SCRIBE_PREFIX": self.prefix,
            "SCRIBE_INTRON_BASE_URL": self.base_url,
            "SCRIBE_INTRON_API_KEY": SANDBOX_INTRON_KEY,
            "SCRIBE_INVOX_BASE_URL": self.base_url,
            "SCRIBE_INVOX_ACCESS_TOKEN": SANDBOX_INVOX_TOKEN,
            "SCRIBE_URL_ALLOWLIST": "127.0.0.1",
            "SCRIBE_STORAGE_ROOT": str(self.options.workdir),
            "SCRIBE_LOG_LEVEL": "warning",
            "SCRIBE_SHUTDOWN_GRACE_S": "5",
        }
        env.update(extra)
        return env

    async def worker(
        self, env: Mapping[str, str], http_port: int | None = None
    ) -> asyncio.subprocess.Process:
        """The real scribe-worker, ready once its /readyz answers."""
        port = http_port or free_port()
        return await self._stack.enter_async_context(scribe_worker(env, port, self._log()))

    async def child(
        self, module: str, args: Sequence[str], env: Mapping[str, str]
    ) -> asyncio.subprocess.Process:
        """`python -m module args` that prints a JSON ready line (a benchmark pipeline)."""
        return await self._stack.enter_async_context(python_child(module, args, env, self._log()))

    async def connect(self) -> AbstractRobustConnection:
        self._connection = await aio_pika.connect_robust(self.options.amqp_url)
        self._stack.push_async_callback(self._connection.close)
        return self._connection

    async def collect(
        self,
        keys: tuple[str, ...] = EVENT_KEYS,
        keep_bodies: bool = False,
        completed_queue: str | None = None,
    ) -> Collector:
        """Events of this prefix as they arrive (over connect()'s connection)."""
        collector = Collector(
            self.connection, self.prefix, keys, keep_bodies=keep_bodies,
            completed_queue=completed_queue,
        )  # fmt: skip
        await collector.start()
        return collector


@asynccontextmanager
async def bench_run(
    options: Options, scenario: str, *, redis_keys: bool = False
) -> AsyncIterator[BenchRun]:
    """A BenchRun under a fresh `bench-<scenario>-<random>` prefix; on the way out everything it
    started is stopped, then the prefix's queues, exchanges and (redis_keys) Redis keys go."""
    prefix = unique_prefix(scenario)
    try:
        async with AsyncExitStack() as stack:
            yield BenchRun(options, prefix, stack)
    finally:
        await delete_all(options.amqp_url, prefix)
        if redis_keys:
            await delete_redis_keys(options.redis_url, prefix)
