"""Regenerate ops/recordings/: ACI-Bench consultations spoken by espeak-ng, turn by turn.

    python -m ops.make_recordings [--aci-bench ../shared/data/aci-bench] [--out ops/recordings]

Each dialogue's turns are spoken one at a time (doctor, patient and a patient's guest in three
espeak-ng voices that differ in voice variant and pitch), the leading and trailing silence of each
turn trimmed, a fixed pause put between turns, and the whole encoded as Opus in Ogg (16 kHz mono,
16 kbit/s, ffmpeg with bit-exact flags). Because the turns are synthesised one by one, the truth
of who spoke when is known to the sample; it goes into manifest.json beside the files with the
reference text. Deterministic: the same espeak-ng and ffmpeg versions give the same bytes.

Needs espeak-ng and ffmpeg (Debian: apt-get install -y espeak-ng ffmpeg). The generated files are
committed, so neither the tests nor CI need them; run this only to change the set.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
DEFAULT_ACI: Final = REPO.parent / "shared" / "data" / "aci-bench"
DEFAULT_OUT: Final = REPO / "ops" / "recordings"
MANIFEST: Final = "manifest.json"

ESPEAK_RATE: Final = 22_050  # espeak-ng's own output rate
SPEED_WPM: Final = 150
PAUSE_S: Final = 0.4
SILENCE_LEVEL: Final = 300  # |sample| at or below this (int16) counts as silence when trimming
OPUS_BITRATE: Final = "16k"
OUT_RATE: Final = 16_000

# (recording id, split, ACI-Bench encounter id): two long train dialogues (> 10 min spoken),
# six valid ones of 3 to 10 minutes.
RECORDINGS: Final = (
    ("aci-train-D2N021", "train", "D2N021"),
    ("aci-train-D2N022", "train", "D2N022"),
    ("aci-valid-D2N087", "valid", "D2N087"),
    ("aci-valid-D2N070", "valid", "D2N070"),
    ("aci-valid-D2N069", "valid", "D2N069"),
    ("aci-valid-D2N072", "valid", "D2N072"),
    ("aci-valid-D2N079", "valid", "D2N079"),
    ("aci-valid-D2N083", "valid", "D2N083"),
)


@dataclass(frozen=True)
class Voice:
    name: str  # espeak-ng voice+variant
    pitch: int  # espeak-ng -p, 0..99


# Two voices that differ in accent, variant and pitch; the clinician speaks with the first in
# even-numbered recordings and with the second in odd ones (who sounds like what must not decide
# the role). A patient's guest always has the third.
VOICE_PAIR: Final = (Voice("en-us", 40), Voice("en-gb-x-rp+f3", 65))
GUEST_VOICE: Final = Voice("en-us+m7", 50)
ROLES: Final = {"doctor": "clinician", "patient": "patient", "patient_guest": "other"}

_TURN_RE: Final = re.compile(r"^\[(\w+)\]\s*(.*)$")


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str


def dialogue_turns(dialogue: str) -> list[Turn]:
    """The spoken turns of an ACI-Bench dialogue; a tag with nothing said is left out."""
    turns: list[Turn] = []
    for line in dialogue.splitlines():
        match = _TURN_RE.match(line.strip())
        if match is None:
            continue
        speaker, text = match.group(1), match.group(2).strip(" -")
        if not re.search(r"[a-z0-9]", text, flags=re.IGNORECASE):
            continue
        if speaker not in ROLES:
            raise SystemExit(f"make_recordings: unknown speaker tag [{speaker}]")
        turns.append(Turn(speaker, text))
    return turns


def voices_for(index: int) -> dict[str, Voice]:
    clinician, patient = VOICE_PAIR if index % 2 == 0 else VOICE_PAIR[::-1]
    return {"doctor": clinician, "patient": patient, "patient_guest": GUEST_VOICE}


def speak(turn: Turn, voice: Voice, work: Path) -> bytes:
    """One turn as 16-bit mono PCM at ESPEAK_RATE, its leading and trailing silence trimmed."""
    out = work / "turn.wav"
    subprocess.run(  # noqa: S603 - fixed program, arguments from the data set, no shell
        [  # noqa: S607 - espeak-ng from PATH, as installed by apt
            "espeak-ng",
            "-v",
            voice.name,
            "-p",
            str(voice.pitch),
            "-s",
            str(SPEED_WPM),
            "-w",
            str(out),
            "--stdin",
        ],
        input=turn.text.encode("utf-8"),
        check=True,
    )
    with wave.open(str(out), "rb") as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (ESPEAK_RATE, 1, 2):
            raise SystemExit("make_recordings: espeak-ng wrote an unexpected WAV format")
        pcm = wav.readframes(wav.getnframes())
    samples = memoryview(pcm).cast("h")
    first = next((i for i in range(len(samples)) if abs(samples[i]) > SILENCE_LEVEL), None)
    if first is None:
        return b""
    last = next(i for i in range(len(samples) - 1, -1, -1) if abs(samples[i]) > SILENCE_LEVEL)
    return pcm[2 * first : 2 * (last + 1)]


def synthesise(
    turns: Sequence[Turn], voices: dict[str, Voice], work: Path
) -> tuple[bytes, list[dict[str, object]]]:
    """The whole dialogue as PCM and its turn timeline (seconds, 3 decimals)."""
    pause = b"\x00\x00" * int(PAUSE_S * ESPEAK_RATE)
    pcm = bytearray(pause)
    timeline: list[dict[str, object]] = []
    for turn in turns:
        spoken = speak(turn, voices[turn.speaker], work)
        if not spoken:
            continue
        start = len(pcm) // 2
        pcm += spoken
        end = len(pcm) // 2
        pcm += pause
        timeline.append(
            {
                "speaker": turn.speaker,
                "role": ROLES[turn.speaker],
                "start_s": round(start / ESPEAK_RATE, 3),
                "end_s": round(end / ESPEAK_RATE, 3),
                "text": turn.text,
            }
        )
    return bytes(pcm), timeline


def encode(pcm: bytes, work: Path, target: Path) -> None:
    source = work / "dialogue.wav"
    with wave.open(str(source), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(ESPEAK_RATE)
        wav.writeframes(pcm)
    subprocess.run(  # noqa: S603 - fixed program and arguments, no shell
        [  # noqa: S607 - ffmpeg from PATH, as installed by apt
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(source),
            "-map_metadata",
            "-1",
            "-fflags",
            "+bitexact",
            "-flags:a",
            "+bitexact",
            "-ar",
            str(OUT_RATE),
            "-ac",
            "1",
            "-c:a",
            "libopus",
            "-b:a",
            OPUS_BITRATE,
            "-application",
            "voip",
            str(target),
        ],
        check=True,
    )


def read_dialogues(aci: Path, split: str) -> dict[str, str]:
    with (aci / f"{split}.csv").open(newline="", encoding="utf-8") as f:
        return {row["encounter_id"]: row["dialogue"] for row in csv.DictReader(f)}


def build(aci: Path, out: Path) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    splits = {split: read_dialogues(aci, split) for split in ("train", "valid")}
    entries: list[dict[str, object]] = []
    for index, (rec_id, split, encounter) in enumerate(RECORDINGS):
        turns = dialogue_turns(splits[split][encounter])
        voices = voices_for(index)
        with tempfile.TemporaryDirectory() as tmp:
            pcm, timeline = synthesise(turns, voices, Path(tmp))
            target = out / f"{rec_id}.ogg"
            encode(pcm, Path(tmp), target)
        entries.append(
            {
                "id": rec_id,
                "file": target.name,
                "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
                "dataset": "ACI-Bench",
                "split": split,
                "encounter_id": encounter,
                "duration_s": round(len(pcm) / 2 / ESPEAK_RATE, 3),
                "voices": {k: {"voice": v.name, "pitch": v.pitch} for k, v in voices.items()},
                "reference_text": "\n".join(f"{t['speaker']}: {t['text']}" for t in timeline),
                "turns": timeline,
            }
        )
        print(f"{target.name}: {len(pcm) / 2 / ESPEAK_RATE / 60:.1f} min, {len(timeline)} turns")
    manifest: dict[str, object] = {
        "generator": "ops/make_recordings.py",
        "espeak_ng": _version(["espeak-ng", "--version"]),
        "ffmpeg": _version(["ffmpeg", "-version"]),
        "speed_wpm": SPEED_WPM,
        "pause_s": PAUSE_S,
        "encoding": f"Opus in Ogg, {OUT_RATE} Hz mono, {OPUS_BITRATE}bit/s",
        "recordings": entries,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def _version(command: list[str]) -> str:
    found = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    return found.stdout.split("\n")[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make_recordings", description=__doc__.split("\n")[0])
    parser.add_argument("--aci-bench", type=Path, default=DEFAULT_ACI)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    build(args.aci_bench, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
