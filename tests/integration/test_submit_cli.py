"""scribe-submit publishes with confirms and, with --wait, prints one JSON outcome and exits
0 on completion, 1 on a dead letter, 2 on timeout or bad usage."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from ops.sandbox import RunningSandbox
from tests.harness import SAMPLE_TEMPLATE, running_worker, sandbox_control, worker_env

pytestmark = pytest.mark.broker


async def submit(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any] | None, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli_submit",
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


async def test_wait_times_out_with_exit_2(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    env = worker_env(prefix, sandbox.base_url, storage_root)  # no worker running
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
