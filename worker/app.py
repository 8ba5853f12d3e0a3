"""The worker's lifecycle: start (connect, declare, consume), readiness, and a graceful stop.

Nothing happens at import; every resource is created in start() and released in stop().
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractQueue,
)
from aio_pika.exceptions import AMQPError
from aiohttp import web
from aiormq.abc import DeliveredMessage
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.broker import Delivered, Publisher, StageQueue, connect
from worker.callback_receiver import CallbackReceiver
from worker.callbacks import CallbackTokens
from worker.chunk_flow import ChunkedTranscription
from worker.chunking import ChunkMaker, chunk_limits, sweep_stale
from worker.codec import StageCodec
from worker.constants import Stage
from worker.dead_letter_age import DeadLetterAge
from worker.delivery import Delivery
from worker.failover import FailoverConnection
from worker.handles import HandleSigner
from worker.jobindex import (
    INDEX_STOP_FLUSH_S,
    IndexCollector,
    IndexReader,
    IndexWriter,
    open_pool,
)
from worker.jobs_api import JobsApi
from worker.ledger import JobLedger, MemoryLedger, RedisLedger
from worker.media import FetchPolicy, MediaFetcher, fetch_session
from worker.metrics import Metrics
from worker.outcomes import Handler
from worker.payload_crypto import PayloadCipher
from worker.providers.http import VendorHttp
from worker.providers.registry import ProviderRegistry
from worker.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from worker.settings import Settings
from worker.stages import Stages
from worker.topology import (
    Names,
    broker_dead_letter_queue_arguments,
    declare_topology,
    stage_queue_arguments,
)

log = structlog.get_logger("scribe.app")

BROKER_DEAD_LETTER_PREFETCH = 16

RegistryFactory = Callable[[Settings, VendorHttp], ProviderRegistry]


@dataclass
class _Consumer:
    stage: Stage
    channel: AbstractChannel
    queue: AbstractQueue
    tag: str


class WorkerApp:
    def __init__(self, settings: Settings, registry_factory: RegistryFactory) -> None:
        self.settings = settings
        self.names = Names(settings.prefix)
        self.metrics = Metrics()
        self._registry_factory = registry_factory
        self._connection: FailoverConnection | None = None
        self._publisher: Publisher | None = None
        self._session: aiohttp.ClientSession | None = None
        self._fetch_session: aiohttp.ClientSession | None = None
        self._ledger: JobLedger | None = None
        self._limiter: RateLimiter | None = None
        self._registry: ProviderRegistry | None = None
        self._consumers: list[_Consumer] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self.reconnects = 0
        self._broker_dead_letters: tuple[AbstractChannel, AbstractQueue, str] | None = None
        # scribe_dead_letters and the oldest one's age (worker/dead_letter_age.py).
        self._dead_letter_age: tuple[DeadLetterAge, asyncio.Task[None]] | None = None
        self._http_runner: web.AppRunner | None = None
        self.http_port: int | None = None
        self.http_address: tuple[Any, ...] | None = None
        # POST /callbacks/invox/... (SCRIBE_CALLBACK_BASE_URL): None when callbacks are off.
        self._callbacks: CallbackReceiver | None = None
        # The job index (SCRIBE_DATABASE_URL): None when it is off.
        self._index_pool: asyncpg.Pool | None = None
        self.index: IndexWriter | None = None

    async def start(self) -> None:
        settings = self.settings
        # aiohttp pools 100 connections by default, which would cap the vendor calls a process
        # holds in flight below its prefetch (scribe-bench slow-vendor); never fewer than that.
        connections = max(100, sum(settings.prefetch.values()))
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections))
        self._ledger = (
            RedisLedger.from_url(settings.redis_url.value, settings.prefix)
            if settings.redis_url
            else MemoryLedger()
        )
        self._limiter = (
            RedisRateLimiter.from_url(settings.redis_url.value, settings.prefix)
            if settings.redis_url
            else MemoryRateLimiter()
        )
        self._connection = await connect(
            settings.broker_urls(),
            f"scribe-worker {settings.prefix}",
            give_up_after_s=settings.broker_start_timeout_s,
            ssl_context=settings.amqp_ssl_context(),
        )
        self._connection.reconnect_callbacks.add(self._on_reconnect)
        setup_channel = await self._connection.channel()
        await declare_topology(setup_channel, self.names, settings.retry)
        await setup_channel.close()
        self._publisher = await Publisher.open(self._connection)
        await self._open_index()
        delivery = Delivery(
            self._publisher,
            self.names,
            settings.retry,
            self._ledger,
            self.metrics,
            claim_ttl_s=settings.retry.stage_claim_ttl_s,
            stage_events=settings.stage_events,
            index=self.index,
            cipher=PayloadCipher(settings.payload_keys),
        )
        policy = FetchPolicy(settings.url_allowlist, settings.storage_root, settings.http_timeout_s)
        self._fetch_session = fetch_session(policy)
        media = MediaFetcher(
            self._fetch_session,
            policy,
            settings.max_audio_bytes,
            settings.audio.max_job_s,
            settings.max_document_bytes,
            limits=settings.audio.limits(),
            read_timeout_s=settings.audio.read_timeout_s,
        )
        self._registry = self._registry_factory(settings, self._vendor_http(self._session))
        signer = HandleSigner.from_settings(settings)
        codec = StageCodec()
        stages = Stages(
            self._registry,
            media,
            self._ledger,
            settings.retry,
            codec,
            signer,
            metrics=self.metrics,
            chunks=await self._chunked_transcription(
                self._registry, media, self._ledger, codec, signer
            ),
        )
        for stage in settings.stages:
            await self._consume(stage, stages.handler(stage), delivery)
        await self._consume_broker_dead_letters(delivery)
        self._callbacks = self._callback_receiver(delivery, signer)
        await self._start_http()
        # Started last: a start that fails (the HTTP port taken) leaves no channel half-opened
        # by the sampler for stop() to cancel (aiormq would log the cancelled Channel.Open).
        age = DeadLetterAge(self._connection, self.names.dead_letter_queue, self.metrics)
        self._dead_letter_age = (age, asyncio.create_task(age.run(), name="dead-letter-age"))
        log.info("worker.started", stages=list(settings.stages), prefix=settings.prefix)

    async def _chunked_transcription(
        self,
        registry: ProviderRegistry,
        media: MediaFetcher,
        ledger: JobLedger,
        codec: StageCodec,
        signer: HandleSigner,
    ) -> ChunkedTranscription:
        """Long recordings, one chunk per message; what a killed worker left in the work
        directory is swept first."""
        settings = self.settings
        work_dir = settings.chunking.work_dir
        swept = await asyncio.to_thread(sweep_stale, work_dir)
        if swept:
            log.info("chunks.swept", folders=swept)
        return ChunkedTranscription(
            registry,
            media,
            ledger,
            settings.retry,
            codec,
            signer,
            ChunkMaker(work_dir, settings.audio.max_job_s),
            chunk_limits(settings.audio.limits(), settings.chunking.local_chunk_s),
            self.metrics,
        )

    async def _open_index(self) -> None:
        """The job index, when configured: migrated now if PostgreSQL answers, else by the writer
        once it does (a worker never waits on the index, nor fails to start for it)."""
        url = self.settings.database_url
        if url is None:
            return
        self._index_pool = await open_pool(url.value)
        self.index = IndexWriter(self._index_pool, self.settings.index_queue_max)
        self.metrics.registry.register(IndexCollector(self.index))
        await self.index.ensure_schema()
        self.index.start()

    def _callback_receiver(
        self, delivery: Delivery, signer: HandleSigner
    ) -> CallbackReceiver | None:
        """Invox callbacks, when SCRIBE_CALLBACK_BASE_URL is set and Invox is configured."""
        tokens = CallbackTokens.from_settings(self.settings)
        assert self._registry is not None
        assert self._ledger is not None
        invox = self._registry.transcribers.get("invox")
        if tokens is None or invox is None:
            return None
        return CallbackReceiver(
            tokens,
            self._ledger,
            invox,
            signer,
            delivery.publish_early,
            self.metrics,
            self.settings.callback_max_bytes,
            self.settings.http_timeout_s,
        )

    @property
    def broker_endpoint(self) -> str | None:
        """host:port of the broker node in use (of SCRIBE_AMQP_URL's list); None before start."""
        return self._connection.endpoint if self._connection is not None else None

    def _on_reconnect(self, *_args: object) -> None:
        """Counted: a reconnect raises the delivery count of every unacked message, so a
        message must never be what causes one (tests/integration/test_hostile_frames.py)."""
        self.reconnects += 1
        self.metrics.broker_reconnects.inc()
        log.warning("broker.reconnected", reconnects=self.reconnects, broker=self.broker_endpoint)

    def _vendor_http(self, session: aiohttp.ClientSession) -> VendorHttp:
        return VendorHttp(
            session,
            timeout_s=self.settings.http_timeout_s,
            on_call=self.metrics.observe_vendor_call,
            limiter=self._limiter,
            limits_per_min=self.settings.rate_limits_per_min,
            max_wait_s=self.settings.rate_limit_max_wait_s,
            max_response_bytes=self.settings.max_vendor_response_bytes,
        )

    async def _consume(self, stage: Stage, handler: Handler, delivery: Delivery) -> None:
        assert self._connection is not None
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self.settings.prefetch[stage])
        # Declared (not just looked up) on this channel: aio-pika restores after a reconnect only
        # the queues, and so the consumers, that the robust channel itself declared.
        queue = await channel.declare_queue(
            self.names.stage_queue(stage),
            durable=True,
            arguments=stage_queue_arguments(self.names, stage, self.settings.retry),
        )

        async def on_message(delivered: DeliveredMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.add(task)
            try:
                await delivery.process(stage, handler, Delivered(delivered))
            finally:
                if task is not None:
                    self._in_flight.discard(task)

        if not isinstance(queue, StageQueue):  # connect() makes every queue one
            raise TypeError(f"unexpected queue type {type(queue).__name__}")
        tag = await queue.consume(on_message)
        self._consumers.append(_Consumer(stage, channel, queue, tag))
        self.metrics.consumers_active.labels(stage).set(1)

    async def _consume_broker_dead_letters(self, delivery: Delivery) -> None:
        """job.failed for what the broker dead-letters (deliveryLimitExceeded); every worker
        takes a share, so these events do not depend on which stages a process runs."""
        assert self._connection is not None
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=BROKER_DEAD_LETTER_PREFETCH)
        queue = await channel.declare_queue(
            self.names.broker_dead_letter_queue,
            durable=True,
            arguments=broker_dead_letter_queue_arguments(),
        )

        async def on_message(delivered: DeliveredMessage) -> None:
            await delivery.announce_broker_dead_letter(Delivered(delivered))

        if not isinstance(queue, StageQueue):
            raise TypeError(f"unexpected queue type {type(queue).__name__}")
        self._broker_dead_letters = (channel, queue, await queue.consume(on_message))

    def stalled_stages(self) -> list[Stage]:
        """Stages holding messages that have settled none for SCRIBE_STALL_AFTER_S."""
        now_s = time.monotonic()
        return [
            stage
            for stage in self.settings.stages
            if self.metrics.stage(stage).stalled(now_s, self.settings.stall_after_s)
        ]

    async def ready(self) -> bool:
        """Connected, every configured stage has a consumer registered on an open channel, and
        no stage has stopped making progress while holding messages.

        Checks the consumer tag on the channel itself: after a reconnect, or when the broker
        cancels a consumer (queue deleted), the channel can be open with nobody consuming.
        """
        if self._connection is None or self._connection.is_closed or not self._consumers:
            return False
        active: set[Stage] = set()
        for consumer in self._consumers:
            if consumer.channel.is_closed:
                continue
            try:
                underlay = await consumer.channel.get_underlay_channel()
            except AMQPError:
                continue
            # aiormq keeps the registered consumers per channel; the abstract type omits them.
            if consumer.tag in getattr(underlay, "consumers", {}):
                active.add(consumer.stage)
        for stage in self.settings.stages:
            self.metrics.consumers_active.labels(stage).set(1 if stage in active else 0)
        return active == set(self.settings.stages) and not self.stalled_stages()

    async def stop(self) -> None:
        """Stop consuming, let in-flight work finish within the grace period, requeue the rest.

        Safe on a worker whose start() failed half-way, and safe to call twice: each resource
        is released once, if it was created."""
        await self._stop_consuming()
        await self._drain()
        for consumer in self._consumers:
            if not consumer.channel.is_closed:
                await consumer.channel.close()  # unacked messages return to their queues
        self._consumers.clear()
        await self._release()
        log.info("worker.stopped")

    async def _stop_consuming(self) -> None:
        if self._dead_letter_age is not None:
            age, task = self._dead_letter_age
            self._dead_letter_age = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await age.close()
        if self._broker_dead_letters is not None:
            channel, queue, tag = self._broker_dead_letters
            self._broker_dead_letters = None
            if not channel.is_closed:
                await queue.cancel(tag)
                await channel.close()
        for consumer in self._consumers:
            if not consumer.channel.is_closed:
                await consumer.queue.cancel(consumer.tag)
            self.metrics.consumers_active.labels(consumer.stage).set(0)

    async def _drain(self) -> None:
        if not self._in_flight:
            return
        log.info("worker.draining", in_flight=len(self._in_flight))
        _done, pending = await asyncio.wait(
            set(self._in_flight), timeout=self.settings.shutdown_grace_s
        )
        for task in pending:
            task.cancel()

    async def _release(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.close()
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
        sessions = (self._session, self._fetch_session)
        self._session = self._fetch_session = None
        for session in sessions:
            if session is not None:
                await session.close()
        registry, self._registry = self._registry, None
        if registry is not None:
            registry.close()
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            await ledger.close()
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            await limiter.close()
        runner, self._http_runner = self._http_runner, None
        if runner is not None:
            await runner.cleanup()
        await self._close_index()

    async def _close_index(self) -> None:
        index, self.index = self.index, None
        if index is not None:
            # Bounded apart from the drain's grace: a stop never waits long on a down index.
            await index.close(min(self.settings.shutdown_grace_s, INDEX_STOP_FLUSH_S))
        pool, self._index_pool = self._index_pool, None
        if pool is not None:
            await pool.close()

    async def _start_http(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        if self._callbacks is not None:
            self._callbacks.add_routes(app)
        if self._index_pool is not None:
            JobsApi(IndexReader(self._index_pool), self.settings.api_token).add_routes(app)
        self._http_runner = web.AppRunner(app, access_log=None)
        await self._http_runner.setup()
        site = web.TCPSite(self._http_runner, self.settings.http_host, self.settings.http_port)
        await site.start()
        # The port really bound (SCRIBE_HTTP_PORT=0 asks for any free one).
        self.http_address = self._http_runner.addresses[0]
        self.http_port = int(self.http_address[1])

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready = await self.ready()
        body = {"ready": ready, "stalledStages": self.stalled_stages()}
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )
