"""Provider combinations refused at the door (issue 13, item 3): a job whose providers cannot give
its result on this worker is dead-lettered by the transcribe stage before the audio is read and
before any vendor call, each with its own errorType; before, each of these paid for a
transcription (and sometimes a summary) first. The vendor boundary is aioresponses: every test
asserts which vendor requests were made."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from schemas.errors import ErrorType
from schemas.jobs import JobRequest
from tests.harness import write_wav
from worker.codec import StageCodec
from worker.errors import PermanentError
from worker.handles import HandleSigner
from worker.ledger import MemoryLedger
from worker.media import FetchPolicy, MediaFetcher
from worker.outcomes import Advance, DeliveryContext
from worker.providers.factory import build_registry
from worker.providers.http import VendorHttp
from worker.settings import Settings
from worker.stages import Stages

INTRON = "https://intron.door.test"
INVOX = "https://invox.door.test"
INTRON_ENV = {"SCRIBE_INTRON_BASE_URL": INTRON, "SCRIBE_INTRON_API_KEY": "intron-key"}
INVOX_ENV = {"SCRIBE_INVOX_BASE_URL": INVOX, "SCRIBE_INVOX_ACCESS_TOKEN": "invox-token"}
BOTH_ENV = {**INTRON_ENV, **INVOX_ENV}
TEMPLATE: dict[str, Any] = {
    "id": "t1",
    "template_name": "Note",
    "template_language": "en",
    "fields": [{"id": "f1", "name": "Diagnosis", "type": "string", "value": ""}],
}
CTX = DeliveryContext(
    stage="transcribe",
    job_id=None,
    attempts=0,
    polls=0,
    replays=0,
    redelivered=False,
    traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
)

Transcribe = Callable[..., Any]


def job(audio: Path, template: dict[str, Any] | None = TEMPLATE, **providers: str) -> JobRequest:
    data: dict[str, Any] = {
        "jobId": str(uuid.uuid4()),
        "audio": {"path": str(audio), "mimeType": "audio/wav"},
        "providers": providers,
    }
    if template is not None:
        data["template"] = template
    return JobRequest.model_validate(data)


@pytest.fixture
def missing_audio(tmp_path: Path) -> Path:
    """A path under the storage root with no file: a job that got past the door would fail
    with audioUnavailable, so a refusal proves the door came before the audio was read."""
    return tmp_path / "not-there.wav"


@pytest.fixture
async def transcribe(
    mocked: aioresponses, tmp_path: Path
) -> AsyncIterator[Callable[[dict[str, str], JobRequest], Any]]:
    """The transcribe stage of a worker with the given SCRIBE_* settings."""
    async with aiohttp.ClientSession() as session:
        registries = []

        async def run(env: dict[str, str], for_job: JobRequest) -> Any:
            settings = Settings.from_env({**env, "SCRIBE_STORAGE_ROOT": str(tmp_path)})
            registry = build_registry(settings, VendorHttp(session, timeout_s=5.0))
            registries.append(registry)
            media = MediaFetcher(
                session, FetchPolicy(frozenset(), tmp_path, 5.0), 10_000_000, 600.0, 10_000_000
            )
            stages = Stages(
                registry,
                media,
                MemoryLedger(),
                settings.retry,
                StageCodec(),
                HandleSigner.from_settings(settings),
            )
            return await stages.transcribe(for_job.to_wire(), CTX)

        yield run
        for registry in registries:
            registry.close()


async def refused(
    transcribe: Callable[[dict[str, str], JobRequest], Any],
    mocked: aioresponses,
    env: dict[str, str],
    for_job: JobRequest,
) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        await transcribe(env, for_job)
    assert mocked.requests == {}, "a vendor was called for a job refused at the door"
    return caught.value


async def test_intron_summary_with_another_transcriber_is_incompatible(
    transcribe: Transcribe, mocked: aioresponses, missing_audio: Path
) -> None:
    for transcriber in ("invox", "local"):
        mine = job(missing_audio, transcriber=transcriber, summarizer="intron")
        error = await refused(transcribe, mocked, BOTH_ENV, mine)
        assert error.error_type == ErrorType.INCOMPATIBLE_PROVIDERS
        assert "intron" in error.message


@pytest.mark.parametrize(
    ("env", "providers", "named"),
    [
        pytest.param(INVOX_ENV, {"transcriber": "intron"}, "transcriber 'intron'", id="intron"),
        pytest.param(INTRON_ENV, {"transcriber": "invox"}, "transcriber 'invox'", id="invox"),
        pytest.param(
            INTRON_ENV,
            {"transcriber": "intron", "summarizer": "invox", "note": "local"},
            "summarizer 'invox'",
            id="summarizer-invox",
        ),
        pytest.param(
            BOTH_ENV,
            {"transcriber": "intron", "summarizer": "llm"},
            "summarizer 'llm'",
            id="summarizer-llm",
        ),
        pytest.param(
            BOTH_ENV,
            {"transcriber": "intron", "summarizer": "invox", "note": "llm"},
            "note provider 'llm'",
            id="note-llm",
        ),
        pytest.param(
            INTRON_ENV,
            {"transcriber": "intron", "summarizer": "local"},
            "note provider 'invox'",
            id="template-default-note-invox",
        ),
        pytest.param(
            {**INTRON_ENV, "SCRIBE_INVOX_BASE_URL": INVOX},
            {"transcriber": "intron", "summarizer": "invox"},
            "summarizer 'invox'",
            id="invox-without-token",
        ),
    ],
)
async def test_provider_not_configured_is_refused_at_the_door(
    transcribe: Transcribe,
    mocked: aioresponses,
    missing_audio: Path,
    env: dict[str, str],
    providers: dict[str, str],
    named: str,
) -> None:
    """Before, a missing summarizer or note provider was found after a paid transcription."""
    error = await refused(transcribe, mocked, env, job(missing_audio, TEMPLATE, **providers))
    assert error.error_type == ErrorType.PROVIDER_NOT_CONFIGURED
    assert named in error.message


async def test_a_template_the_local_note_writer_cannot_read_is_refused(
    transcribe: Transcribe, mocked: aioresponses, missing_audio: Path
) -> None:
    big = {
        **TEMPLATE,
        "fields": [
            {
                "id": "f1",
                "name": "Code",
                "type": "enum",
                "enumerableOptions": [f"option {i}" for i in range(201)],
                "value": "",
            }
        ],
    }
    mine = job(missing_audio, big, transcriber="intron", summarizer="local", note="local")
    error = await refused(transcribe, mocked, INTRON_ENV, mine)
    assert error.error_type == ErrorType.TEMPLATE_TOO_LARGE


async def test_without_a_template_the_note_provider_does_not_matter(
    transcribe: Transcribe, mocked: aioresponses, tmp_path: Path
) -> None:
    """No template: the note stage never runs, so an unconfigured note provider is no reason
    to refuse; the job goes on to Intron's upload."""
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF")
    mocked.post(re.compile(r"^https://intron\.door\.test/.*$"), payload={"data": {"file_id": "f"}})
    mine = job(audio, None, transcriber="intron", summarizer="local", note="llm")
    with pytest.raises(PermanentError) as caught:
        await transcribe(INTRON_ENV, mine)
    # Past the door: the audio is read (this one is not a WAV the worker can measure).
    assert caught.value.error_type == ErrorType.UNSUPPORTED_AUDIO


async def test_a_servable_job_passes_the_door(
    transcribe: Transcribe, mocked: aioresponses, tmp_path: Path
) -> None:
    audio = write_wav(tmp_path / "a.wav", seconds=1.0)
    mocked.post(re.compile(r"^https://intron\.door\.test/.*$"), payload={"data": {"file_id": "f"}})
    mine = job(audio, transcriber="intron", summarizer="intron", note="invox")
    outcome = await transcribe(BOTH_ENV, mine)
    assert isinstance(outcome, Advance)
    assert outcome.next_stage == "poll"
