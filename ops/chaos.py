"""scribe-chaos: N jobs through several worker processes while workers are SIGKILLed and the
RabbitMQ node restarts, against the emulator injecting 5xx, 429, timeouts and malformed bodies.
Then every jobId is accounted for: completed exactly once, or dead-lettered with an errorType.

Every job has a recording of its own, so the emulator's paid submissions per recording are the
job's: a job billed for two transcriptions is double billed. After the last outcome the run waits
until every queue of the prefix is empty (the drain), stops the workers, counts every dead letter
that appeared up to then, and deletes the topology, failing loudly if anything is left.

Bounded in jobs and time, loopback only. The last line is
`jobs=N completed=C dead_lettered=D lost=L duplicated=U resent=R double_billed=B`: duplicated
counts jobs with two different outcomes (must be 0), resent the identical re-sends of an outcome
event (same eventId; at-least-once), double_billed the jobs billed for two transcriptions (must
be 0 for Invox; for Intron no more than the worker kills that landed between the two uploads).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import DeliveryError
from redis.exceptions import RedisError

from ops.procs import delete_prefix, sandbox_process, stop, worker_argv
from ops.rabbit_node import free_port, private_node
from ops.wav import write_wav
from schemas.jobs import JobRequest
from worker import constants as c
from worker.broker import Publisher, build_message
from worker.settings import Settings
from worker.topology import Names, declare_events_exchange, declare_topology

DELAY_TIERS_MS = "100,300,1000,3000"
HTTP_TIMEOUT_S = "2"
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
    intron_redelivery: str = c.INTRON_REDELIVERY_POLICIES[0]
    # The node rabbitmqctl restarts and lists (-n NAME): the run's private node by default.
    rabbit_node: str | None = None
    # Each worker's SCRIBE_AMQP_URL, worker i taking worker_urls[i % len]; amqp_url if empty.
    worker_urls: tuple[str, ...] = ()
    # Where the topology is declared (a quorum queue's leader is the declaring client's node).
    topology_url: str = ""
    # A worker is killed only once it has run this long (0: any worker).
    worker_min_age_s: float = 0.0


@dataclass(frozen=True)
class DeadLetter:
    job_id: str
    routing_key: str
    error_type: str
    at_s: float  # time.time() when the harness received it


@dataclass
class Ledger:
    """What the chaos run observed, per jobId."""

    submitted: set[str] = field(default_factory=set)
    # jobId -> (event type, eventId, message_id) per publish the observer received
    outcomes: dict[str, list[tuple[str, str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    dead: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # Every dead letter that reached <prefix>.dead-letters, consumed from start to end.
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # jobId -> the routing key of its last event (job.stage.<stage>, job.completed, job.failed)
    last_event: dict[str, str] = field(default_factory=dict)
    # jobId -> sha256 of its recording (the emulator counts paid submissions per recording)
    audio: dict[str, str] = field(default_factory=dict)
    kill_times: list[float] = field(default_factory=list)  # time.time() of each SIGKILL
    kills: int = 0
    restarts: int = 0
    revived: int = 0
    nacked_submissions: int = 0  # job publishes the broker nacked (published again)
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
    """The environment every worker shares; worker_envs adds each one's broker URL."""
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
        "SCRIBE_HTTP_TIMEOUT_S": HTTP_TIMEOUT_S,
        "SCRIBE_STAGE_CLAIM_TTL_S": "10",
        "SCRIBE_RATE_LIMITS": "none",
        "SCRIBE_HTTP_PORT": "0",
        "SCRIBE_LOG_LEVEL": "warning",
        "SCRIBE_INTRON_REDELIVERY": options.intron_redelivery,
    }


def worker_envs(options: Options, shared: dict[str, str]) -> list[dict[str, str]]:
    urls = options.worker_urls or (options.amqp_url,)
    return [{**shared, "SCRIBE_AMQP_URL": url} for url in urls]


def make_jobs(count: int, root: Path, rng: random.Random) -> list[JobRequest]:
    jobs = []
    for index in range(count):
        transcriber = "intron" if index % 2 == 0 else "invox"
        job_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        audio = write_audio(root, job_id)
        data: dict[str, Any] = {
            "jobId": str(job_id),
            "audio": {"path": str(audio), "mimeType": "audio/wav"},
            "providers": {"transcriber": transcriber, "summarizer": "invox", "note": "invox"},
        }
        if index % 3 != 0:
            data["template"] = TEMPLATE
        jobs.append(JobRequest.model_validate(data))
    return jobs


def write_audio(root: Path, job_id: uuid.UUID) -> Path:
    """One second of near silence whose first samples are the jobId: a recording of its own."""
    return write_wav(root / f"{job_id}.wav", seconds=1.0, rate=8000, lead=job_id.bytes)


def audio_digest(job: JobRequest) -> str:
    assert job.audio.path is not None
    return hashlib.sha256(Path(job.audio.path).read_bytes()).hexdigest()


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
        # Every event: the stage events tell a lost job's last known stage.
        await queue.bind(events, routing_key=c.EVENTS_ALL_BINDING)
        await queue.consume(self._on_event)
        dead = await channel.declare_queue(self._names.dead_letter_queue, passive=True)
        await dead.consume(self._on_dead_letter)

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            event = json.loads(message.body)
            self._ledger.last_event[event["jobId"]] = str(message.routing_key)
            if event["type"] not in (c.EVENT_COMPLETED, c.EVENT_FAILED):
                return
            publish = (event["type"], event["eventId"], str(message.message_id))
            if publish not in self._ledger.outcomes[event["jobId"]]:  # not a broker redelivery
                self._ledger.outcomes[event["jobId"]].append(publish)
            self._ledger.changed.set()

    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """Counted as it arrives, until the end: one made at shutdown is counted too."""
        async with message.process():
            headers = message.headers or {}
            job_id = str(headers.get(c.HEADER_JOB_ID) or message.correlation_id)
            error_type = str(headers.get(c.HEADER_ERROR_TYPE) or message.routing_key)
            letter = DeadLetter(job_id, str(message.routing_key), error_type, time.time())
            self._ledger.dead_letters.append(letter)
            self._ledger.dead[job_id].append(error_type)


SUBMIT_NACK_RETRY_S = 60.0


async def submit_all(connection: AbstractRobustConnection, names: Names, jobs: list[JobRequest],
                     ledger: Ledger) -> None:  # fmt: skip
    """Each job published and confirmed; a nacked one (a quorum queue without a leader, its
    node just killed) is published again a second later on a new channel."""
    publisher = await Publisher.open(connection)
    for job in jobs:
        deadline = time.monotonic() + SUBMIT_NACK_RETRY_S
        while True:
            message = build_message(job.to_wire(), correlation_id=str(job.job_id))
            try:
                await publisher.publish(names.jobs_exchange, "transcribe", message)
                break
            except DeliveryError:
                if time.monotonic() > deadline:
                    raise
                ledger.nacked_submissions += 1
                await asyncio.sleep(1.0)
                # On RabbitMQ 3.10 a channel whose quorum queue lost its leader kept nacking
                # for over a minute: the next try gets a channel of its own.
                await publisher.close()
                publisher = await Publisher.open(connection)
        ledger.submitted.add(str(job.job_id))
    await publisher.close()


def ctl(node: str | None, *args: str) -> list[str]:
    """rabbitmqctl's argv for the run's node; the machine's own node only if none is named."""
    return ["rabbitmqctl", *(("-n", node) if node else ()), *args]


async def rabbitmqctl(node: str | None, *args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *ctl(node, *args), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    if await process.wait() != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed")


async def restart_broker(ledger: Ledger, node: str | None) -> None:
    print("chaos: restarting the RabbitMQ node (stop_app / start_app)", file=sys.stderr)
    try:
        await rabbitmqctl(node, "stop_app")
        await asyncio.sleep(2)
    finally:
        await rabbitmqctl(node, "start_app")
        await rabbitmqctl(node, "await_startup")
    ledger.restarts += 1


class Workers:
    """Worker processes; the one in slot i always gets envs[i % len(envs)], a replacement too."""

    def __init__(self, envs: list[dict[str, str]], count: int) -> None:
        self._envs = envs
        self._count = count
        self.processes: list[asyncio.subprocess.Process] = []
        self._born: list[float] = []  # time.monotonic() each slot's process was started
        self._ports: dict[int, int] = {}  # slot -> the HTTP port of its /readyz

    async def start(self) -> None:
        for index in range(self._count):
            self.processes.append(await self._spawn(index))
            self._born.append(time.monotonic())

    async def _replace(self, index: int) -> None:
        self.processes[index] = await self._spawn(index)
        self._born[index] = time.monotonic()

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        self._ports[index] = free_port()
        env = {**self._envs[index % len(self._envs)], "SCRIBE_HTTP_PORT": str(self._ports[index])}
        return await asyncio.create_subprocess_exec(
            *worker_argv(),
            env={**os.environ, **env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def kill_one(self, rng: random.Random, ledger: Ledger, min_age_s: float = 0.0) -> bool:
        """SIGKILL a random worker; with min_age_s, only one started that long ago and ready
        (on a loaded machine a worker takes tens of seconds to start: a kill every few seconds
        would only ever kill starters). False if there is none."""
        now = time.monotonic()
        old = [i for i, born in enumerate(self._born) if now - born >= min_age_s]
        if min_age_s > 0:
            old = [i for i in old if await self.ready(i)]
        if not old:
            return False
        index = rng.choice(old)
        victim = self.processes[index]
        if victim.returncode is None:
            ledger.kill_times.append(time.time())
            victim.kill()  # SIGKILL: no graceful anything
        await victim.wait()
        await self._replace(index)
        return True

    async def ready(self, index: int) -> bool:
        """The slot's worker answers /readyz with 200 (connected, every consumer attached)."""
        url = f"http://127.0.0.1:{self._ports[index]}/readyz"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(url) as response,
            ):
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def revive(self) -> int:
        """Restart workers that exited by themselves (a supervisor's job); returns how many."""
        revived = 0
        for index, process in enumerate(self.processes):
            if process.returncode is not None:
                await self._replace(index)
                revived += 1
        return revived

    async def stop(self) -> None:
        await asyncio.gather(*(stop(process) for process in self.processes))


async def chaos_loop(options: Options, workers: Workers, ledger: Ledger, rng: random.Random,
                     deadline: float) -> None:  # fmt: skip
    """Kill a worker every ~kill_interval_s; restart the broker at evenly spread progress points."""
    restart_at = [
        (i + 1) * options.jobs // (options.broker_restarts + 1)
        for i in range(options.broker_restarts)
    ]
    next_kill = time.monotonic() + options.kill_interval_s * rng.uniform(0.5, 1.5)
    # Every job, not every one submitted so far: a cluster run submits them in waves.
    while ledger.settled() < options.jobs and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        ledger.revived += await workers.revive()
        if restart_at and ledger.settled() >= restart_at[0]:
            restart_at.pop(0)
            await restart_broker(ledger, options.rabbit_node)
        if options.kill_interval_s > 0 and time.monotonic() >= next_kill:
            if not await workers.kill_one(rng, ledger, options.worker_min_age_s):
                continue  # every worker is younger: try again at the next turn
            ledger.kills += 1
            next_kill = time.monotonic() + options.kill_interval_s * rng.uniform(0.5, 1.5)
    for _ in restart_at:  # too few jobs settled to reach the planned points: restart anyway
        await restart_broker(ledger, options.rabbit_node)


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


DRAIN_TIMEOUT_S = 60.0


async def queue_depths(prefix: str, node: str | None) -> dict[str, int]:
    """Messages (ready and unacknowledged) in every queue under the prefix, from rabbitmqctl:
    AMQP's passive declare counts only the ready ones, not those a worker holds."""
    process = await asyncio.create_subprocess_exec(
        *ctl(node, "list_queues", "-q", "--no-table-headers", "name", "messages"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError("rabbitmqctl list_queues failed")
    depths: dict[str, int] = {}
    for line in out.decode().splitlines():
        name, _, count = line.rpartition("\t")
        if name.startswith(f"{prefix}.") and count.strip().isdigit():
            depths[name] = int(count)
    return depths


@dataclass
class Drain:
    """Whether the project's queues emptied after the last outcome, and what was left."""

    drained: bool = False
    waited_s: float = 0.0
    left: dict[str, int] = field(default_factory=dict)
    left_after_stop: dict[str, int] = field(default_factory=dict)
    unrouted_events: int = 0


def work_queues(names: Names) -> set[str]:
    """The stage, delay, dead-letter and broker-dead-letter queues: empty once all is done."""
    tiers = tuple(int(tier) for tier in DELAY_TIERS_MS.split(","))
    return set(names.all_queues(tiers)) - {names.unrouted_events_queue}


async def drain(names: Names, node: str | None, timeout_s: float = DRAIN_TIMEOUT_S) -> Drain:
    """Until every work queue holds nothing, twice in a row one second apart (a job in flight
    always holds a message somewhere: the consumed one stays unacked until its successor is
    confirmed, and at-least-once dead-lettering keeps it in the delay queue until then)."""
    started = time.monotonic()
    watched, empty_in_a_row = work_queues(names), 0
    while True:
        depths = await queue_depths(names.prefix, node)
        left = {name: n for name, n in depths.items() if name in watched and n}
        empty_in_a_row = 0 if left else empty_in_a_row + 1
        waited_s = time.monotonic() - started
        if empty_in_a_row >= 2 or waited_s > timeout_s:
            unrouted = depths.get(names.unrouted_events_queue, 0)
            return Drain(not left, waited_s, left, unrouted_events=unrouted)
        await asyncio.sleep(1.0)


async def sandbox_stats(base_url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url}/_sandbox/stats") as response,
    ):
        stats: dict[str, Any] = await response.json()
    return stats


async def leftovers(prefix: str, node: str | None) -> list[str]:
    """Queues and exchanges still on the broker under the prefix."""
    names: list[str] = []
    for command in ("list_queues", "list_exchanges"):
        process = await asyncio.create_subprocess_exec(
            *ctl(node, command, "-q", "--no-table-headers", "name"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await process.communicate()
        if process.returncode != 0:
            return [f"(rabbitmqctl {command} failed: cannot tell)"]
        names += [name for name in out.decode().split() if name.startswith(f"{prefix}.")]
    return names


async def clean_up(options: Options, names: Names, extra_queues: tuple[str, ...]) -> list[str]:
    """Delete the topology and the Redis keys, then check nothing is left; every problem is
    printed at once and returned (the run then fails), never swallowed."""
    problems: list[str] = []
    tiers = tuple(int(tier) for tier in DELAY_TIERS_MS.split(","))
    try:
        await delete_prefix(options.amqp_url, names.prefix, tiers, extra_queues)
    except (RuntimeError, OSError, aio_pika.exceptions.AMQPError) as exc:
        problems.append(f"deleting the topology: {exc}")
    left = await leftovers(names.prefix, options.rabbit_node)
    if left:
        problems.append(f"still on the broker: {', '.join(sorted(left))}")
    try:
        client = aioredis.Redis.from_url(options.redis_url)
        keys = [key async for key in client.scan_iter(f"{names.prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    except RedisError as exc:
        problems.append(f"deleting the Redis keys: {type(exc).__name__}")
    for problem in problems:
        print(f"chaos: CLEAN-UP FAILED: {problem}", file=sys.stderr)
    return problems


@dataclass
class Tally:
    completed: int = 0
    dead: int = 0
    duplicated: int = 0  # jobs with two different outcomes (eventIds)
    resent: int = 0  # identical re-sends of an outcome event (same eventId)
    lost: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def tally(ledger: Ledger) -> Tally:
    counts = Tally()
    for job in sorted(ledger.submitted):
        outcomes = ledger.outcomes.get(job, [])
        if not outcomes:
            counts.lost.append(job)
            continue
        kinds = {kind for kind, _, _ in outcomes}
        distinct = {event_id for _, event_id, _ in outcomes}
        counts.duplicated += len(distinct) > 1
        counts.resent += len(outcomes) - len(distinct)
        if kinds == {c.EVENT_FAILED}:
            counts.dead += 1
            counts.errors.update(ledger.dead.get(job, ["(no dead letter)"]))
        else:
            counts.completed += 1  # both outcomes: counted in duplicated above
    return counts


@dataclass
class Billing:
    per_job: Counter[int] = field(default_factory=Counter)  # paid submissions -> jobs
    double: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    explained: int = 0  # double-billed Intron jobs with a worker kill inside the window
    lines: list[str] = field(default_factory=list)


def billing(ledger: Ledger, stats: dict[str, Any]) -> Billing:
    """Paid submissions per job, from the emulator's per-recording record."""
    paid: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for entry in stats.get("paid_submissions", []):
        paid[entry["audioSha256"]].append((entry["vendor"], float(entry["at"])))
    result = Billing()
    for job in sorted(ledger.submitted):
        submissions = sorted(paid.get(ledger.audio.get(job, ""), []), key=lambda s: s[1])
        result.per_job[len(submissions)] += 1
        if len(submissions) < 2:
            continue
        vendor, first_s, last_s = submissions[0][0], submissions[0][1], submissions[-1][1]
        result.double[vendor].append(job)
        # Inside the window: the worker that made the first upload was killed before it could
        # hear the answer (within its HTTP timeout) and write the file_id down.
        window_s = float(HTTP_TIMEOUT_S)
        kills = [t for t in ledger.kill_times if first_s <= t <= min(last_s, first_s + window_s)]
        result.explained += vendor == "intron" and bool(kills)
        result.lines.append(
            f"chaos: double billed {job} ({vendor}): {len(submissions)} submissions "
            f"{last_s - first_s:.1f} s apart; worker kills within {window_s:.0f} s after the "
            f"first: {len(kills)}"
        )
    return result


def report(ledger: Ledger, stats: dict[str, Any], elapsed_s: float, drained: Drain,
           cleanup: list[str], broker: Sequence[str] = (),
           broker_problems: Sequence[str] = ()) -> tuple[str, bool]:  # fmt: skip
    """broker: lines about what was done to the broker (a cluster run's node kills); any of
    broker_problems (a node that did not come back, say) fails the run."""
    counts, bills = tally(ledger), billing(ledger, stats)
    completed_jobs = {job for job, outs in ledger.outcomes.items()
                      if any(kind == c.EVENT_COMPLETED for kind, _, _ in outs)}  # fmt: skip
    spurious = [d for d in ledger.dead_letters if d.job_id in completed_jobs]
    jobs, calls = len(ledger.submitted), sum(stats["calls"].values())
    intron, invox = len(bills.double["intron"]), len(bills.double["invox"])
    lines = [
        f"chaos: {elapsed_s:.0f} s, {ledger.kills} worker kills, "
        f"{ledger.restarts} broker restarts, "
        f"{ledger.revived} workers restarted after exiting by themselves",
        *broker,
        f"chaos: job publishes nacked by the broker and published again: "
        f"{ledger.nacked_submissions}",
        *(f"chaos: BROKER PROBLEM: {problem}" for problem in broker_problems),
        f"chaos: vendor calls per job {calls / max(jobs, 1):.2f}",
        f"chaos: paid transcription submissions per job {dict(sorted(bills.per_job.items()))}",
        *bills.lines,
        f"chaos: double billed: invox {invox}, intron {intron} ({bills.explained} with a worker "
        "kill inside the window Intron leaves open)",
        f"chaos: dead letters by errorType {dict(counts.errors)}",
        f"chaos: {len(ledger.dead_letters)} dead letters in all; for jobs that completed: "
        f"{len(spurious)} {sorted({d.routing_key for d in spurious})}",
        f"chaos: identical re-sends of an outcome event (same eventId): {counts.resent}",
        *(
            f"chaos: lost {job}: last event {ledger.last_event.get(job, 'none')}, "
            f"dead letters {ledger.dead.get(job, [])}"
            for job in counts.lost
        ),
        drain_line(drained),
        f"chaos: clean-up {'FAILED: ' + '; '.join(cleanup) if cleanup else 'ok, nothing left'}",
        f"jobs={jobs} completed={counts.completed} dead_lettered={counts.dead} "
        f"lost={len(counts.lost)} duplicated={counts.duplicated} resent={counts.resent} "
        f"double_billed={intron + invox}",
    ]
    clean = (
        not counts.lost and not counts.duplicated and not invox and intron <= bills.explained
        and not spurious and drained.drained and not cleanup and not broker_problems
    )  # fmt: skip
    # A message left in a queue after the workers stopped, once every job has its one outcome,
    # is a stale copy (a duplicate a kill left, back from a delay tier or at-least-once
    # dead-lettering between the drain's two looks): reported, not a failure; a worker drops it
    # as a duplicate (the done-mark in the shared ledger).
    return "\n".join(lines), clean


def drain_line(drained: Drain) -> str:
    if not drained.drained:
        return f"chaos: NOT drained: after {drained.waited_s:.0f} s the queues held {drained.left}"
    after = drained.left_after_stop
    return (
        f"chaos: drained: every queue of the prefix empty {drained.waited_s:.0f} s after the "
        f"last outcome; after the workers stopped: "
        f"{f'stale copies {after}' if after else 'still empty'}; "
        f"unrouted events: {drained.unrouted_events}"
    )


@dataclass
class Stage:
    """What a drive (the part of a run that submits the jobs and makes the chaos) works with."""

    options: Options
    connection: AbstractRobustConnection
    names: Names
    jobs: list[JobRequest]
    ledger: Ledger
    workers: Workers
    rng: random.Random
    deadline: float  # time.monotonic()

    async def submit(self, jobs: list[JobRequest]) -> None:
        await submit_all(self.connection, self.names, jobs, self.ledger)

    async def kill_workers(self) -> None:
        await chaos_loop(self.options, self.workers, self.ledger, self.rng, self.deadline)


async def single_node_drive(stage: Stage) -> None:
    """Every job at once, then worker kills and the broker restarts until all are settled."""
    await stage.submit(stage.jobs)
    await stage.kill_workers()


@dataclass
class Drive:
    """How a run submits its jobs and disrupts the broker, and what it has to say about it."""

    run: Callable[[Stage], Awaitable[None]] = single_node_drive
    lines: Callable[[], list[str]] = list
    problems: Callable[[], list[str]] = list


async def run(options: Options, drive: Drive | None = None) -> int:
    drive = drive or Drive()
    rng = random.Random(options.seed)
    prefix = f"chaos-{uuid.uuid4().hex[:8]}"
    names = Names(prefix)
    root = Path(tempfile.mkdtemp(prefix="scribe-chaos-"))
    jobs = make_jobs(options.jobs, root, rng)
    ledger = Ledger(audio={str(job.job_id): audio_digest(job) for job in jobs})
    settings = Settings.from_env({"SCRIBE_PREFIX": prefix, "SCRIBE_AMQP_URL": options.amqp_url,
                                  "SCRIBE_DELAY_TIERS_MS": DELAY_TIERS_MS})  # fmt: skip
    started = time.monotonic()
    connection = await aio_pika.connect_robust(options.amqp_url)
    observer = Observer(connection, names, ledger)
    flags = ("--intron-api-key", INTRON_KEY, "--invox-static-token", INVOX_TOKEN,
             "--polls-before-ready", "1", "--intron-upload-rate", "0",
             "--intron-status-rate", "0", "--seed", str(options.seed))  # fmt: skip
    drained = Drain()
    try:
        async with sandbox_process(*flags) as base_url:
            await declare_on(options.topology_url or options.amqp_url, names, settings)
            await observer.start()
            async with aiohttp.ClientSession() as session:
                rules = fault_rules(options.fault_rate)
                await session.post(f"{base_url}/_sandbox/faults", json=rules)
            shared = worker_env(options, prefix, base_url, root)
            workers = Workers(worker_envs(options, shared), options.workers)
            await workers.start()
            deadline = started + options.timeout_s
            try:
                await drive.run(Stage(options, connection, names, jobs, ledger, workers, rng,
                                      deadline))  # fmt: skip
                await wait_settled(ledger, deadline)
                drained = await drain(names, options.rabbit_node)
            finally:
                await workers.stop()
            # What the workers' shutdown left or made; a dead letter it made reaches the
            # observer within this second and is counted.
            await asyncio.sleep(1.0)
            work = work_queues(names)
            depths = await queue_depths(prefix, options.rabbit_node)
            drained.left_after_stop = {q: n for q, n in depths.items() if q in work and n}
            stats = await sandbox_stats(base_url)
    finally:
        await connection.close()
        cleanup = await clean_up(options, names, (observer.queue_name,))
        shutil.rmtree(root, ignore_errors=True)
    elapsed_s = time.monotonic() - started
    text, clean = report(ledger, stats, elapsed_s, drained, cleanup, drive.lines(),
                         drive.problems())  # fmt: skip
    print(text)
    return 0 if clean else 1


async def declare_on(amqp_url: str, names: Names, settings: Settings) -> None:
    """The topology, declared through a connection of its own to that node."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await declare_topology(await connection.channel(), names, settings.retry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scribe-chaos", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-interval-s", type=float, default=5.0, help="0: never kill")
    parser.add_argument("--broker-restarts", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=0.1, help="share of vendor calls")
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument(
        "--amqp-url",
        default=None,
        help="a broker of yours; without it the run starts a private RabbitMQ node of its own "
        "(ops/rabbit_node.py) and restarts only that one",
    )
    parser.add_argument(
        "--rabbit-node",
        default=None,
        help="with --amqp-url: the node that rabbitmqctl -n restarts and lists",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--intron-redelivery",
        choices=c.INTRON_REDELIVERY_POLICIES,
        default=c.INTRON_REDELIVERY_POLICIES[0],
        help="the workers' SCRIBE_INTRON_REDELIVERY",
    )
    parser.add_argument(
        "--worker-min-age-s",
        type=float,
        default=0.0,
        help="kill only workers started at least this long ago and ready (/readyz 200): on a "
        "loaded machine start-up takes tens of seconds",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="on a three-node cluster of its own: node 1's VM SIGKILLed and started again, "
        "node 2 restarted gracefully, workers given all node URLs (ops/chaos_cluster.py)",
    )
    parser.add_argument(
        "--node-down-s", type=float, default=5.0, help="--cluster: node 1's downtime"
    )
    parser.add_argument(
        "--cluster-state",
        type=Path,
        default=None,
        help="--cluster: on the cluster `scribe-cluster --state-dir DIR start` made (kept)",
    )
    parser.add_argument(
        "--one-url-per-worker",
        action="store_true",
        help="--cluster: each worker gets one node's URL (for workers without failover)",
    )
    args = parser.parse_args(argv)
    if args.cluster and args.amqp_url is not None:
        parser.error("--cluster starts a cluster of its own: no --amqp-url")
    if not 1 <= args.jobs <= 10_000 or not 1 <= args.workers <= 16:
        parser.error("--jobs must be 1..10000 and --workers 1..16")
    if not 0 <= args.fault_rate <= 0.8:
        parser.error("--fault-rate must be within 0..0.8")
    if args.amqp_url is not None and args.broker_restarts and args.rabbit_node is None:
        parser.error("--amqp-url with --broker-restarts needs --rabbit-node (the node to restart)")
    options = Options(
        jobs=args.jobs,
        workers=args.workers,
        kill_interval_s=args.kill_interval_s,
        broker_restarts=args.broker_restarts,
        fault_rate=args.fault_rate,
        timeout_s=args.timeout_s,
        amqp_url=args.amqp_url or "",
        redis_url=args.redis_url,
        seed=args.seed,
        intron_redelivery=args.intron_redelivery,
        rabbit_node=args.rabbit_node,
        worker_min_age_s=args.worker_min_age_s,
    )
    if args.cluster:
        from ops.chaos_cluster import run_in_cluster  # it builds on this module

        return asyncio.run(
            run_in_cluster(options, args.node_down_s, args.one_url_per_worker, args.cluster_state)
        )
    return asyncio.run(run_on_a_broker(options))


async def run_on_a_broker(options: Options) -> int:
    """The run against the broker given, or against a private node started for it: the
    machine's own node is never stopped or restarted by a chaos run."""
    if options.amqp_url:
        return await run(options)
    async with private_node("scribe-chaos") as node:
        print(f"chaos: private RabbitMQ node {node.name} on port {node.port}", file=sys.stderr)
        return await run(replace(options, amqp_url=node.amqp_url, rabbit_node=node.name))


if __name__ == "__main__":
    sys.exit(main())
