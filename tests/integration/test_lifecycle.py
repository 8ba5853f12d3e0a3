"""Health, readiness and metrics endpoints; reconnection; graceful SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aio_pika
import aiohttp
import pytest

from ops.sandbox import RunningSandbox
from tests.harness import (
    AMQP_URL,
    INVOX_ALL,
    make_job,
    running_worker,
    sandbox_control,
    sandbox_stats,
    wait_for_call,
    watching,
    worker_env,
)
from worker.app import WorkerApp
from worker.topology import Names

pytestmark = pytest.mark.broker


async def get(app: WorkerApp, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{app.http_port}{path}") as response,
    ):
        return response.status, await response.text()


async def eventually_ready(app: WorkerApp, expected: bool, timeout_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        status, _ = await get(app, "/readyz")
        if (status == 200) == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz did not become {'ready' if expected else 'not ready'}")


async def test_health_ready_and_metrics(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env) as app, watching(prefix) as watcher:
        assert (await get(app, "/healthz"))[0] == 200
        assert (await get(app, "/readyz"))[0] == 200
        await watcher.outcome(await watcher.submit(make_job(audio_file)))
        status, metrics = await get(app, "/metrics")
    assert status == 200
    assert 'scribe_messages_consumed_total{stage="transcribe"} 1.0' in metrics
    assert 'scribe_stage_completed_total{outcome="complete",stage="summarize"} 1.0' in metrics
    assert 'scribe_consumers_active{stage="poll"} 1.0' in metrics
    assert "scribe_vendor_call_seconds_count" in metrics
    assert "scribe_poll_attempts_per_job_count 1.0" in metrics


async def test_readiness_turns_false_when_a_consumer_disappears(
    prefix: str, sandbox: RunningSandbox, storage_root: Path
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env) as app:
        await eventually_ready(app, True)
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(Names(prefix).stage_queue("note"))  # broker cancels it
        await eventually_ready(app, False)
        _status, metrics = await get(app, "/metrics")
        assert 'scribe_consumers_active{stage="note"} 0.0' in metrics


async def close_worker_connections(prefix: str) -> None:
    listed = await asyncio.to_thread(
        subprocess.run,
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
    )
    pids = [line.split("\t")[0] for line in listed.stdout.splitlines() if prefix in line]
    assert pids, "the worker's connection was not found"
    for pid in pids:
        await asyncio.to_thread(
            subprocess.run,
            ["rabbitmqctl", "-q", "close_connection", pid, "test: killed connection"],
            check=True,
            capture_output=True,
        )


async def test_killed_connection_reconnects_with_every_consumer(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env) as app, watching(prefix) as watcher:
        await eventually_ready(app, True)
        await close_worker_connections(prefix)
        await eventually_ready(app, True)
        outcome = await watcher.outcome(await watcher.submit(make_job(audio_file)), timeout_s=30)
    assert outcome["type"] == "job.completed"


def worker_process(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "worker.cli_worker"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize(
    ("hang_s", "grace_s", "summary_calls"),
    [(1.0, 10.0, 1), (30.0, 0.3, 2)],
    ids=["finishes-within-grace", "requeued-after-grace"],
)
async def test_sigterm_drains_in_flight_work_then_exits_zero(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    hang_s: float,
    grace_s: float,
    summary_calls: int,
) -> None:
    hang = {"endpoint": "invox.summary", "kind": "timeout", "delayS": hang_s, "times": 1}
    await sandbox_control(sandbox.base_url, "faults", [hang])
    env = worker_env(
        prefix,
        sandbox.base_url,
        storage_root,
        SCRIBE_HTTP_TIMEOUT_S="60",
        SCRIBE_SHUTDOWN_GRACE_S=str(grace_s),
    )
    log_path = storage_root / "worker.log"
    process = worker_process(env, log_path)
    try:
        async with running_worker({**env, "SCRIBE_STAGES": "note"}), watching(prefix) as watcher:
            job_id = await watcher.submit(make_job(audio_file, **INVOX_ALL))
            await wait_for_call(sandbox.base_url, "invox.summary")
            process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(process.wait, 30)
            async with running_worker(env):
                outcome = await watcher.outcome(job_id, timeout_s=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert code == 0, log_path.read_text()
    assert outcome["type"] == "job.completed"
    assert (await sandbox_stats(sandbox.base_url))["calls"]["invox.summary"] == summary_calls


def the_error_line(stderr: str) -> str:
    """A failed start prints JSON log lines (at most one about the broker) and one plain line."""
    lines = stderr.strip().splitlines()
    plain = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            plain.append(line)
    assert len(plain) == 1, stderr
    assert len(lines) <= 2, stderr
    assert "Traceback" not in stderr
    assert "Unclosed" not in stderr
    return plain[0]


async def start_failing_worker(env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli_worker",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _out, err = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("the worker did not exit within 30 s") from None
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_http_port_in_use_is_one_line_and_exit_5(prefix: str, storage_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = worker_env(prefix, "http://127.0.0.1:9", storage_root, SCRIBE_HTTP_PORT=str(port))
        code, stderr = await start_failing_worker(env)
    assert code == 5
    line = the_error_line(stderr)
    assert f"127.0.0.1:{port}" in line
    assert "already in use" in line
    assert "SCRIBE_HTTP_PORT" in line


@pytest.mark.parametrize(
    ("amqp_url", "code", "shown", "words"),
    [
        ("amqp://guest:not-the-password@127.0.0.1:5672/", 4, "127.0.0.1:5672", "refused the login"),
        ("amqp://guest:guest@127.0.0.1:1/", 3, "127.0.0.1:1", "did not answer within 2 s"),
    ],
    ids=["wrong-password", "nothing-listening"],
)
async def test_broker_errors_name_host_and_port_never_the_password(
    prefix: str, storage_root: Path, amqp_url: str, code: int, shown: str, words: str
) -> None:
    # A refused login is not retried (no retry fixes a password): with a long start timeout it
    # still exits at once (start_failing_worker allows 30 s) and logs no retry.
    timeout_s = "60" if code == 4 else "2"
    env = worker_env(
        prefix,
        "http://127.0.0.1:9",
        storage_root,
        SCRIBE_AMQP_URL=amqp_url,
        SCRIBE_BROKER_START_TIMEOUT_S=timeout_s,
    )
    exit_code, stderr = await start_failing_worker(env)
    assert exit_code == code
    line = the_error_line(stderr)
    assert shown in line
    assert words in line
    assert "not-the-password" not in stderr
    assert ("broker.unreachable" in stderr) == (code == 3)


async def test_a_port_bind_cannot_take_is_a_settings_error(prefix: str, storage_root: Path) -> None:
    env = worker_env(prefix, "http://127.0.0.1:9", storage_root, SCRIBE_HTTP_PORT="99999")
    code, stderr = await start_failing_worker(env)
    assert code == 2
    assert "SCRIBE_HTTP_PORT" in the_error_line(stderr)


@pytest.mark.parametrize("kind", ["queue", "events-exchange"])
async def test_a_topology_of_another_version_is_one_line_and_exit_6(
    prefix: str, storage_root: Path, kind: str
) -> None:
    """A queue or exchange declared with other arguments (an older version, another delivery
    limit) is neither a refused login nor a traceback."""
    names = Names(prefix)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        if kind == "queue":
            await channel.declare_queue(
                names.stage_queue("transcribe"),
                durable=True,
                arguments={"x-queue-type": "quorum", "x-delivery-limit": 3},
            )
        else:
            await channel.declare_exchange(
                names.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
    env = worker_env(prefix, "http://127.0.0.1:9", storage_root)
    code, stderr = await start_failing_worker(env)
    assert code == 6
    line = the_error_line(stderr)
    shown = names.stage_queue("transcribe") if kind == "queue" else names.events_exchange
    assert shown in line
    assert "docs/operations.md" in line
