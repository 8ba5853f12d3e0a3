"""ops/recordings/: the manifest agrees with the committed files (hash, duration decoded with PyAV,
turn timeline) and with ACI-Bench's text; the local transcriber hears words of one of them."""

from __future__ import annotations

import hashlib
import json
import wave
from pathlib import Path
from typing import Any

import pytest

from ops import make_recordings

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "ops" / "recordings"
ACI = REPO.parent / "shared" / "data" / "aci-bench"
ROLES = {"doctor": "clinician", "patient": "patient", "patient_guest": "other"}


def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FOLDER / "manifest.json").read_text(encoding="utf-8"))
    return loaded


def recordings() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = manifest()["recordings"]
    return found


def test_the_set_is_what_the_issue_asks_for() -> None:
    entries = recordings()
    assert len(entries) >= 6
    assert sum(e["duration_s"] > 600 for e in entries) >= 2
    assert {e["split"] for e in entries} <= {"train", "valid"}
    assert len({e["encounter_id"] for e in entries}) == len(entries)
    assert [(e["id"], e["split"], e["encounter_id"]) for e in entries] == [
        tuple(r) for r in make_recordings.RECORDINGS
    ]
    total_bytes = sum((FOLDER / e["file"]).stat().st_size for e in entries)
    assert total_bytes < 12 * 1024 * 1024  # compressed: ~2 kB per second of audio
    readme = (FOLDER / "README.md").read_text(encoding="utf-8")
    assert "CC BY 4.0" in readme
    assert "ACI-BENCH" in readme


@pytest.mark.parametrize("entry", recordings(), ids=lambda e: str(e["id"]))
def test_each_file_is_the_one_the_manifest_describes(entry: dict[str, Any]) -> None:
    av = pytest.importorskip("av", reason="needs PyAV (the 'local' extra)")
    path = FOLDER / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    with av.open(str(path)) as container:  # the duration as the Ogg pages say (last granule)
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        assert stream.channels == 1
        assert stream.duration is not None
        assert stream.time_base is not None
        duration_s = float(stream.duration * stream.time_base)
    assert duration_s == pytest.approx(entry["duration_s"], abs=0.05)


@pytest.mark.parametrize("entry", recordings(), ids=lambda e: str(e["id"]))
def test_each_timeline_is_ordered_and_inside_the_recording(entry: dict[str, Any]) -> None:
    turns = entry["turns"]
    assert turns
    previous_end = 0.0
    for turn in turns:
        assert ROLES[turn["speaker"]] == turn["role"]
        assert previous_end < turn["start_s"] < turn["end_s"] <= entry["duration_s"]
        previous_end = turn["end_s"]
    assert {"doctor", "patient"} <= {t["speaker"] for t in turns}
    lines = [f"{t['speaker']}: {t['text']}" for t in turns]
    assert entry["reference_text"] == "\n".join(lines)


@pytest.mark.skipif(not ACI.is_dir(), reason="needs ../shared/data/aci-bench")
@pytest.mark.parametrize("entry", recordings(), ids=lambda e: str(e["id"]))
def test_each_reference_is_the_dialogue_spoken(entry: dict[str, Any]) -> None:
    dialogue = make_recordings.read_dialogues(ACI, entry["split"])[entry["encounter_id"]]
    expected = make_recordings.dialogue_turns(dialogue)
    assert [(t["speaker"], t["text"]) for t in entry["turns"]] == [
        (t.speaker, t.text) for t in expected
    ]


def test_dialogue_turns_skip_empty_tags_and_refuse_unknown_ones() -> None:
    turns = make_recordings.dialogue_turns("[doctor] hi .\n[patient]\n[patient] - hello , doc")
    assert [(t.speaker, t.text) for t in turns] == [("doctor", "hi ."), ("patient", "hello , doc")]
    with pytest.raises(SystemExit):
        make_recordings.dialogue_turns("[nurse] hello")


@pytest.mark.slow
async def test_the_local_transcriber_hears_the_opening_of_a_recording(tmp_path: Path) -> None:
    """The first 30 s of the shortest recording, decoded here, through the default model
    (about 5 s on an idle machine, model load included; slow on a shared one)."""
    av = pytest.importorskip("av", reason="needs PyAV (the 'local' extra)")
    pytest.importorskip("faster_whisper", reason="needs the 'local' extra")
    from worker.providers.local_asr import LocalTranscriber

    entry = min(recordings(), key=lambda e: e["duration_s"])
    excerpt = tmp_path / "excerpt.wav"
    pcm = bytearray()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16_000)
    with av.open(str(FOLDER / entry["file"])) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                pcm += out.to_ndarray().tobytes()
            if len(pcm) >= 30 * 16_000 * 2:
                break
    with wave.open(str(excerpt), "wb") as sink:
        sink.setnchannels(1)
        sink.setsampwidth(2)
        sink.setframerate(16_000)
        sink.writeframes(bytes(pcm[: 30 * 16_000 * 2]))
    said = " ".join(t["text"] for t in entry["turns"] if t["end_s"] <= 30).lower()
    words = {w for w in said.replace(",", " ").replace(".", " ").split() if len(w) >= 6}
    assert len(words) >= 5
    transcriber = LocalTranscriber(workers=1)
    try:
        result = await transcriber.transcribe_file(excerpt, "en")
    finally:
        transcriber.close()
    heard = result.text.lower()
    found = {w for w in words if w in heard}
    assert len(found) >= 0.6 * len(words), (sorted(words - found), sorted(found))
