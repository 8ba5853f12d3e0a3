from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ops.sandbox import RunningSandbox, SandboxConfig, running_sandbox
from tests.harness import (
    REDIS_URL,
    default_sandbox_config,
    delete_topology,
    unique_prefix,
    write_wav,
)
from tests.pg import scratch_database


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def audio_file(storage_root: Path) -> Path:
    return write_wav(storage_root / "consultation.wav", seconds=2.0)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = unique_prefix()
    yield name
    await delete_topology(name)


@pytest.fixture
async def redis_prefix(prefix: str) -> AsyncIterator[str]:
    """A unique prefix whose Redis keys (ledger, rate limits) are deleted afterwards."""
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    return default_sandbox_config()


@pytest.fixture
async def sandbox(sandbox_config: SandboxConfig) -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(sandbox_config) as running:
        yield running


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """A PostgreSQL database of this test's own (the job index), dropped afterwards."""
    async with scratch_database() as url:
        yield url
