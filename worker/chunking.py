"""Long recordings in chunks: an energy-based splitter that cuts at silences, the chunk files,
and the stitcher that joins the chunks' transcripts into one.

A recording longer than its transcriber takes in one go (Intron: 10 minutes, 100 MB; Invox: a
setting; local: short enough that no message is held near RabbitMQ's consumer_timeout) is
transcribed chunk by chunk, one message per chunk (worker/stages.py, docs/architecture.md).
Every message re-derives the chunks from the recording itself, so the split must be
deterministic: the audio is decoded to 16 kHz mono 16-bit PCM (PyAV), its energy measured in
10 ms frames, and each cut placed in the middle of the quietest stretch of the last half of the
chunk's allowed length. Same audio, same cuts; every chunk at most the limit; chunk i ends where
chunk i+1 starts (no gap, no overlap, so no word is heard twice or never).

Chunk files live under a per-message directory inside SCRIBE_WORK_DIR, removed when the message's
work ends whatever its outcome; sweep_stale() removes what a killed worker left there. Decoding
and writing are CPU and disk work: call them through asyncio.to_thread (ChunkMaker does).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from schemas.errors import ErrorType
from schemas.jobs import Transcript, TranscriptSegment
from worker.audio import TranscriberLimits, iter_pcm
from worker.errors import PermanentError
from worker.providers.base import PreparedAudio

SAMPLE_RATE: Final = 16_000
SAMPLE_BYTES: Final = 2  # 16-bit PCM
FRAME_SAMPLES: Final = 160  # 10 ms at 16 kHz
FRAMES_PER_S: Final = SAMPLE_RATE // FRAME_SAMPLES
SMOOTHING_FRAMES: Final = 30  # the energy is averaged over 0.3 s around each frame
QUIET_MARGIN_DB: Final = 3.0  # frames within this of the quietest count as its silence
PAUSE_FRAMES: Final = 30  # a pause of 0.3 s is a place to cut
SILENCE_FLOOR: Final = 1e-3  # mean square of a digital silence (dB of 0 is -inf)
WAV_HEADER_BYTES: Final = 44
COPY_BYTES: Final = 1 << 20
DECODE_TIMEOUT_S: Final = 600.0  # a two-hour recording decodes in well under a minute
STALE_AFTER_S: Final = 2 * 3600.0  # no message is held anywhere near this long
WORK_DIR_NAME_SUFFIX: Final = ".chunk"
# The seam between two chunks' texts: Intron's transcripts are lines, local ones words.
LINE_SEAM: Final = "\n"
WORD_SEAM: Final = " "


@dataclass(frozen=True)
class ChunkSpan:
    """One chunk of a recording, in samples at SAMPLE_RATE: [start, end)."""

    index: int
    start: int
    end: int

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


@dataclass(frozen=True)
class ChunkLimit:
    """What one upload (or one local transcription) may hold."""

    max_s: float
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_s < 1.0:
            raise ValueError("a chunk limit under one second")

    def max_samples(self) -> int:
        """The longest chunk by duration and by the size of its WAV file."""
        by_bytes = (self.max_bytes - WAV_HEADER_BYTES) // SAMPLE_BYTES
        return max(FRAME_SAMPLES, min(int(self.max_s * SAMPLE_RATE), by_bytes))


NO_BYTE_LIMIT: Final = 1 << 62
LOCAL: Final = "local"


def over_limit(audio: PreparedAudio, limit: ChunkLimit) -> bool:
    """Whether the recording must be split: longer than one chunk, or too large for one upload
    even as 16 kHz mono 16-bit PCM (a smaller conversion is worker/media.py's business)."""
    converted_bytes = WAV_HEADER_BYTES + int(audio.duration_s * SAMPLE_RATE) * SAMPLE_BYTES
    return audio.duration_s > limit.max_s or converted_bytes > limit.max_bytes


def chunk_limits(
    limits: Mapping[str, TranscriberLimits], local_chunk_s: float
) -> dict[str, ChunkLimit]:
    """Each transcriber's chunk limit from what it takes in one upload (worker/audio.py); the
    local model, which has none, gets local_chunk_s so that no message is held for long. A
    transcriber without any limit is not chunked (no entry)."""
    chunks: dict[str, ChunkLimit] = {}
    for name, limit in limits.items():
        durations = [limit.max_duration_s, local_chunk_s if name == LOCAL else None]
        known = [duration for duration in durations if duration is not None]
        if known:
            chunks[name] = ChunkLimit(min(known), limit.max_bytes or NO_BYTE_LIMIT)
    return chunks


# --- the splitter --------------------------------------------------------------------------


FloatArray = npt.NDArray[np.float64]


def smoothed_db(energies: FloatArray) -> FloatArray:
    """Each frame's energy in dB, averaged over SMOOTHING_FRAMES around it."""
    if energies.size == 0:
        return energies
    padded = np.concatenate(([0.0], np.cumsum(energies, dtype=np.float64)))
    half = SMOOTHING_FRAMES // 2
    index = np.arange(energies.size)
    low = np.maximum(index - half, 0)
    high = np.minimum(index + half + 1, energies.size)
    mean = (padded[high] - padded[low]) / (high - low)
    result: FloatArray = 10.0 * np.log10(np.maximum(mean, SILENCE_FLOOR))
    return result


def _quiet_runs(quiet: list[bool]) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    runs: list[tuple[int, int]] = []
    run_start = -1
    for offset, is_quiet in enumerate([*quiet, False]):
        if is_quiet and run_start < 0:
            run_start = offset
        elif not is_quiet and run_start >= 0:
            runs.append((run_start, offset - run_start))
            run_start = -1
    return runs


def quietest_cut(levels_db: FloatArray, low: int, high: int) -> int:
    """The frame in [low, high] to cut at: the middle of the latest pause (a run of frames
    within QUIET_MARGIN_DB of the quietest) at least PAUSE_FRAMES long, or of the longest run
    when none is that long (the earliest of equals). Late cuts make fewer, fuller chunks."""
    window = levels_db[low : high + 1]
    runs = _quiet_runs((window <= window.min() + QUIET_MARGIN_DB).tolist())
    longest = max(length for _, length in runs)
    wanted = min(longest, PAUSE_FRAMES)
    start, length = [run for run in runs if run[1] >= wanted][-1 if longest >= PAUSE_FRAMES else 0]
    return low + start + length // 2


def plan_chunks(
    energies: FloatArray, total_samples: int, max_samples: int
) -> tuple[ChunkSpan, ...]:
    """Chunk spans covering [0, total_samples) with no gap or overlap, each at most max_samples
    long, cut at the quietest stretch of the second half of each chunk's allowed length.

    energies holds each 10 ms frame's mean square (the last frame may be partial). Pure and
    deterministic: the same energies give the same spans."""
    if total_samples <= max_samples:
        return (ChunkSpan(0, 0, total_samples),)
    max_frames = max(1, max_samples // FRAME_SAMPLES)
    levels = smoothed_db(energies)
    spans: list[ChunkSpan] = []
    start = 0  # in frames
    while total_samples - start * FRAME_SAMPLES > max_samples:
        low = start + max(1, max_frames // 2)
        high = min(start + max_frames, levels.size - 1)
        cut = quietest_cut(levels, low, high)
        spans.append(ChunkSpan(len(spans), start * FRAME_SAMPLES, cut * FRAME_SAMPLES))
        start = cut
    spans.append(ChunkSpan(len(spans), start * FRAME_SAMPLES, total_samples))
    return tuple(spans)


# --- decoding and chunk files --------------------------------------------------------------


@dataclass(frozen=True)
class DecodedAudio:
    """A recording as 16 kHz mono s16le PCM in a file, with its 10 ms frame energies."""

    pcm: Path
    samples: int
    energies: FloatArray


class _FrameMeter:
    """Frame energies of a PCM stream that arrives in pieces of any length."""

    def __init__(self) -> None:
        self._carry: npt.NDArray[np.int16] = np.empty(0, dtype=np.int16)
        self._parts: list[FloatArray] = []

    def feed(self, samples: npt.NDArray[np.int16]) -> None:
        joined = np.concatenate((self._carry, samples)) if self._carry.size else samples
        full = joined.size - joined.size % FRAME_SAMPLES
        if full:
            block = joined[:full].astype(np.float64).reshape(-1, FRAME_SAMPLES)
            self._parts.append(np.mean(block * block, axis=1))
        self._carry = joined[full:].copy()

    def energies(self) -> FloatArray:
        parts = list(self._parts)
        if self._carry.size:
            tail = self._carry.astype(np.float64)
            parts.append(np.array([float(np.mean(tail * tail))]))
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)


def decode_to_pcm(source: Path, target: Path, max_s: float, timeout_s: float) -> DecodedAudio:
    """Decode any accepted format to 16 kHz mono PCM in target (worker/audio.py iter_pcm),
    measuring frame energies on the way; blocking (call it in a thread). Audio past max_s, a
    slow read or undecodable bytes are unsupportedAudio; messages never name the file."""
    meter = _FrameMeter()
    samples = 0
    with target.open("wb") as sink:
        for block in iter_pcm(source, SAMPLE_RATE, timeout_s=timeout_s, max_duration_s=max_s):
            pcm = np.frombuffer(block, dtype="<i2")
            samples += pcm.size
            meter.feed(pcm)
            sink.write(block)
    if samples == 0:
        raise PermanentError(ErrorType.UNSUPPORTED_AUDIO, "the audio has no samples")
    return DecodedAudio(target, samples, meter.energies())


def write_chunk_wav(decoded: DecodedAudio, span: ChunkSpan, target: Path) -> int:
    """The span of the decoded PCM as a 16 kHz mono 16-bit WAV file; returns its size in bytes.
    Blocking: call it in a thread."""
    remaining = (span.end - span.start) * SAMPLE_BYTES
    with decoded.pcm.open("rb") as source, wave.open(str(target), "wb") as sink:
        sink.setnchannels(1)
        sink.setsampwidth(SAMPLE_BYTES)
        sink.setframerate(SAMPLE_RATE)
        source.seek(span.start * SAMPLE_BYTES)
        while remaining > 0:
            block = source.read(min(COPY_BYTES, remaining))
            if not block:
                break
            sink.writeframes(block)
            remaining -= len(block)
    return target.stat().st_size


@dataclass(frozen=True)
class Piece:
    """One chunk of a recording, ready for its transcriber, and the plan it belongs to."""

    span: ChunkSpan
    count: int
    audio: PreparedAudio


def _prepare(source: Path, folder: Path, limit: ChunkLimit, index: int, max_s: float) -> Piece:
    decoded = decode_to_pcm(source, folder / "audio.pcm", max_s, DECODE_TIMEOUT_S)
    spans = plan_chunks(decoded.energies, decoded.samples, limit.max_samples())
    if index >= len(spans):
        raise PermanentError(
            ErrorType.INCONSISTENT_INPUT,
            f"chunk {index + 1} asked for, but the recording splits into {len(spans)}",
        )
    span = spans[index]
    name = f"chunk-{index + 1:03d}-of-{len(spans):03d}.wav"
    size = write_chunk_wav(decoded, span, folder / name)
    decoded.pcm.unlink()
    audio = PreparedAudio(
        path=folder / name,
        size_bytes=size,
        duration_s=span.duration_s,
        mime_type="audio/wav",
        file_name=name,
        source_url=None,
    )
    return Piece(span, len(spans), audio)


class ChunkMaker:
    """Cuts chunk `index` of a recording into a file under work_dir for as long as the caller
    needs it. Every call re-derives the whole plan from the audio (deterministic), so any
    replica, after any crash, cuts the same chunks."""

    def __init__(self, work_dir: Path, max_job_s: float) -> None:
        self._work_dir = work_dir
        self._max_job_s = max_job_s

    @property
    def work_dir(self) -> Path:
        return self._work_dir

    @contextlib.asynccontextmanager
    async def piece(
        self, audio: PreparedAudio, limit: ChunkLimit, index: int
    ) -> AsyncIterator[Piece]:
        folder = await asyncio.to_thread(self._new_folder)
        try:
            yield await asyncio.to_thread(
                _prepare, audio.path, folder, limit, index, self._max_job_s
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    def _new_folder(self) -> Path:
        self._work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(tempfile.mkdtemp(suffix=WORK_DIR_NAME_SUFFIX, dir=self._work_dir))


def sweep_stale(work_dir: Path, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove the chunk folders a killed worker left in work_dir (older than older_than_s);
    returns how many. Only folders this module names are touched."""
    if not work_dir.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for entry in work_dir.iterdir():
        if not entry.name.endswith(WORK_DIR_NAME_SUFFIX) or entry.is_symlink():
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
    return removed


# --- the stitcher --------------------------------------------------------------------------


def _shifted(segments: Sequence[TranscriptSegment], offset_s: float) -> list[TranscriptSegment]:
    """Segments moved to the recording's time line. An untimed segment (Intron's, 0.0/0.0)
    takes its chunk's start: the earliest it can have been said."""
    return [
        segment.model_copy(
            update={"start": segment.start + offset_s, "end": segment.end + offset_s}
        )
        for segment in segments
    ]


def _seam(first: str, second: str) -> str:
    if not first:
        return second
    if not second:
        return first
    separator = LINE_SEAM if LINE_SEAM in first or LINE_SEAM in second else WORD_SEAM
    return f"{first}{separator}{second}"


def _joined_outputs(first: dict[str, str], second: dict[str, str]) -> dict[str, str]:
    """Post-processing outputs (Intron's summary of each chunk) one after the other."""
    joined = dict(first)
    for key, value in second.items():
        joined[key] = f"{joined[key]}\n\n{value}" if key in joined else value
    return joined


def stitch(
    so_far: Transcript | None, part: Transcript, span_start_s: float, span_end_s: float
) -> Transcript:
    """The transcript of the chunks so far with the next chunk's appended: its segments moved by
    the chunk's start, its text after the previous text. Chunks do not overlap, so nothing is
    dropped or repeated at the seam; the duration is the recording's up to the chunk's end."""
    if so_far is None:
        so_far = Transcript(provider=part.provider, text="")
    return Transcript(
        provider=part.provider,
        text=_seam(so_far.text.strip(), part.text.strip()),
        segments=(*so_far.segments, *_shifted(part.segments, span_start_s)),
        duration_s=span_end_s,
        post_processing=_joined_outputs(so_far.post_processing, part.post_processing),
    )
