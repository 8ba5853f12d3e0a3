"""scribe-chaos: N jobs through several worker processes while workers are SIGKILLed and the
RabbitMQ node restarts, against the emulator injecting 5xx, 429, timeouts and malformed bodies.
Then every jobId is accounted for: completed exactly once, or dead-lettered with an errorType.

Bounded in jobs and time, loopback only. The last line is
`jobs=N completed=C dead_lettered=D lost=L duplicated=U`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
import wave
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from ops.procs import delete_prefix, sandbox_process, stop, worker_argv
from schemas.jobs import JobRequest
from worker import constants as c
from worker.broker import Publisher, build_message
from worker.settings import Settings
from worker.topology import Names, declare_events_exchange, declare_topology

DELAY_TIERS_MS = "100,300,1000,3000"
INTRON_KEY = "chaos-intron-key"
INVOX_TOKEN = "chaos-invox-token"  # noqa: S105 - the emulator's, not a real credential
TEMPLATE = {
    "id": "chaos",
    "template_name": "Chaos note",
    "template_description": "",
    "template_language": "en",
    "fields": [
        {"id": "f1", "name": "Assessment", "description": "", "type": "string", "value": ""}
    ],
}


@dataclass
class Options:
    jobs: int
    workers: int
    kill_interval_s: float
    broker_restarts: int
    fault_rate: float
    timeout_s: float
    amqp_url: str
    redis_url: str
    seed: int


@dataclass
class Ledger:
    """What the chaos run observed, per jobId."""

    submitted: set[str] = field(default_factory=set)
    # jobId -> (event type, eventId, message_id) per publish the observer received
    outcomes: dict[str, list[tuple[str, str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    dead: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    kills: int = 0
    restarts: int = 0
    revived: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def settled(self) -> int:
        return sum(1 for job in self.submitted if self.outcomes.get(job))


def fault_rules(rate: float) -> list[dict[str, Any]]:
    share = rate / 4
    endpoints = ["intron.upload", "intron.status", "invox.presign", "invox.transcription",
                 "invox.summary", "invox.note"]  # fmt: skip
    rules: list[dict[str, Any]] = []
    for endpoint in endpoints:
        rules += [
            {"endpoint": endpoint, "kind": "http_error", "status": 503, "probability": share},
            {"endpoint": endpoint, "kind": "rate_limit", "retryAfterS": 1, "probability": share},
            {"endpoint": endpoint, "kind": "timeout", "delayS": 3, "probability": share},
            {"endpoint": endpoint, "kind": "malformed", "probability": share},
        ]
    return rules


def worker_env(options: Options, prefix: str, base_url: str, root: Path) -> dict[str, str]:
    return {
        "SCRIBE_AMQP_URL": options.amqp_url,
        "SCRIBE_PREFIX": prefix,
        "SCRIBE_REDIS_URL": options.redis_url,
        "SCRIBE_INTRON_BASE_URL": base_url,
        "SCRIBE_INTRON_API_KEY": INTRON_KEY,
        "SCRIBE_INVOX_BASE_URL": base_url,
        "SCRIBE_INVOX_ACCESS_TOKEN": INVOX_TOKEN,
        "SCRIBE_URL_ALLOWLIST": "127.0.0.1",
        "SCRIBE_STORAGE_ROOT": str(root),
        "SCRIBE_DELAY_TIERS_MS": DELAY_TIERS_MS,
        "SCRIBE_POLL_INTERVAL_MS": "300",
        "SCRIBE_RETRY_BASE_MS": "100",
        "SCRIBE_MAX_ATTEMPTS": "6",
        "SCRIBE_HTTP_TIMEOUT_S": "2",
        "SCRIBE_STAGE_CLAIM_TTL_S": "10",
        "SCRIBE_RATE_LIMITS": "none",
        "SCRIBE_HTTP_PORT": "0",
        "SCRIBE_LOG_LEVEL": "warning",
    }


def make_jobs(count: int, audio: Path, rng: random.Random) -> list[JobRequest]:
    jobs = []
    for index in range(count):
        transcriber = "intron" if index % 2 == 0 else "invox"
        data: dict[str, Any] = {
            "jobId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "audio": {"path": str(audio), "mimeType": "audio/wav"},
            "providers": {"transcriber": transcriber, "summarizer": "invox", "note": "invox"},
        }
        if index % 3 != 0:
            data["template"] = TEMPLATE
        jobs.append(JobRequest.model_validate(data))
    return jobs


def write_audio(root: Path) -> Path:
    path = root / "chaos.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 8000)
    return path


class Observer:
    """Collects outcome events into a durable quorum queue, so a broker restart loses none."""

    def __init__(self, connection: AbstractRobustConnection, names: Names, ledger: Ledger) -> None:
        self._connection = connection
        self._names = names
        self._ledger = ledger
        self.queue_name = f"{names.prefix}.chaos-outcomes"

    async def start(self) -> None:
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=100)
        queue = await channel.declare_queue(
            self.queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        events = await declare_events_exchange(channel, self._names)
        for key in (c.EVENT_COMPLETED, c.EVENT_FAILED):
            await queue.bind(events, routing_key=key)
        await queue.consume(self._on_event)

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            event = json.loads(message.body)
            publish = (event["type"], event["eventId"], str(message.message_id))
            if publish not in self._ledger.outcomes[event["jobId"]]:  # not a broker redelivery
                self._ledger.outcomes[event["jobId"]].append(publish)
            self._ledger.changed.set()


async def submit_all(connection: AbstractRobustConnection, names: Names, jobs: list[JobRequest],
                     ledger: Ledger) -> None:  # fmt: skip
    publisher = await Publisher.open(connection)
    for job in jobs:
        message = build_message(job.to_wire(), correlation_id=str(job.job_id))
        await publisher.publish(names.jobs_exchange, "transcribe", message)
        ledger.submitted.add(str(job.job_id))
    await publisher.close()


async def rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    if await process.wait() != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed")


async def restart_broker(ledger: Ledger) -> None:
    print("chaos: restarting the RabbitMQ node (stop_app / start_app)", file=sys.stderr)
    try:
        await rabbitmqctl("stop_app")
        await asyncio.sleep(2)
    finally:
        await rabbitmqctl("start_app")
        await rabbitmqctl("await_startup")
    ledger.restarts += 1


class Workers:
    def __init__(self, env: dict[str, str], count: int) -> None:
        self._env = env
        self._count = count
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        for _ in range(self._count):
            self.processes.append(await self._spawn())

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *worker_argv(),
            env={**os.environ, **self._env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def kill_one(self, rng: random.Random) -> None:
        index = rng.randrange(len(self.processes))
        victim = self.processes[index]
        if victim.returncode is None:
            victim.kill()  # SIGKILL: no graceful anything
        await victim.wait()
        self.processes[index] = await self._spawn()

    async def revive(self) -> int:
        """Restart workers that exited by themselves (a supervisor's job); returns how many."""
        revived = 0
        for index, process in enumerate(self.processes):
            if process.returncode is not None:
                self.processes[index] = await self._spawn()
                revived += 1
        return revived

    async def stop(self) -> None:
        await asyncio.gather(*(stop(process) for process in self.processes))


async def chaos_loop(options: Options, workers: Workers, ledger: Ledger, rng: random.Random,
                     deadline: float) -> None:  # fmt: skip
    """Kill a worker every ~kill_interval_s; restart the broker at evenly spread progress points."""
    restart_at = [
        (i + 1) * len(ledger.submitted) // (options.broker_restarts + 1)
        for i in range(options.broker_restarts)
    ]
    next_kill = time.monotonic() + options.kill_interval_s * rng.uniform(0.5, 1.5)
    while ledger.settled() < len(ledger.submitted) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        ledger.revived += await workers.revive()
        if restart_at and ledger.settled() >= restart_at[0]:
            restart_at.pop(0)
            await restart_broker(ledger)
        if options.kill_interval_s > 0 and time.monotonic() >= next_kill:
            await workers.kill_one(rng)
            ledger.kills += 1
            next_kill = time.monotonic() + options.kill_interval_s * rng.uniform(0.5, 1.5)
    for _ in restart_at:  # too few jobs settled to reach the planned points: restart anyway
        await restart_broker(ledger)


async def wait_settled(ledger: Ledger, deadline: float) -> None:
    while ledger.settled() < len(ledger.submitted):
        ledger.changed.clear()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            await asyncio.wait_for(ledger.changed.wait(), remaining)
        except TimeoutError:
            return


async def read_dead_letters(connection: AbstractRobustConnection, names: Names,
                            ledger: Ledger) -> None:  # fmt: skip
    channel = await connection.channel()
    queue = await channel.get_queue(names.dead_letter_queue)
    while (message := await queue.get(fail=False, no_ack=True)) is not None:
        job_id = str((message.headers or {}).get(c.HEADER_JOB_ID) or message.correlation_id)
        ledger.dead[job_id].append(str((message.headers or {}).get(c.HEADER_ERROR_TYPE)))
    await channel.close()


async def vendor_calls(base_url: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url}/_sandbox/stats") as response,
    ):
        stats = await response.json()
    return int(sum(stats["calls"].values()))


def report(ledger: Ledger, calls: int, elapsed_s: float) -> tuple[str, bool]:
    completed = dead = lost = duplicated = resent = 0
    errors: Counter[str] = Counter()
    for job in sorted(ledger.submitted):
        outcomes = ledger.outcomes.get(job, [])
        kinds = {kind for kind, _, _ in outcomes}
        distinct = {event_id for _, event_id, _ in outcomes}
        if not outcomes:
            lost += 1
            continue
        if len(outcomes) > 1:
            duplicated += 1
            resent += len(distinct) == 1
        if kinds == {"job.completed"}:
            completed += 1
        elif kinds == {"job.failed"}:
            dead += 1
            errors.update(ledger.dead.get(job, ["(no dead letter)"]))
        else:
            completed += 1  # both outcomes: counted in duplicated above
    jobs = len(ledger.submitted)
    lines = [
        f"chaos: {elapsed_s:.0f} s, {ledger.kills} worker kills, "
        f"{ledger.restarts} broker restarts, "
        f"{ledger.revived} workers restarted after exiting by themselves",
        f"chaos: vendor calls per job {calls / max(jobs, 1):.2f}",
        f"chaos: dead letters by errorType {dict(errors)}",
        f"chaos: duplicated outcomes that were the same event re-sent (same eventId): {resent}",
        f"lost={lost}",
        f"duplicated={duplicated}",
        f"completed={completed}",
        f"dead-lettered={dead}",
        f"jobs={jobs} completed={completed} dead_lettered={dead} lost={lost} "
        f"duplicated={duplicated}",
    ]
    return "\n".join(lines), lost == 0 and duplicated == 0


async def run(options: Options) -> int:
    rng = random.Random(options.seed)
    prefix = f"chaos-{uuid.uuid4().hex[:8]}"
    names = Names(prefix)
    root = Path(tempfile.mkdtemp(prefix="scribe-chaos-"))
    jobs = make_jobs(options.jobs, write_audio(root), rng)
    ledger = Ledger()
    settings = Settings.from_env({"SCRIBE_PREFIX": prefix, "SCRIBE_AMQP_URL": options.amqp_url,
                                  "SCRIBE_DELAY_TIERS_MS": DELAY_TIERS_MS})  # fmt: skip
    started = time.monotonic()
    connection = await aio_pika.connect_robust(options.amqp_url)
    observer = Observer(connection, names, ledger)
    flags = ("--intron-api-key", INTRON_KEY, "--invox-static-token", INVOX_TOKEN,
             "--polls-before-ready", "1", "--intron-upload-rate", "0",
             "--intron-status-rate", "0", "--seed", str(options.seed))  # fmt: skip
    try:
        async with sandbox_process(*flags) as base_url:
            setup = await connection.channel()
            await declare_topology(setup, names, settings.retry)
            await observer.start()
            async with aiohttp.ClientSession() as session:
                rules = fault_rules(options.fault_rate)
                await session.post(f"{base_url}/_sandbox/faults", json=rules)
            workers = Workers(worker_env(options, prefix, base_url, root), options.workers)
            await workers.start()
            try:
                await submit_all(connection, names, jobs, ledger)
                await chaos_loop(options, workers, ledger, rng, started + options.timeout_s)
                await wait_settled(ledger, started + options.timeout_s)
                await asyncio.sleep(2)  # late duplicates, if any, arrive now
            finally:
                await workers.stop()
            calls = await vendor_calls(base_url)
            await read_dead_letters(connection, names, ledger)
    finally:
        await connection.close()
        await delete_prefix(options.amqp_url, prefix, settings.retry.delay_tiers_ms,
                            (observer.queue_name,))  # fmt: skip
        client = aioredis.Redis.from_url(options.redis_url)
        keys = [key async for key in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        shutil.rmtree(root, ignore_errors=True)
    text, clean = report(ledger, calls, time.monotonic() - started)
    print(text)
    return 0 if clean else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scribe-chaos", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-interval-s", type=float, default=5.0, help="0: never kill")
    parser.add_argument("--broker-restarts", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=0.1, help="share of vendor calls")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--amqp-url", default=c.DEFAULT_AMQP_URL)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= 10_000 or not 1 <= args.workers <= 16:
        parser.error("--jobs must be 1..10000 and --workers 1..16")
    if not 0 <= args.fault_rate <= 0.8:
        parser.error("--fault-rate must be within 0..0.8")
    options = Options(
        jobs=args.jobs,
        workers=args.workers,
        kill_interval_s=args.kill_interval_s,
        broker_restarts=args.broker_restarts,
        fault_rate=args.fault_rate,
        timeout_s=args.timeout_s,
        amqp_url=args.amqp_url,
        redis_url=args.redis_url,
        seed=args.seed,
    )
    return asyncio.run(run(options))


if __name__ == "__main__":
    sys.exit(main())
