"""What every scenario needs: child processes, /proc readings, broker and metric sampling,
percentiles, the event collector and clean-up."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from ops.procs import ready_line, stop
from worker.constants import STAGES
from worker.topology import Names

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def unique_prefix(scenario: str) -> str:
    return f"bench-{scenario}-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def broker_pid() -> int | None:
    """The local RabbitMQ node's Erlang VM (beam.smp), if it runs on this machine."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
    return None


def rss_mb(pid: int) -> float:
    """Resident set size in MiB (VmRSS of /proc/<pid>/status)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@asynccontextmanager
async def logged_child(
    argv: Sequence[str], env: Mapping[str, str], log_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A subprocess with stdout piped and stderr (its log) in log_path; SIGTERM (then SIGKILL)
    when the block ends."""
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
        try:
            yield process
        finally:
            await stop(process)


@asynccontextmanager
async def python_child(
    module: str,
    args: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    timeout_s: float = 60.0,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m module args` that prints a JSON ready line once it is ready."""
    async with logged_child([sys.executable, "-m", module, *args], env, log_path) as process:
        await ready_line(process, timeout_s)
        yield process


@asynccontextmanager
async def scribe_worker(
    env: Mapping[str, str], http_port: int, log_path: Path, timeout_s: float = 60.0
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The real scribe-worker (vendor providers); ready once /readyz answers 200."""
    argv = [sys.executable, "-m", "worker.cli_worker"]
    async with logged_child(argv, {**env, "SCRIBE_HTTP_PORT": str(http_port)}, log_path) as p:
        await wait_ready(http_port, p, timeout_s)
        yield p


async def wait_ready(port: int, process: asyncio.subprocess.Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"the worker exited with {process.returncode}")
            with suppress(aiohttp.ClientError, OSError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise TimeoutError("the worker did not become ready")


async def metric_value(
    session: aiohttp.ClientSession, port: int, name: str, labels: str = ""
) -> float:
    """One sample of a Prometheus metric from a worker's /metrics (0 when absent)."""
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


async def sandbox_stats(session: aiohttp.ClientSession, base_url: str) -> dict[str, Any]:
    async with session.get(f"{base_url}/_sandbox/stats") as response:
        stats: dict[str, Any] = await response.json()
    return stats


async def sandbox_config(
    session: aiohttp.ClientSession, base_url: str, knobs: Mapping[str, Any]
) -> None:
    async with session.post(f"{base_url}/_sandbox/config", json=dict(knobs)) as response:
        if response.status != 200:
            raise RuntimeError(f"emulator refused {dict(knobs)}: {await response.text()}")


def responses_of(stats: Mapping[str, Any], endpoint: str) -> dict[str, int]:
    return {k: int(v) for k, v in stats.get("responses", {}).get(endpoint, {}).items()}


def in_flight_of(stats: Mapping[str, Any], endpoint: str) -> int:
    """Requests the emulator has received but not answered yet."""
    calls = int(stats.get("calls", {}).get(endpoint, 0))
    return calls - sum(responses_of(stats, endpoint).values())


async def list_queues(prefix: str) -> dict[str, tuple[int, int]]:
    """name -> (messages_ready, messages_unacknowledged) for the queues under prefix."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_queues", "--no-table-headers",
        "name", "messages_ready", "messages_unacknowledged",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await process.communicate()
    found: dict[str, tuple[int, int]] = {}
    for line in out.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(prefix + "."):
            with suppress(ValueError):
                found[parts[0]] = (int(parts[1]), int(parts[2]))
    return found


async def queue_depths(
    connection: AbstractRobustConnection, queues: Iterable[str]
) -> dict[str, int]:
    """message_count (ready messages) of each queue, by passive declare."""
    depths: dict[str, int] = {}
    channel = await connection.channel()
    try:
        for name in queues:
            declared = await channel.declare_queue(name, passive=True)
            depths[name] = int(declared.declaration_result.message_count or 0)
    finally:
        await channel.close()
    return depths


async def delete_all(amqp_url: str, prefix: str, queues: Iterable[str] = ()) -> None:
    """Delete the queues under prefix that exist (whatever tiers a scenario used) and the four
    exchanges. Tolerates a broker that is briefly away."""
    names = Names(prefix)
    present = set(await list_queues(prefix))
    present |= {names.stage_queue(stage) for stage in STAGES} | set(queues)
    for attempt in range(5):
        try:
            connection = await aio_pika.connect(amqp_url)
            async with connection:
                for queue in sorted(present):
                    channel = await connection.channel()
                    await channel.queue_delete(queue)
                for exchange in names.all_exchanges():
                    channel = await connection.channel()
                    await channel.exchange_delete(exchange)
            return
        except (OSError, aio_pika.exceptions.AMQPError):
            if attempt == 4:
                raise
            await asyncio.sleep(2)


async def delete_redis_keys(redis_url: str, prefix: str) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


@dataclass
class Collector:
    """Consumes `<prefix>.events` (an exclusive auto-delete queue, no acks) and keeps, per jobId,
    the wall time each event arrived and its body."""

    connection: AbstractRobustConnection
    prefix: str
    keys: tuple[str, ...] = ("job.completed", "job.failed")
    completed: dict[str, float] = field(default_factory=dict)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage_times: dict[str, dict[str, float]] = field(default_factory=dict)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    keep_bodies: bool = False
    # The raw floor has no events exchange: it sends job.completed to this plain queue.
    completed_queue: str | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=1000)
        if self.completed_queue is not None:
            plain = await channel.declare_queue(self.completed_queue, passive=True)
            await plain.consume(self._on_completed, no_ack=True)
            return
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        exchange = await channel.get_exchange(Names(self.prefix).events_exchange)
        for key in self.keys:
            await queue.bind(exchange, routing_key=key)
        await queue.consume(self._on_event, no_ack=True)

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        now = time.time()
        key = message.routing_key or ""
        job_id = str(message.correlation_id)
        if key == "job.completed":
            self._completed(job_id, message.body, now)
        elif key == "job.failed":
            self.failed[job_id] = json.loads(message.body)
        elif key.startswith("job.stage."):
            body = json.loads(message.body)
            stamp = _epoch(str(body["occurredAt"]))
            self.stage_times.setdefault(job_id, {})[key.rsplit(".", 1)[1]] = stamp
        self._changed.set()

    async def _on_completed(self, message: AbstractIncomingMessage) -> None:
        self._completed(str(message.correlation_id), message.body, time.time())
        self._changed.set()

    def _completed(self, job_id: str, body: bytes, now: float) -> None:
        self.completed.setdefault(job_id, now)
        if self.keep_bodies:
            self.bodies[job_id] = json.loads(body)

    def settled(self) -> int:
        return len(self.completed) + len(self.failed)

    async def wait_for(self, count: int, deadline: float) -> bool:
        """Until `count` jobs settled or the monotonic deadline passes; True if all settled."""
        while self.settled() < count:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
        return True


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def publish_all(
    connection: AbstractRobustConnection,
    exchange_name: str,
    messages: Sequence[tuple[str, bytes, str]],
    window: int = 200,
) -> None:
    """Publish (routing key, body, correlation id) with confirms, `window` outstanding;
    exchange_name "" is the default exchange (routing key = queue name)."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        exchange = (
            await channel.get_exchange(exchange_name, ensure=False)
            if exchange_name
            else channel.default_exchange
        )
        for start in range(0, len(messages), window):
            batch = messages[start : start + window]
            await asyncio.gather(
                *(
                    exchange.publish(_message(body, correlation_id), routing_key=key)
                    for key, body, correlation_id in batch
                )
            )
    finally:
        await channel.close()


def _message(body: bytes, correlation_id: str) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        correlation_id=correlation_id,
    )


async def publish_at_rate(
    connection: AbstractRobustConnection,
    exchange_name: str,
    messages: Sequence[tuple[str, bytes, str]],
    rate_per_s: float,
    sent_at: dict[str, float],
) -> None:
    """Publish one message every 1/rate seconds (confirms awaited in the background), recording
    the wall time of each publish by correlation id."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(exchange_name, ensure=False)
        started = time.monotonic()
        pending: set[asyncio.Future[Any]] = set()
        for index, (key, body, correlation_id) in enumerate(messages):
            delay = started + index / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[correlation_id] = time.time()
            task = asyncio.ensure_future(
                exchange.publish(_message(body, correlation_id), routing_key=key)
            )
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
    finally:
        await channel.close()
