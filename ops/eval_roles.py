"""scribe-eval --roles: how well the worker tells the clinician from the patient.

    scribe-eval --roles [--data valid.csv] [--no-speech] [--recordings ops/recordings]

Text (ACI-Bench valid, never seen by the model, which is trained on train only):
- per turn, each alone: each `[doctor]` / `[patient]` turn classified by its own score (the
  model by itself);
- without speaker labels: each dialogue's turns in order as unlabelled segments, and the same
  cut into sentences (what a transcriber that gives no speakers might pass on), through
  worker.roles.assign_roles (sequence_roles), scored per segment against the tags;
- per speaker: each dialogue's tags replaced by anonymous labels (SPEAKER_00, SPEAKER_01, ..),
  roles assigned per speaker by worker.roles.assign_roles, scored per turn against the tags
  (`patient_guest` = other); run twice, the patient as SPEAKER_00 and the clinician as
  SPEAKER_00: the figures must agree (neither the label nor who spoke first decides).

Speech (needs espeak-ng; --no-speech skips it): short excerpts of valid dialogues spoken here with
espeak-ng in two voices (a different pair per excerpt, the clinician's voice male in some and
female in others), turn by turn, so the truth of who spoke when is known; then the local
transcriber (its default model, word times, worker/providers/diarize.py) and worker.roles.
- speaker-turn accuracy: per spoken turn, the speaker label that covers most of it, mapped to a
  true speaker by the one-to-one mapping that agrees with the most speech; a turn no segment
  covers counts as wrong (a segment in a pause, its word times off, counts for the nearest turn);
- role accuracy: per spoken turn, the role that covers most of it against the turn's tag.
Then the same two figures per recording of the recording set (ops/recordings/manifest.json, as
ops/make_recordings.py writes it with each turn's true times; --recordings DIR for another).
"""

from __future__ import annotations

import csv
import itertools
import json
import shutil
import subprocess
import tempfile
import wave
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from ops.train_roles import sentences as split_sentences
from schemas.jobs import SpeakerRole, Transcript, TranscriptSegment
from worker.roles import RoleModel, assign_roles, load_model, with_roles

if TYPE_CHECKING:
    from worker.providers.local_asr import WhisperEngine

TAG_ROLES: Final[dict[str, SpeakerRole]] = {
    "doctor": "clinician",
    "patient": "patient",
    "patient_guest": "other",
}
# ACI-Bench valid D2N082: its [doctor] turns are the patient's words and its [patient] turns the
# clinician's ("[doctor] i'm just anxious ... my pcp told me that i had some abnormal lab work").
DEFAULT_RECORDINGS: Final = Path(__file__).resolve().parent / "recordings"
SWAPPED_IN_SOURCE: Final = frozenset({"D2N082"})
# (encounter, turns, clinician's voice, patient's voice); a guest, if any, gets GUEST_VOICE.
EXCERPTS: Final = (
    ("D2N072", 24, "en-us+m3", "en-us+f2"),
    ("D2N068", 24, "en-us+f3", "en-us+m1"),
    ("D2N080", 24, "en-gb+m2", "en-us+f4"),
    ("D2N073", 24, "en-us+f1", "en-gb+m3"),
)
GUEST_VOICE: Final = "en-us+m7"
SPEED_WPM: Final = 175
PAUSE_S: Final = 0.3


@dataclass(frozen=True)
class TruthTurn:
    speaker: str  # the ACI-Bench tag
    start_s: float
    end_s: float
    text: str

    @property
    def middle_s(self) -> float:
        return (self.start_s + self.end_s) / 2

    @property
    def role(self) -> SpeakerRole:
        return TAG_ROLES.get(self.speaker, "other")


def dialogues(path: Path) -> dict[str, list[tuple[str, str]]]:
    """encounter id -> its (tag, text) turns with words."""
    out: dict[str, list[tuple[str, str]]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            turns: list[tuple[str, str]] = []
            for line in row["dialogue"].splitlines():
                line = line.strip()
                tag, _, text = line[1:].partition("]")
                if line.startswith("[") and text.strip(" .,-"):
                    turns.append((tag.strip(), text.strip()))
            out[row["encounter_id"]] = turns
    return out


def per_turn_accuracy(
    data: dict[str, list[tuple[str, str]]], model: RoleModel | None = None
) -> tuple[float, int]:
    model = model or load_model()
    right = total = 0
    for turns in data.values():
        for tag, text in turns:
            score = model.score(text)
            if tag in ("doctor", "patient") and score is not None:
                total += 1
                right += (score > 0) == (tag == "doctor")
    return right / max(1, total), total


def segments_of(turns: Sequence[tuple[str, str]], sentences: bool) -> list[tuple[str, str]]:
    """(tag, text) per segment: the turns themselves, or each turn cut after every sentence end
    (ops.train_roles.sentences), as a transcriber that gives no speakers might cut it."""
    if not sentences:
        return list(turns)
    return [(tag, piece) for tag, text in turns for piece in split_sentences(text)]


def unlabelled_accuracy(
    data: dict[str, list[tuple[str, str]]],
    sentences: bool,
    skip: frozenset[str],
    model: RoleModel | None = None,
) -> tuple[float, int]:
    """Each dialogue's segments in order without speaker labels, through assign_roles as the
    worker gets an unlabelled transcript; scored on the `[doctor]` / `[patient]` segments (an
    unknown role counts wrong)."""
    right = total = 0
    for encounter, turns in sorted(data.items()):
        if encounter in skip:
            continue
        segments = segments_of(turns, sentences)
        roles = assign_roles([(None, text) for _, text in segments], model)
        for (tag, _), role in zip(segments, roles, strict=True):
            if tag in ("doctor", "patient"):
                total += 1
                right += role == TAG_ROLES[tag]
    return right / max(1, total), total


def per_speaker_accuracy(
    data: dict[str, list[tuple[str, str]]], patient_first: bool, skip: frozenset[str]
) -> tuple[float, int, dict[str, float]]:
    """Accuracy over all turns, the turn count, and the dialogues under 100 %."""
    right = total = 0
    misses: dict[str, float] = {}
    first = "patient" if patient_first else "doctor"
    for encounter, turns in sorted(data.items()):
        if encounter in skip:
            continue
        order = sorted({tag for tag, _ in turns}, key=lambda t: (t != first, t))
        labels = {tag: f"SPEAKER_{n:02d}" for n, tag in enumerate(order)}
        roles = assign_roles([(labels[tag], text) for tag, text in turns])
        good = sum(r == TAG_ROLES.get(t, "other") for r, (t, _) in zip(roles, turns, strict=True))
        right += good
        total += len(turns)
        if good < len(turns):
            misses[encounter] = good / len(turns)
    return right / max(1, total), total, misses


def _covers(
    truth: Sequence[TruthTurn], segments: Sequence[TranscriptSegment]
) -> list[tuple[dict[str, float], dict[str, float]]]:
    """Per turn, the seconds of it covered by each speaker label and by each role; a segment that
    overlaps no turn (word times a few tenths early or late, in a pause) counts for the turn
    nearest to its middle."""
    covers: list[tuple[dict[str, float], dict[str, float]]] = [
        (defaultdict(float), defaultdict(float)) for _ in truth
    ]
    for s in segments:
        overlaps = [min(s.end, t.end_s) - max(s.start, t.start_s) for t in truth]
        hits = [(i, o) for i, o in enumerate(overlaps) if o > 0]
        if not hits and truth:
            middle = (s.start + s.end) / 2
            nearest = min(range(len(truth)), key=lambda i: abs(truth[i].middle_s - middle))
            hits = [(nearest, max(s.end - s.start, 0.01))]
        for index, seconds in hits:
            covers[index][0][s.speaker or ""] += seconds
            covers[index][1][s.role or "unknown"] += seconds
    return covers


def score_recording(
    segments: Sequence[TranscriptSegment], truth: Sequence[TruthTurn]
) -> tuple[float, float]:
    """(speaker-turn accuracy, role accuracy), per spoken turn, as the module docstring says."""
    covers = _covers(truth, segments)
    agreement: dict[tuple[str, str], float] = defaultdict(float)
    for turn, (speakers, _) in zip(truth, covers, strict=True):
        for label, seconds in speakers.items():
            agreement[(label, turn.speaker)] += seconds
    labels = sorted({label for speakers, _ in covers for label in speakers})
    tags = sorted({turn.speaker for turn in truth})
    best: dict[str, str] = {}
    best_score = -1.0
    for chosen in itertools.permutations(tags, min(len(tags), len(labels))):
        for ordered in itertools.permutations(labels, len(chosen)):
            score = sum(agreement[(label, tag)] for label, tag in zip(ordered, chosen, strict=True))
            if score > best_score:
                best_score, best = score, dict(zip(ordered, chosen, strict=True))
    speaker_right = role_right = 0
    for turn, (speakers, roles) in zip(truth, covers, strict=True):
        if speakers:
            speaker_right += best.get(max(speakers, key=speakers.__getitem__)) == turn.speaker
            role_right += max(roles, key=roles.__getitem__) == turn.role
    count = max(1, len(truth))
    return speaker_right / count, role_right / count


def _speak(text: str, voice: str, target: Path) -> None:
    subprocess.run(  # noqa: S603 - fixed program, arguments from the data set, no shell
        ["espeak-ng", "-v", voice, "-s", str(SPEED_WPM), "-w", str(target), text],  # noqa: S607
        check=True,
        capture_output=True,
    )


def synthesise(
    turns: Sequence[tuple[str, str]], voices: dict[str, str], work: Path
) -> tuple[Path, list[TruthTurn]]:
    """The turns spoken one by one into one WAV (espeak-ng's rate, mono), with their times."""
    frames = bytearray()
    rate = 0
    truth: list[TruthTurn] = []
    for index, (tag, text) in enumerate(turns):
        part = work / f"turn-{index:03d}.wav"
        _speak(text, voices.get(tag, GUEST_VOICE), part)
        with wave.open(str(part), "rb") as spoken:
            rate = spoken.getframerate()
            samples = spoken.readframes(spoken.getnframes())
        gap = b"\x00\x00" * int(PAUSE_S * rate)
        start = len(frames) // 2 + len(gap)
        frames += gap + samples
        truth.append(TruthTurn(tag, start / rate, len(frames) // 2 / rate, text))
    target = work / "dialogue.wav"
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return target, truth


def _transcribe(path: Path, engine: WhisperEngine) -> tuple[Transcript, float]:
    result = engine.transcribe(path)
    transcript = Transcript(
        provider="local",
        text=result.text,
        segments=tuple(
            TranscriptSegment(start=s.start, end=s.end, text=s.text, speaker=s.speaker, role=s.role)
            for s in result.segments
        ),
        duration_s=result.duration_s,
    )
    return with_roles(transcript), result.duration_s


def _report_speech(
    name: str, path: Path, truth: list[TruthTurn], engine: WhisperEngine, out: TextIO
) -> tuple[int, float, float]:
    transcript, duration = _transcribe(path, engine)
    speaker_acc, role_acc = score_recording(transcript.segments, truth)
    voices = len({s.speaker for s in transcript.segments})
    print(
        f"speech {name}: {duration:.0f} s, {len(truth)} turns, {voices} speakers found, "
        f"speaker-turn accuracy {100 * speaker_acc:.1f} %, role accuracy {100 * role_acc:.1f} %",
        file=out,
    )
    return len(truth), speaker_acc, role_acc


def _total(name: str, rows: list[tuple[int, float, float]], out: TextIO) -> None:
    turns = sum(n for n, _, _ in rows)
    if turns:
        speaker = sum(n * s for n, s, _ in rows) / turns
        role = sum(n * r for n, _, r in rows) / turns
        print(
            f"speech {name} all: {turns} turns, speaker-turn accuracy {100 * speaker:.1f} %, "
            f"role accuracy {100 * role:.1f} %",
            file=out,
        )


def run_speech(data: dict[str, list[tuple[str, str]]], engine: WhisperEngine, out: TextIO) -> None:
    if shutil.which("espeak-ng") is None:
        print(
            "speech: espeak-ng is not installed (apt-get install -y espeak-ng); skipped", file=out
        )
        return
    rows = []
    for encounter, count, clinician, patient in EXCERPTS:
        voices = {"doctor": clinician, "patient": patient}
        with tempfile.TemporaryDirectory() as tmp:
            path, truth = synthesise(data[encounter][:count], voices, Path(tmp))
            name = f"{encounter}[:{count}] ({clinician} / {patient})"
            rows.append(_report_speech(name, path, truth, engine, out))
    _total("espeak excerpts", rows, out)


def run_recordings(folder: Path, engine: WhisperEngine, out: TextIO) -> None:
    manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    rows = []
    for entry in manifest["recordings"]:
        truth = [
            TruthTurn(t["speaker"], float(t["start_s"]), float(t["end_s"]), t["text"])
            for t in entry["turns"]
        ]
        rows.append(_report_speech(str(entry["id"]), folder / entry["file"], truth, engine, out))
    _total(f"recordings {folder.name}", rows, out)


def run_roles(data_path: Path, speech: bool, recordings: Path | None, out: TextIO) -> int:
    data = dialogues(data_path)
    accuracy, turns = per_turn_accuracy(data)
    print(f"text per turn, each alone: {100 * accuracy:.1f} % of {turns} turns", file=out)
    for sentences, unit in ((False, "turns"), (True, "sentences")):
        accuracy, turns = unlabelled_accuracy(data, sentences, frozenset())
        clean, clean_turns = unlabelled_accuracy(data, sentences, SWAPPED_IN_SOURCE)
        print(
            f"text without speaker labels, {unit} in order: {100 * accuracy:.1f} % of {turns} "
            f"{unit}; without {', '.join(sorted(SWAPPED_IN_SOURCE))}: {100 * clean:.1f} % of "
            f"{clean_turns}",
            file=out,
        )
    for patient_first in (True, False):
        first = "patient" if patient_first else "clinician"
        accuracy, turns, misses = per_speaker_accuracy(data, patient_first, frozenset())
        worst = ", ".join(f"{k} {100 * v:.0f} %" for k, v in sorted(misses.items()))
        print(
            f"text per speaker ({first}'s label first): {100 * accuracy:.1f} % of {turns} turns"
            f"; dialogues under 100 %: {worst or 'none'}",
            file=out,
        )
    accuracy, turns, _ = per_speaker_accuracy(data, True, SWAPPED_IN_SOURCE)
    print(
        f"text per speaker, without {', '.join(sorted(SWAPPED_IN_SOURCE))} (tags swapped in the "
        f"source): {100 * accuracy:.1f} % of {turns} turns",
        file=out,
    )
    if speech:
        from worker.providers.local_asr import WhisperEngine

        engine = WhisperEngine()  # the default model and settings, loaded once
        print(f"speech: local transcriber, model {engine.model_name}", file=out)
        run_speech(data, engine, out)
        folder = recordings or DEFAULT_RECORDINGS
        if (folder / "manifest.json").is_file():
            run_recordings(folder, engine, out)
    return 0


def cross_validate(train_path: Path, folds: int, out: TextIO) -> None:
    """The text figures of run_roles on ACI-Bench train, each fold of dialogues (every folds-th
    one) scored by a model fitted on the others with ops.train_roles: what tuning is measured
    on, so that valid stays unseen."""
    from ops.train_roles import fit

    data = dialogues(train_path)
    keys = sorted(data)
    right: dict[str, float] = defaultdict(float)
    seen: dict[str, int] = defaultdict(int)
    for fold in range(folds):
        held = {k: data[k] for k in keys[fold::folds]}
        raw = fit(t for k in keys if k not in held for t in data[k])
        bias, weights = raw["bias"], raw["weights"]
        assert isinstance(bias, float)
        assert isinstance(weights, dict)
        model = RoleModel(bias, weights)
        for name, (accuracy, count) in (
            ("per turn, each alone", per_turn_accuracy(held, model)),
            ("without labels, turns", unlabelled_accuracy(held, False, frozenset(), model)),
            ("without labels, sentences", unlabelled_accuracy(held, True, frozenset(), model)),
        ):
            right[name] += accuracy * count
            seen[name] += count
    for name, count in seen.items():
        print(f"train {folds}-fold {name}: {100 * right[name] / max(1, count):.2f} %", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    """python -m ops.eval_roles --cv K [--train train.csv]: cross_validate (the rest of the
    figures are scribe-eval --roles)."""
    import argparse
    import sys

    from ops.train_roles import DEFAULT_TRAIN

    parser = argparse.ArgumentParser(prog="eval_roles", description=cross_validate.__doc__)
    parser.add_argument("--cv", type=int, default=5, metavar="K")
    parser.add_argument("--train", type=Path, default=DEFAULT_TRAIN)
    args = parser.parse_args(argv)
    if args.cv < 2 or not args.train.is_file():
        print(
            "eval_roles: --cv needs at least 2 folds and --train an existing file", file=sys.stderr
        )
        return 2
    cross_validate(args.train, args.cv, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
