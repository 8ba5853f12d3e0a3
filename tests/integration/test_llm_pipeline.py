"""A job through every stage with the "llm" summary and note providers over the real RabbitMQ,
against the emulator's OpenAI-compatible endpoint (issue 16, item 4): the model's citations
are checked against the transcript, those that hold are kept, those that do not are flagged
supported=false and stay in the note; the endpoint's faults are retried; nothing of the
consultation reaches the logs."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest
import structlog

from ops.sandbox import RunningSandbox, SandboxConfig
from tests.harness import (
    INTRON_KEY,
    INVOX_TOKEN,
    SAMPLE_TEMPLATE,
    make_job,
    running_worker,
    sandbox_control,
    sandbox_stats,
    watching,
    worker_env,
)
from worker.logs import configure_logging

pytestmark = pytest.mark.broker

MARKER = "Zyxllmmarker"
TURNS = (
    "Good morning, what brings you in today?",
    f"My left knee has hurt for three weeks since the {MARKER} fall on the stairs.",
    "Does it swell or lock?",
    "It swells in the evening after walking and the stairs make the pain worse.",
    "On examination the left knee shows mild swelling and tenderness along the joint line.",
    "Take ibuprofen four hundred milligrams with food and rest the knee for a week.",
    "Come back in two weeks if the swelling has not settled.",
)
LLM_JOB = {"providers": {"transcriber": "invox", "summarizer": "llm", "note": "llm"}}


@pytest.fixture
def sandbox_config() -> SandboxConfig:
    return SandboxConfig(
        intron_api_key=INTRON_KEY,
        invox_static_token=INVOX_TOKEN,
        polls_before_ready=1,
        transcript_turns=TURNS,
    )


def llm_env(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, **extra: str
) -> dict[str, str]:
    return worker_env(
        prefix,
        sandbox.base_url,
        storage_root,
        SCRIBE_LLM_BASE_URL=sandbox.base_url,
        SCRIBE_LLM_MODEL="sandbox",
        **extra,
    )


async def run_job(env: dict[str, str], audio_file: Path) -> dict[str, Any]:
    job = make_job(audio_file, template=SAMPLE_TEMPLATE, **LLM_JOB)
    async with running_worker(env), watching(env["SCRIBE_PREFIX"]) as watcher:
        outcome = await watcher.outcome(await watcher.submit(job))
    assert outcome["type"] == "job.completed", outcome
    return outcome


def statements(outcome: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    text = outcome["summary"]["text"]
    return [(text[e["textStart"] : e["textEnd"]], e) for e in outcome["summary"]["evidence"]]


async def test_citations_that_hold_are_kept(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path
) -> None:
    outcome = await run_job(llm_env(prefix, sandbox, storage_root), audio_file)
    assert outcome["summary"]["provider"] == "llm"
    segments = outcome["transcript"]["segments"]
    cited = statements(outcome)
    assert len(cited) >= 4
    for sentence, evidence in cited:
        assert evidence["supported"] is True, sentence
        [segment] = evidence["segmentIds"]
        assert sentence in segments[segment]["text"]
    note = {field["id"]: field for field in outcome["clinicalNote"]}
    assert note["f1"]["value"]
    assert all(e["supported"] and e["segmentIds"] for e in note["f1"]["evidence"])
    assert (await sandbox_stats(sandbox.base_url))["calls"]["llm.chat"] == 2


@pytest.mark.parametrize("how", ["out_of_range", "unsupported"])
async def test_citations_that_do_not_hold_are_flagged_not_dropped(
    prefix: str, sandbox: RunningSandbox, storage_root: Path, audio_file: Path, how: str
) -> None:
    rule = {"endpoint": "llm.chat", "kind": "bad_citations", "citations": how}
    await sandbox_control(sandbox.base_url, "faults", [rule])
    outcome = await run_job(llm_env(prefix, sandbox, storage_root), audio_file)
    cited = statements(outcome)
    assert len(cited) >= 4
    # Every sentence the model wrote is still there; every other one is flagged.
    assert [e["supported"] for _, e in cited] == [i % 2 == 0 for i in range(len(cited))]
    segments = outcome["transcript"]["segments"]
    for sentence, evidence in cited[1::2]:
        assert sentence in outcome["summary"]["text"]
        assert all(0 <= i < len(segments) for i in evidence["segmentIds"])
        if how == "unsupported":
            assert sentence not in segments[evidence["segmentIds"][0]]["text"]
    note = {field["id"]: field for field in outcome["clinicalNote"]}
    assert note["f5"]["value"]  # the second field that cites: kept, flagged
    assert note["f5"]["evidence"]
    assert not any(e["supported"] for e in note["f5"]["evidence"])


async def test_faults_are_retried_and_leak_nothing(
    prefix: str,
    sandbox: RunningSandbox,
    storage_root: Path,
    audio_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rules = [
        {"endpoint": "llm.chat", "kind": "rate_limit", "retryAfterS": 1, "times": 1},
        {"endpoint": "llm.chat", "kind": "bad_answer", "answer": "not_json", "times": 1},
    ]
    await sandbox_control(sandbox.base_url, "faults", rules)
    caplog.set_level(logging.DEBUG)
    stream = io.StringIO()
    configure_logging("debug", stream=stream)
    env = llm_env(prefix, sandbox, storage_root, SCRIBE_LOG_LEVEL="debug")
    try:
        outcome = await run_job(env, audio_file)
    finally:
        structlog.reset_defaults()
    assert MARKER in outcome["summary"]["text"]  # the marked sentence did go through the model
    stats = await sandbox_stats(sandbox.base_url)
    assert stats["responses"]["llm.chat"] == {"429": 1, "200": 3}
    logs = stream.getvalue()
    assert "stage.done" in logs  # logging was on
    for where, text in (("structlog", logs), ("stdlib logging", caplog.text)):
        assert MARKER.lower() not in text.lower(), where
        assert "knee" not in text.lower(), where
