"""LocalTranscriber: real speech recognition on the committed sample recording (a few seconds)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.errors import ErrorType
from schemas.jobs import JobRequest, TranscriptionHandle
from tests.harness import write_wav
from worker.errors import PermanentError
from worker.providers.base import PreparedAudio, Transcribed
from worker.providers.local_asr import LocalTranscriber
from worker.roles import speaker_lines

pytest.importorskip("faster_whisper", reason="needs the 'local' extra")

SAMPLE = Path(__file__).resolve().parents[2] / "ops" / "samples" / "consultation.wav"


def job(path: Path) -> JobRequest:
    return JobRequest.model_validate(
        {
            "jobId": str(uuid.uuid4()),
            "audio": {"path": str(path)},
            "providers": {"transcriber": "local"},
        }
    )


def prepared(path: Path, duration_s: float = 1.0) -> PreparedAudio:
    return PreparedAudio(
        path=path,
        size_bytes=path.stat().st_size if path.exists() else 0,
        duration_s=duration_s,
        mime_type="audio/wav",
        file_name=path.name,
        source_url=None,
    )


@pytest.fixture(scope="module")
def transcriber() -> Iterator[LocalTranscriber]:
    provider = LocalTranscriber(workers=1)
    yield provider
    provider.close()


@pytest.mark.slow
async def test_transcribes_the_sample_recording(transcriber: LocalTranscriber) -> None:
    result = await transcriber.submit(job(SAMPLE), prepared(SAMPLE, 57.0))
    assert isinstance(result, Transcribed)
    transcript = result.transcript
    assert transcript.provider == "local"
    assert transcript.duration_s is not None
    assert transcript.duration_s == pytest.approx(55, abs=5)  # the audio is ~57 s long
    words = transcript.text.lower()
    for expected in ("finger", "skiing", "weekend", "sunday", "painful"):
        assert expected in words
    assert transcript.segments
    assert all(s.end >= s.start >= 0 for s in transcript.segments)
    assert transcript.segments[-1].end <= transcript.duration_s + 1
    # Speaker turns (worker/providers/diarize.py): one "SPEAKER_00: ..." line per turn.
    assert transcript.text == speaker_lines(transcript.segments)
    assert {s.speaker for s in transcript.segments} == {"SPEAKER_00", "SPEAKER_01"}


async def test_silence_is_an_empty_but_valid_transcript(
    transcriber: LocalTranscriber, tmp_path: Path
) -> None:
    path = write_wav(tmp_path / "silence.wav", seconds=1.0, rate=16000)
    result = await transcriber.submit(job(path), prepared(path))
    assert isinstance(result, Transcribed)
    assert result.transcript.duration_s == pytest.approx(1.0)


async def test_undecodable_audio_is_unsupported(
    transcriber: LocalTranscriber, tmp_path: Path
) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio" * 10)
    with pytest.raises(PermanentError) as caught:
        await transcriber.submit(job(path), prepared(path))
    assert caught.value.error_type == ErrorType.UNSUPPORTED_AUDIO
    assert str(tmp_path) not in caught.value.message


async def test_missing_audio_is_unavailable(transcriber: LocalTranscriber, tmp_path: Path) -> None:
    path = tmp_path / "gone.wav"
    with pytest.raises(PermanentError) as caught:
        await transcriber.submit(job(path), prepared(path))
    assert caught.value.error_type == ErrorType.AUDIO_UNAVAILABLE


async def test_status_is_never_polled(transcriber: LocalTranscriber) -> None:
    handle = TranscriptionHandle(provider="local", handle="x", submitted_at=datetime.now(UTC))
    with pytest.raises(PermanentError) as caught:
        await transcriber.status(job(SAMPLE), handle)
    assert caught.value.error_type == ErrorType.INCONSISTENT_INPUT
