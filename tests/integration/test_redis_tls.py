"""Redis over TLS (issue 19, item 5): a CA and a server certificate for 127.0.0.1 made here, a
private `redis-server` that listens only on a TLS port, and a job end to end with
SCRIBE_REDIS_URL=rediss://...?ssl_ca_certs=<ca>; its ledger keys are in that Redis. A client
certificate goes in the same URL (ssl_certfile, ssl_keyfile). With another CA the worker still
starts (an unreachable Redis is not a start failure, docs/operations.md "Redis"): every delivery
is deferred as ledger_unavailable and no vendor is paid."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from ops.rabbit_node import free_port
from ops.sandbox import running_sandbox
from tests.harness import (
    INVOX_ALL,
    default_sandbox_config,
    make_job,
    running_worker,
    sandbox_stats,
    watching,
    worker_env,
    write_wav,
)
from tests.tls_certs import make_ca, make_leaf
from worker import constants as c

pytestmark = [
    pytest.mark.broker,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(60),
]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("redis-tls")
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    make_leaf(directory, "ca", "server", "subjectAltName=IP:127.0.0.1")
    make_leaf(directory, "ca", "client", "extendedKeyUsage=clientAuth")
    return directory


def _url(certs: Path, port: int, ca: str, client: bool = False) -> str:
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs / f'{ca}.pem'}"
    if client:  # redis-py passes the query's ssl_* names to its SSL connection
        url += f"&ssl_certfile={certs / 'client.pem'}&ssl_keyfile={certs / 'client.key'}"
    return url


async def _refusal(url: str) -> str | None:
    """None when Redis at `url` answers a PING, else why not."""
    client = aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        await client.ping()
    except RedisError as exc:
        return str(exc)
    finally:
        await client.aclose()
    return None


def _deferred(registry: CollectorRegistry) -> float:
    labels = {"stage": "transcribe", "reason": "ledger_unavailable"}
    return registry.get_sample_value("scribe_stage_deferred_total", labels) or 0.0


@asynccontextmanager
async def _redis_server(certs: Path, auth_clients: str) -> AsyncIterator[int]:
    """A redis-server of its own with no plain port (--port 0), never the machine's 6379."""
    port = free_port()
    data = certs / f"data-{port}"
    data.mkdir()
    server = await asyncio.create_subprocess_exec(
        "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(certs / "server.pem"), "--tls-key-file", str(certs / "server.key"),
        "--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-auth-clients", auth_clients,
        "--save", "", "--appendonly", "no", "--dir", str(data),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            if await _refusal(_url(certs, port, "ca", client=True)) is None:
                break
            assert server.returncode is None, "redis-server exited"
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the TLS redis-server did not answer within 10 s")
        yield port
    finally:
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 10)
        except TimeoutError:
            server.kill()
            await server.wait()
        shutil.rmtree(data, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tls_redis(certs: Path) -> AsyncIterator[int]:
    async with _redis_server(certs, auth_clients="no") as port:
        yield port


async def test_a_job_completes_with_its_ledger_in_redis_over_tls(
    tls_redis: int, certs: Path, tmp_path: Path, prefix: str
) -> None:
    url = _url(certs, tls_redis, "ca")
    audio = write_wav(tmp_path / "consultation.wav", seconds=2.0)
    async with running_sandbox(default_sandbox_config()) as sandbox:
        env = worker_env(prefix, sandbox.base_url, tmp_path, SCRIBE_REDIS_URL=url)
        async with running_worker(env), watching(prefix) as watcher:
            outcome = await watcher.outcome(await watcher.submit(make_job(audio, **INVOX_ALL)), 40)
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key.decode() async for key in client.scan_iter(f"{prefix}:*")]
        tls_version = (await client.info("server")).get("redis_version")
    finally:
        await client.aclose()
    assert outcome["type"] == "job.completed", outcome
    ledger = f"{prefix}:{c.REDIS_LEDGER_NAMESPACE}:"
    assert any(key.startswith(f"{ledger}handle:") for key in keys), keys
    assert any(key.startswith(f"{ledger}done:") for key in keys), keys
    assert tls_version  # the keys were read back over the same TLS connection


async def test_another_ca_defers_every_job_and_pays_no_vendor(
    tls_redis: int, certs: Path, tmp_path: Path, prefix: str
) -> None:
    audio = write_wav(tmp_path / "consultation.wav", seconds=2.0)
    url = _url(certs, tls_redis, "other-ca")
    async with running_sandbox(default_sandbox_config()) as sandbox:
        env = worker_env(prefix, sandbox.base_url, tmp_path, SCRIBE_REDIS_URL=url)
        async with running_worker(env) as app, watching(prefix) as watcher:
            job_id = await watcher.submit(make_job(audio, **INVOX_ALL))
            for _ in range(200):
                if _deferred(app.metrics.registry) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert _deferred(app.metrics.registry) >= 2
            assert await app.ready()  # the broker side is up; only Redis is refused
        stats = await sandbox_stats(sandbox.base_url)
    assert job_id not in watcher.events  # neither completed nor failed
    assert stats["calls"].get("invox.presign", 0) == 0


async def test_a_client_certificate_from_the_url_is_presented(certs: Path) -> None:
    """Redis that requires client certificates: the worker's from_url call (the same URL form
    in SCRIBE_REDIS_URL) is let in with ssl_certfile/ssl_keyfile and refused without."""
    async with _redis_server(certs, auth_clients="yes") as port:
        assert await _refusal(_url(certs, port, "ca", client=True)) is None
        # Refused without one. The words vary: with TLS 1.3 the server's alert ("certificate
        # required") can lose the race with its closing the socket (a reset, a closed stream).
        assert await _refusal(_url(certs, port, "ca")) is not None


async def test_a_wrong_ca_or_host_name_is_refused(tls_redis: int, certs: Path) -> None:
    """redis-py checks the name by default: the certificate carries only IP:127.0.0.1."""
    by_name = _url(certs, tls_redis, "ca").replace("127.0.0.1", "localhost", 1)
    assert "Hostname mismatch" in (await _refusal(by_name) or "")
    wrong_ca = await _refusal(_url(certs, tls_redis, "other-ca"))
    assert "self-signed certificate in certificate chain" in (wrong_ca or "")
