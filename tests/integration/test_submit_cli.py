"""scribe-submit publishes with confirms and, with --wait, prints one JSON outcome and exits
0 on completion, 1 on a dead letter, 2 on timeout or bad usage."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from ops.sandbox import RunningSandbox
from tests.harness import (
    AMQP_URL,
    SAMPLE_TEMPLATE,
    running_worker,
    sandbox_control,
    worker_env,
)
from worker.settings import Settings
from worker.topology import Names, declare_topology

pytestmark = pytest.mark.broker


async def submit(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any] | None, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.cli_submit",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    lines = out.decode().strip().splitlines()
    assert len(lines) <= 1, "stdout must hold one JSON object at most"
    return process.returncode, json.loads(lines[0]) if lines else None, err.decode()


@pytest.fixture
def template_file(storage_root: Path) -> Path:
    path = storage_root / "template.json"
    path.write_text(json.dumps(SAMPLE_TEMPLATE))
    return path


async def test_wait_prints_the_completed_event(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    template_file: Path,
) -> None:
    document = storage_root / "referral.txt"
    document.write_text("referral letter")
    job_id = str(uuid.uuid4())
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env):
        code, printed, _ = await submit(
            env,
            "--audio-file", str(audio_file),
            "--transcriber", "invox",
            "--summarizer", "invox",
            "--template", str(template_file),
            "--output-format", "SOAP_TEMPLATE",
            "--output-language", "en",
            "--note-language", "en",
            "--document", str(document),
            "--job-id", job_id,
            "--wait", "--timeout-s", "30",
        )  # fmt: skip
    assert code == 0
    assert printed is not None
    assert (printed["type"], printed["jobId"]) == ("job.completed", job_id)
    assert printed["summary"]["outputFormat"] == "SOAP_TEMPLATE"
    assert len(printed["clinicalNote"]) == len(SAMPLE_TEMPLATE["fields"])


async def test_wait_prints_the_dead_letter_and_exits_1(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    rule = {"endpoint": "invox.summary", "kind": "http_error", "status": 400,
            "errorType": "invalidLanguage"}  # fmt: skip
    await sandbox_control(sandbox.base_url, "faults", [rule])
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with running_worker(env):
        code, printed, _ = await submit(
            env, "--audio-file", str(audio_file), "--wait", "--timeout-s", "30"
        )
    assert code == 1
    assert printed is not None
    assert printed["errorType"] == "invalidLanguage"
    assert printed["stage"] == "summarize"
    assert printed["message"]
    assert uuid.UUID(printed["jobId"])


@asynccontextmanager
async def stuck_consumer(env: dict[str, str]) -> AsyncIterator[None]:
    """A consumer on the transcribe queue that never settles what it gets: a worker that is
    there but slow."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        settings = Settings.from_env(env)
        names = Names(settings.prefix)
        await declare_topology(channel, names, settings.retry)
        queue = await channel.declare_queue(names.stage_queue("transcribe"), passive=True)

        async def hold(_message: AbstractIncomingMessage) -> None:
            return None

        await queue.consume(hold)
        yield


async def test_wait_times_out_with_exit_2(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root)
    async with stuck_consumer(env):
        code, printed, _ = await submit(
            env, "--audio-file", str(audio_file), "--wait", "--timeout-s", "0.5"
        )
    assert code == 2
    assert printed is not None
    assert printed["outcome"] == "timeout"


@pytest.mark.parametrize(
    "args",
    [
        ["--audio-file", "/definitely/missing.wav"],
        ["--audio-url", "https://a.example/x.wav", "--job-id", "not-a-uuid"],
        ["--audio-url", "https://a.example/x.wav", "--document", "notes.docx"],
        ["--audio-url", "https://a.example/x.wav", "--template", "/definitely/missing.json"],
        ["--audio-url", "https://a.example/x.wav", "--transcriber", "whisperer"],
        [],
    ],
)
async def test_bad_usage_exits_2(prefix: str, storage_root: Path, args: list[str]) -> None:
    env = worker_env(prefix, "http://127.0.0.1:9", storage_root)
    code, printed, err = await submit(env, *args)
    assert code == 2
    assert printed is None
    assert err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    assert "Exception ignored" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


async def transcribe_messages(prefix: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(Names(prefix).stage_queue("transcribe"), passive=True)
        count = queue.declaration_result.message_count
        assert count is not None
        return count


async def test_wait_with_no_worker_says_so_and_publishes_nothing(
    prefix: str, storage_root: Path, audio_file: Path
) -> None:
    env = worker_env(prefix, "http://127.0.0.1:9", storage_root)
    code, printed, err = await submit(
        env, "--audio-file", str(audio_file), "--wait", "--timeout-s", "30"
    )
    assert code == 5
    assert printed is None
    line = one_error_line(err)
    assert f"no worker consumes {prefix}.transcribe" in line
    assert "SCRIBE_PREFIX" in line
    assert await transcribe_messages(prefix) == 0


@pytest.mark.parametrize(
    ("amqp_url", "code", "shown"),
    [
        ("amqp://guest:guest@127.0.0.1:1/", 3, "the broker at 127.0.0.1:1 did not answer"),
        ("amqp://guest:not-the-password@127.0.0.1:5672/", 4, "127.0.0.1:5672 refused the login"),
    ],
    ids=["broker-down", "wrong-password"],
)
async def test_broker_problems_are_one_line_and_their_own_exit_code(
    prefix: str, storage_root: Path, amqp_url: str, code: int, shown: str
) -> None:
    """Not exit 1, which means "dead-lettered", and not a traceback."""
    env = worker_env(prefix, "http://127.0.0.1:9", storage_root, SCRIBE_AMQP_URL=amqp_url)
    exit_code, printed, err = await submit(env, "--audio-url", "https://a.example/x.wav")
    assert exit_code == code
    assert printed is None
    assert shown in one_error_line(err)
    assert "not-the-password" not in err


async def test_a_closed_stdout_is_exit_141_without_a_traceback(
    prefix: str, storage_root: Path
) -> None:
    """`scribe-submit ... | head -c0`: the reader is gone before the outcome is written."""
    env = worker_env(prefix, "http://127.0.0.1:9", storage_root)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        finished = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "ops.cli_submit", "--audio-url", "https://a.example/x.wav"],
            env={**os.environ, **env},
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    err = finished.stderr.decode()
    assert finished.returncode == 141, err
    assert "Traceback" not in err
    assert "Exception ignored" not in err


def write_template(storage_root: Path, body: str) -> Path:
    path = storage_root / "template.json"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (
            json.dumps(
                {**SAMPLE_TEMPLATE, "fields": [{**SAMPLE_TEMPLATE["fields"][0], "type": "text"}]}
            ),
            "fields[0].type: Input should be 'string', 'number', 'array', 'boolean' or 'enum'",
        ),
        (json.dumps({k: v for k, v in SAMPLE_TEMPLATE.items() if k != "id"}), "id: Field required"),
        (
            json.dumps({**SAMPLE_TEMPLATE, "fields": []}),
            "fields: Tuple should have at least 1 item",
        ),
        ('{"id": "t1",', "not JSON (EOF while parsing a value at line 1 column 12)"),
        (json.dumps({**SAMPLE_TEMPLATE, "colour": "red"}), "colour: unknown field"),
    ],
    ids=["field-type", "missing-id", "no-fields", "not-json", "unknown-field"],
)
async def test_template_errors_name_the_field_and_the_problem(
    prefix: str, storage_root: Path, body: str, named: str
) -> None:
    env = worker_env(prefix, "http://127.0.0.1:9", storage_root)
    path = write_template(storage_root, body)
    code, printed, err = await submit(
        env, "--audio-url", "https://a.example/x.wav", "--template", str(path)
    )
    assert code == 2
    assert printed is None
    assert f"--template {path.name}: {named}" in one_error_line(err)


async def test_a_topology_of_another_version_is_exit_6(prefix: str, storage_root: Path) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(
            Names(prefix).events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
    env = worker_env(prefix, "http://127.0.0.1:9", storage_root)
    code, printed, err = await submit(env, "--audio-url", "https://a.example/x.wav")
    assert code == 6
    assert printed is None
    assert Names(prefix).events_exchange in one_error_line(err)
