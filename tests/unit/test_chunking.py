"""The silence splitter, the chunk files and the stitcher (worker/chunking.py)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from ops.wav import write_long_recording, write_wav
from schemas.errors import ErrorType
from schemas.jobs import ChunkProgress, Transcript, TranscriptSegment
from worker.audio import TranscriberLimits
from worker.chunk_flow import check_chunk, chunk_handle_key, roles_within_chunk
from worker.chunking import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    ChunkLimit,
    ChunkMaker,
    ChunkSpan,
    chunk_limits,
    decode_to_pcm,
    over_limit,
    plan_chunks,
    stitch,
    sweep_stale,
)
from worker.errors import PermanentError
from worker.outcomes import ledger_key
from worker.providers.base import PreparedAudio
from worker.roles import with_roles


def assert_tiles(spans: tuple[ChunkSpan, ...], total: int, max_samples: int) -> None:
    assert spans[0].start == 0
    assert spans[-1].end == total
    for before, after in itertools.pairwise(spans):
        assert before.end == after.start  # no gap, no overlap
    for index, span in enumerate(spans):
        assert span.index == index
        assert 0 < span.end - span.start <= max_samples


@pytest.mark.parametrize("seed", range(8))
def test_plan_covers_the_recording_in_chunks_within_the_limit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frames = int(rng.integers(1_000, 60_000))
    energies = rng.exponential(1e6, frames) * (rng.random(frames) > 0.2)
    total = frames * FRAME_SAMPLES - int(rng.integers(0, FRAME_SAMPLES))
    max_samples = int(rng.integers(50, 2_000)) * FRAME_SAMPLES + int(rng.integers(0, 160))
    spans = plan_chunks(energies, total, max_samples)
    assert_tiles(spans, total, max_samples)
    assert spans == plan_chunks(energies.copy(), total, max_samples)  # deterministic
    # Never more chunks than cutting each at half its allowed length would give.
    assert len(spans) <= 2 * total // max_samples + 1


def test_audio_within_the_limit_is_one_chunk() -> None:
    energies = np.ones(100)
    assert plan_chunks(energies, 100 * FRAME_SAMPLES, 100 * FRAME_SAMPLES) == (
        ChunkSpan(0, 0, 100 * FRAME_SAMPLES),
    )


@pytest.fixture(scope="module")
def long_recording(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, tuple[tuple[float, float], ...]]:
    path = tmp_path_factory.mktemp("long") / "consultation.wav"
    pauses = write_long_recording(path, 7 * 60.0)
    return path, pauses


def test_cuts_fall_in_the_silences_of_a_real_recording(
    long_recording: tuple[Path, tuple[tuple[float, float], ...]], tmp_path: Path
) -> None:
    path, pauses = long_recording
    decoded = decode_to_pcm(path, tmp_path / "a.pcm", 7200.0, 120.0)
    assert decoded.samples == 7 * 60 * SAMPLE_RATE
    limit = ChunkLimit(150.0, 100 * 1024 * 1024)
    spans = plan_chunks(decoded.energies, decoded.samples, limit.max_samples())
    assert_tiles(spans, decoded.samples, limit.max_samples())
    assert len(spans) == 3  # 420 s in chunks of at most 150 s, cut late: 3, not 5
    for span in spans[:-1]:
        assert any(start < span.end_s < end for start, end in pauses), span
    again = decode_to_pcm(path, tmp_path / "b.pcm", 7200.0, 120.0)
    assert plan_chunks(again.energies, again.samples, limit.max_samples()) == spans


def test_a_piece_is_its_span_as_a_wav_and_its_folder_goes_with_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "short.wav"
    write_long_recording(path, 100.0)
    audio = PreparedAudio(path, path.stat().st_size, 100.0, "audio/wav", "c.wav", None)
    maker = ChunkMaker(tmp_path / "work", 7200.0)
    limit = ChunkLimit(40.0, 100 * 1024 * 1024)

    async def cut(index: int) -> tuple[int, float, int, float, float]:
        async with maker.piece(audio, limit, index) as piece:
            assert piece.audio.path.parent.parent == tmp_path / "work"
            with wave.open(str(piece.audio.path)) as chunk:
                frames, rate = chunk.getnframes(), chunk.getframerate()
            assert list(piece.audio.path.parent.iterdir()) == [piece.audio.path]
            assert piece.audio.source_url is None
            return (
                piece.count,
                frames / rate,
                piece.audio.size_bytes,
                piece.span.start_s,
                piece.span.end_s,
            )

    results = [asyncio.run(cut(index)) for index in range(3)]
    assert [count for count, *_ in results] == [3, 3, 3]
    assert sum(seconds for _, seconds, *_ in results) == pytest.approx(100.0)
    for _, seconds, size, start, end in results:
        assert seconds == pytest.approx(end - start)
        assert size <= 100 * 1024 * 1024
        assert seconds <= 40.0
    assert list((tmp_path / "work").iterdir()) == []

    async def fail_inside() -> None:
        async with maker.piece(audio, limit, 1):
            raise RuntimeError("the upload failed")

    with pytest.raises(RuntimeError):
        asyncio.run(fail_inside())
    assert list((tmp_path / "work").iterdir()) == []

    async def past_the_end() -> None:
        async with maker.piece(audio, limit, 3):
            pass

    with pytest.raises(PermanentError) as refused:
        asyncio.run(past_the_end())
    assert refused.value.error_type == ErrorType.INCONSISTENT_INPUT
    assert list((tmp_path / "work").iterdir()) == []


def test_undecodable_audio_is_unsupported(tmp_path: Path) -> None:
    bogus = tmp_path / "x.wav"
    bogus.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really" * 10)
    with pytest.raises(PermanentError) as refused:
        decode_to_pcm(bogus, tmp_path / "x.pcm", 7200.0, 10.0)
    assert refused.value.error_type == ErrorType.UNSUPPORTED_AUDIO
    assert str(bogus) not in refused.value.message


def test_sweep_removes_only_stale_chunk_folders(tmp_path: Path) -> None:
    stale, fresh, other = tmp_path / "a.chunk", tmp_path / "b.chunk", tmp_path / "keep"
    for folder in (stale, fresh, other):
        folder.mkdir()
        (folder / "chunk-001-of-002.wav").write_bytes(b"x")
    old = time.time() - 3 * 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    assert sweep_stale(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.chunk", "keep"]
    assert sweep_stale(tmp_path / "missing") == 0


def words(text: str) -> list[str]:
    return text.split()


def test_stitch_moves_segments_and_joins_texts_without_losing_or_doubling_words() -> None:
    parts = [
        Transcript(
            provider="local",
            text="good morning how are you",
            segments=(
                TranscriptSegment(start=0.5, end=2.0, text="good morning"),
                TranscriptSegment(start=2.5, end=4.0, text="how are you"),
            ),
            duration_s=295.25,
        ),
        Transcript(provider="local", text="", segments=(), duration_s=10.0),  # a silent chunk
        Transcript(
            provider="local",
            text="my knee hurts",
            segments=(TranscriptSegment(start=1.0, end=3.0, text="my knee hurts"),),
            duration_s=188.75,
        ),
    ]
    spans = [(0.0, 295.25), (295.25, 591.25), (591.25, 780.0)]
    so_far = None
    for part, (start, end) in zip(parts, spans, strict=True):
        so_far = stitch(so_far, part, start, end)
    assert so_far is not None
    assert words(so_far.text) == words(" ".join(p.text for p in parts))
    assert [(s.start, s.end) for s in so_far.segments] == [
        (0.5, 2.0),
        (2.5, 4.0),
        (592.25, 594.25),
    ]
    assert [s.text for s in so_far.segments] == ["good morning", "how are you", "my knee hurts"]
    assert so_far.duration_s == 780.0
    assert so_far.provider == "local"


def test_stitch_keeps_lines_apart_and_untimed_segments_at_their_chunk_start() -> None:
    first = Transcript(
        provider="intron",
        text="SPEAKER_00: hello\nSPEAKER_01: hi",
        segments=(
            TranscriptSegment(start=0, end=0, text="hello", speaker="SPEAKER_00"),
            TranscriptSegment(start=0, end=0, text="hi", speaker="SPEAKER_01"),
        ),
        post_processing={"get_summary": "part one"},
    )
    second = Transcript(
        provider="intron",
        text="SPEAKER_00: bye",
        segments=(TranscriptSegment(start=0, end=0, text="bye", speaker="SPEAKER_00"),),
        post_processing={"get_summary": "part two"},
    )
    stitched = stitch(stitch(None, first, 0.0, 600.0), second, 600.0, 700.0)
    assert stitched.text.splitlines() == ["SPEAKER_00: hello", "SPEAKER_01: hi", "SPEAKER_00: bye"]
    assert [(s.start, s.end) for s in stitched.segments] == [(0, 0), (0, 0), (600.0, 600.0)]
    assert stitched.post_processing == {"get_summary": "part one\n\npart two"}


def test_limits_per_transcriber() -> None:
    limits = chunk_limits(
        {
            "intron": TranscriberLimits(600.0, 100 * 1024 * 1024, frozenset({"wav"})),
            "invox": TranscriberLimits(3600.0, None, frozenset({"wav"})),
            "local": TranscriberLimits(None, None, frozenset({"wav"})),
            "other": TranscriberLimits(None, None, frozenset({"wav"})),
        },
        local_chunk_s=300.0,
    )
    assert limits["intron"].max_s == 600.0
    assert limits["intron"].max_bytes == 100 * 1024 * 1024
    assert limits["invox"].max_s == 3600.0
    assert limits["local"].max_s == 300.0
    assert "other" not in limits
    # The WAV of a 600 s chunk is 19.2 MB: duration decides for Intron.
    assert limits["intron"].max_samples() == 600 * SAMPLE_RATE
    assert ChunkLimit(600.0, 1_000_044).max_samples() == 500_000  # bytes decide here

    def audio(seconds: float) -> PreparedAudio:
        return PreparedAudio(Path("x.wav"), 1, seconds, "audio/wav", "x.wav", None)

    assert not over_limit(audio(600.0), limits["intron"])
    assert over_limit(audio(600.5), limits["intron"])
    assert over_limit(audio(301.0), limits["local"])


def test_chunk_keys_and_headers() -> None:
    assert ledger_key("j", 0) == "j"
    assert ledger_key("j", 2) == "j#2"
    assert chunk_handle_key("j", 0) == "j#0"
    progress = ChunkProgress(index=2, count=3, start_s=1.0, end_s=2.0)
    check_chunk(progress, 2)
    check_chunk(None, 0)
    impossible = [
        ChunkProgress(index=3, count=3, start_s=1.0, end_s=2.0),
        ChunkProgress(index=-1, count=3, start_s=1.0, end_s=2.0),
        ChunkProgress(index=1, count=3, start_s=-1.0, end_s=2.0),
        ChunkProgress(index=1, count=3, start_s=3.0, end_s=2.0),
    ]
    for wrong in ((progress, 0), (None, 1), *((p, p.index) for p in impossible)):
        with pytest.raises(PermanentError) as refused:
            check_chunk(*wrong)
        assert refused.value.error_type == ErrorType.INCONSISTENT_INPUT


def test_a_silent_recording_still_splits(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "s.wav", seconds=25.0)
    decoded = decode_to_pcm(path, tmp_path / "s.pcm", 7200.0, 10.0)
    limit = ChunkLimit(10.0, 1 << 40)
    assert_tiles(
        plan_chunks(decoded.energies, decoded.samples, limit.max_samples()),
        decoded.samples,
        limit.max_samples(),
    )


CLINICIAN_WORDS = "hi i'm doctor lee. what brings you in today? let me examine your knee now."
PATIENT_WORDS = "my knee has been hurting for two weeks and i can't sleep at night."


def diarized_chunk(first: str, second: str) -> Transcript:
    """A chunk as Intron's diarized transcript gives it: untimed segments with its own labels."""
    turns = ((first, CLINICIAN_WORDS), (second, PATIENT_WORDS)) * 2
    return Transcript(
        provider="intron",
        text="\n".join(f"{label}: {words}" for label, words in turns),
        segments=tuple(
            TranscriptSegment(start=0.0, end=0.0, text=words, speaker=label)
            for label, words in turns
        ),
    )


def test_a_chunks_own_speaker_numbers_do_not_decide_roles_across_chunks() -> None:
    """Intron numbers each upload's speakers on its own: in the second chunk the clinician is
    SPEAKER_01. Relabelled within each chunk, the stitched transcript names the clinician
    SPEAKER_00 in both, and the roles of all four turns of each chunk are right."""
    first = roles_within_chunk(diarized_chunk("SPEAKER_00", "SPEAKER_01"))
    second = roles_within_chunk(diarized_chunk("SPEAKER_01", "SPEAKER_00"))
    whole = with_roles(stitch(stitch(None, first, 0.0, 600.0), second, 600.0, 1200.0))
    assert [s.role for s in whole.segments] == ["clinician", "patient"] * 4
    assert [s.speaker for s in whole.segments] == ["SPEAKER_00", "SPEAKER_01"] * 4
    assert whole.text.splitlines()[2].startswith("SPEAKER_00: hi i'm doctor lee")


def test_a_chunk_with_roles_set_or_no_speakers_is_left_as_it_is() -> None:
    plain = Transcript(provider="intron", text="words", segments=())
    assert roles_within_chunk(plain) is plain
    labelled = diarized_chunk("SPEAKER_00", "SPEAKER_01")
    local = labelled.model_copy(
        update={
            "segments": tuple(s.model_copy(update={"role": "other"}) for s in labelled.segments)
        }
    )
    assert roles_within_chunk(local) is local
