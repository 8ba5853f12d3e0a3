"""A recording with no speech (issue 13, item 13): once the transcript is known to hold no word,
the job is dead-lettered as noSpeech at that stage, for every transcriber, instead of paying for
a summary and a note of nothing. The vendor boundary is aioresponses: each test asserts that no
summary, note or other vendor request followed."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from schemas.errors import ErrorType
from schemas.jobs import JobRequest, SummarizeState, TranscriptSegment
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

INTRON = "https://intron.nospeech.test"
INVOX = "https://invox.nospeech.test"
ENV = {
    "SCRIBE_INTRON_BASE_URL": INTRON,
    "SCRIBE_INTRON_API_KEY": "intron-key",
    "SCRIBE_INVOX_BASE_URL": INVOX,
    "SCRIBE_INVOX_ACCESS_TOKEN": "invox-token",
}
ANY_INTRON = re.compile(r"^https://intron\.nospeech\.test/.*$")
ANY_INVOX = re.compile(r"^https://invox\.nospeech\.test/.*$")
TEMPLATE = {
    "id": "t1",
    "template_name": "Note",
    "template_language": "en",
    "fields": [{"id": "f1", "name": "Diagnosis", "type": "string", "value": ""}],
}


def ctx(stage: str) -> DeliveryContext:
    return DeliveryContext(
        stage="poll" if stage == "poll" else "transcribe",
        job_id=None,
        attempts=0,
        polls=0,
        replays=0,
        redelivered=False,
        traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    )


def job(audio: Path, transcriber: str, summarizer: str = "invox", **extra: Any) -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": str(uuid.uuid4()),
            "audio": {"path": str(audio), "mimeType": "audio/wav"},
            "providers": {"transcriber": transcriber, "summarizer": summarizer, "note": "invox"},
            "template": TEMPLATE,
            **extra,
        }
    )


@dataclass
class World:
    stages: Stages
    mocked: aioresponses
    audio: Path

    def requests(self) -> list[str]:
        return [f"{method} {url}" for (method, url), calls in self.mocked.requests.items()
                for _ in calls]  # fmt: skip

    async def transcribe_and_poll(self, for_job: JobRequest) -> PermanentError:
        """The transcribe stage's message, then its poll message; the poll must refuse."""
        submitted = await self.stages.transcribe(for_job.to_wire(), ctx("transcribe"))
        assert isinstance(submitted, Advance)
        assert submitted.next_stage == "poll"
        with pytest.raises(PermanentError) as caught:
            await self.stages.poll(submitted.body, ctx("poll"))
        return caught.value


@pytest.fixture
async def world(mocked: aioresponses, tmp_path: Path) -> AsyncIterator[World]:
    audio = write_wav(tmp_path / "silence.wav", seconds=10.0, rate=16000)
    settings = Settings.from_env({**ENV, "SCRIBE_STORAGE_ROOT": str(tmp_path)})
    async with aiohttp.ClientSession() as session:
        registry = build_registry(settings, VendorHttp(session, timeout_s=5.0))
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
        yield World(stages, mocked, audio)
        registry.close()


def intron_answers(mocked: aioresponses, transcript: str, **data: Any) -> None:
    mocked.post(f"{INTRON}/file/v1/upload", payload={"data": {"file_id": "file-1"}})
    mocked.get(
        ANY_INTRON,
        payload={
            "data": {
                "processing_status": "FILE_TRANSCRIBED",
                "audio_transcript": transcript,
                **data,
            }
        },
    )


def invox_answers(mocked: aioresponses, segments: list[dict[str, Any]]) -> None:
    mocked.post(
        f"{INVOX}/api/v1/generate-presigned-url",
        payload={"presignedUrl": "https://upload.nospeech.test/put", "requestId": "req-1"},
    )
    mocked.put("https://upload.nospeech.test/put", status=200)
    mocked.post(
        f"{INVOX}/api/v1/get-transcription",
        payload={"transcriptionStatus": "COMPLETED", "transcription": segments},
    )


@pytest.mark.parametrize(
    "transcript",
    ["", "   \n\t ", "SPEAKER_01:\nSPEAKER_02:  "],
    ids=["empty", "whitespace", "speaker-labels-only"],
)
async def test_intron_transcript_without_words_is_no_speech(world: World, transcript: str) -> None:
    intron_answers(world.mocked, transcript)
    error = await world.transcribe_and_poll(job(world.audio, "intron"))
    assert error.error_type == ErrorType.NO_SPEECH
    assert len(world.requests()) == 2, world.requests()  # the upload and one status: no summary


async def test_intron_summary_of_silence_is_still_no_speech(world: World) -> None:
    """Intron's post-processing may still write a heading for nothing: the transcript decides."""
    intron_answers(world.mocked, "", transcript_summary="## Summary\n\n")
    error = await world.transcribe_and_poll(
        job(world.audio, "intron", "intron", intron={"postProcessing": ["get_summary"]})
    )
    assert error.error_type == ErrorType.NO_SPEECH


@pytest.mark.parametrize(
    "segments",
    [[], [{"text": "", "start": 0, "end": 1}, {"text": "  ", "start": 1, "end": 2}]],
    ids=["no-segments", "blank-segments"],
)
async def test_invox_transcript_without_words_is_no_speech(
    world: World, segments: list[dict[str, Any]]
) -> None:
    invox_answers(world.mocked, segments)
    error = await world.transcribe_and_poll(job(world.audio, "invox"))
    assert error.error_type == ErrorType.NO_SPEECH
    assert not any("generate-consultation-summary" in r for r in world.requests())
    assert not any("generate-clinical-note" in r for r in world.requests())


async def test_local_transcript_of_silence_is_no_speech(world: World) -> None:
    """Whisper on ten seconds of digital silence returns no segment: refused at transcribe."""
    pytest.importorskip("faster_whisper", reason="needs the 'local' extra")
    with pytest.raises(PermanentError) as caught:
        await world.stages.transcribe(job(world.audio, "local").to_wire(), ctx("transcribe"))
    assert caught.value.error_type == ErrorType.NO_SPEECH
    assert world.requests() == []


async def test_a_transcript_with_words_goes_on(world: World) -> None:
    intron_answers(world.mocked, "SPEAKER_01: my knee hurts")
    submitted = await world.stages.transcribe(job(world.audio, "intron").to_wire(), ctx("t"))
    assert isinstance(submitted, Advance)
    polled = await world.stages.poll(submitted.body, ctx("poll"))
    assert isinstance(polled, Advance)
    assert polled.next_stage == "summarize"


async def passed_on(world: World, for_job: JobRequest) -> tuple[TranscriptSegment, ...]:
    """The segments the poll stage sends on to summarize."""
    submitted = await world.stages.transcribe(for_job.to_wire(), ctx("transcribe"))
    assert isinstance(submitted, Advance)
    polled = await world.stages.poll(submitted.body, ctx("poll"))
    assert isinstance(polled, Advance)
    return StageCodec().decode(SummarizeState, polled.body).state.transcript.segments


async def test_intron_segments_go_on_with_speakers_and_roles(world: World) -> None:
    """Issue 15: the poll stage passes Intron's diarized lines on with a role on every segment,
    from what each speaker says: here the patient speaks first."""
    intron_answers(
        world.mocked,
        "SPEAKER_01: hi, my knee has been hurting since i fell on sunday\n"
        "SPEAKER_02: i'm dr. lee. let me examine it. does it hurt when i press here?\n"
        "SPEAKER_01: yes, right there",
    )
    segments = await passed_on(world, job(world.audio, "intron", intron={"useDiarization": True}))
    assert [(s.speaker, s.role) for s in segments] == [
        ("SPEAKER_01", "patient"),
        ("SPEAKER_02", "clinician"),
        ("SPEAKER_01", "patient"),
    ]


async def test_invox_segments_go_on_with_speakers_and_roles(world: World) -> None:
    invox_answers(
        world.mocked,
        [
            {"text": "what brings you in today? any fever or chills?", "start": 0, "end": 3},
            {"text": "my back has been aching for two weeks", "start": 3, "end": 6},
        ],
    )
    segments = await passed_on(world, job(world.audio, "invox"))
    assert [(s.speaker, s.role) for s in segments] == [
        ("UNLABELLED", "clinician"),
        ("UNLABELLED", "patient"),
    ]
