"""Child processes for the ops programs (demo, chaos, bench): start, read a ready line, stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aio_pika

from worker.topology import Names


@asynccontextmanager
async def child(
    argv: list[str], env: Mapping[str, str], *, capture_stdout: bool = True
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A subprocess that gets SIGTERM (then SIGKILL after 30 s) when the block ends."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE if capture_stdout else asyncio.subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        await stop(process)


async def stop(process: asyncio.subprocess.Process, grace_s: float = 30.0) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace_s)
    except TimeoutError:
        process.kill()
        await process.wait()


async def ready_line(process: asyncio.subprocess.Process, timeout_s: float = 30) -> dict[str, Any]:
    """The JSON line a child prints once it is ready (scribe-sandbox does)."""
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
    if not line:
        raise RuntimeError("the child process exited before it was ready")
    ready: dict[str, Any] = json.loads(line)
    return ready


@asynccontextmanager
async def sandbox_process(*flags: str) -> AsyncIterator[str]:
    """The vendor emulator on a free loopback port; yields its base URL."""
    argv = [sys.executable, "-m", "ops.sandbox.cli", "--port", "0", *flags]
    async with child(argv, {}) as process:
        yield str((await ready_line(process))["base_url"])


def worker_argv() -> list[str]:
    return [sys.executable, "-m", "worker.cli_worker"]


async def delete_prefix(
    amqp_url: str, prefix: str, tiers_ms: tuple[int, ...], extra_queues: tuple[str, ...] = ()
) -> None:
    """Delete every exchange and queue under the prefix; each one is tried (twice) even if
    another fails, and what could not be deleted is reported at the end."""
    names = Names(prefix)
    targets = [
        *(("queue", queue) for queue in (*names.all_queues(tiers_ms), *extra_queues)),
        *(("exchange", exchange) for exchange in names.all_exchanges()),
    ]
    failed: list[str] = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for kind, name in targets:
            for attempt in range(2):
                try:
                    channel = await connection.channel()
                    if kind == "queue":
                        await channel.queue_delete(name)
                    else:
                        await channel.exchange_delete(name)
                    await channel.close()
                    break
                except (aio_pika.exceptions.AMQPError, TimeoutError):
                    if attempt == 1:
                        failed.append(name)
                    await asyncio.sleep(0.5)
    if failed:
        raise RuntimeError(f"could not delete {failed}")
