"""scribe-eval --asr's pieces that need no model: configurations, the manifest, the WER."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from ops import eval_asr
from schemas.jobs import Transcript, TranscriptSegment

pytest.importorskip("jiwer", reason="needs the 'local' extra")


def test_configurations_parse_and_name_themselves() -> None:
    configs = eval_asr.parse_configs("tiny.en:1:none:novad, base:5:clinical:vad")
    assert [c.name for c in configs] == ["tiny.en:1:none:novad", "base:5:clinical:vad"]
    assert configs[0].prompt is None
    assert not configs[0].vad
    assert configs[1].beam_size == 5
    assert configs[1].prompt == "clinical"


@pytest.mark.parametrize("text", ["large:5:none:vad", "base:5:none:maybe", "base:5"])
def test_a_bad_configuration_is_a_usage_error(text: str) -> None:
    with pytest.raises((argparse.ArgumentTypeError, ValueError)):
        eval_asr.parse_configs(text)


def test_the_manifest_reads_as_recordings() -> None:
    recordings = eval_asr.read_manifest(eval_asr.DEFAULT_RECORDINGS)
    assert len(recordings) >= 6
    assert all(r.path.is_file() and r.duration_s > 60 and r.reference for r in recordings)
    only = eval_asr.read_manifest(eval_asr.DEFAULT_RECORDINGS, [recordings[-1].id])
    assert [r.id for r in only] == [recordings[-1].id]


def test_wer_is_over_normalised_words_of_the_whole_set() -> None:
    reference = "doctor: Hello , Ms. Brooks .\npatient: I don't know"
    assert eval_asr.wer([reference], ["hello ms brooks i don't know"]) == 0.0
    # one substitution in 7 reference words, counted over both recordings together
    assert eval_asr.wer([reference, "patient: yes"], ["hello ms brooks i do know", "yes"]) == (
        pytest.approx(1 / 7)
    )


def test_kept_transcripts_are_reused_without_the_model(tmp_path: Path) -> None:
    """--asr-keep: a saved transcript comes back as it was saved, and transcribe_all does not
    load a model when every recording's transcript is kept."""
    recording = eval_asr.read_manifest(eval_asr.DEFAULT_RECORDINGS)[0]
    config = eval_asr.parse_configs("base:5:none:vad")[0]
    words = "what brings you in today? let me examine your knee."
    segment = TranscriptSegment(
        start=1.0, end=2.5, text=words, speaker="SPEAKER_00", role="clinician"
    )
    transcript = Transcript(provider="local", text=f"SPEAKER_00: {words}", segments=(segment,))
    eval_asr.save_heard(tmp_path, config, eval_asr.Heard(recording, transcript, 3.0, 1.5))
    assert (
        eval_asr.load_heard(tmp_path, eval_asr.parse_configs("tiny.en:1:none:novad")[0], recording)
        is None
    )
    totals = asyncio.run(eval_asr.transcribe_all(config, [recording], tmp_path))
    (heard,) = totals.heard
    assert (heard.transcript, heard.wall_s, heard.cpu_s) == (transcript, 3.0, 1.5)
