"""scribe-eval --asr: offline speech recognition over the recording set (ops/recordings/).

    scribe-eval --asr [--recordings ops/recordings] [--asr-configs base:5:none:vad,...]
                      [--asr-only ID,...] [--asr-chunked] [--asr-notes] [--asr-keep DIR]

Per configuration (model:beam:prompt:vad; `tiny.en:1:none:novad` is what the worker ran before
the model setting existed), over every recording of the manifest:
- WER: jiwer over the whole set (errors / reference words), both sides normalised by
  ops/eval.py's _words (lower case, [a-z0-9'] words, speaker tags dropped); per recording too;
- RTF: wall seconds of transcription / seconds of audio, the model loaded beforehand; and
  cpu_rtf: the process's CPU seconds / audio seconds / cores, which is what the RTF would be on
  an otherwise idle machine of that many cores (this one is shared, so wall time is noisy);
- speaker-turn and role accuracy against the manifest's turns (ops/eval_roles.py
  score_recording) when the transcript's segments carry speakers (worker/providers/diarize.py)
  and worker.roles is there to assign roles.
--asr-chunked: the recordings longer than SCRIBE_LOCAL_CHUNK_S (default 300 s) once more, split
  by worker/chunking.py and stitched, WER against the single pass of the same configuration.
--asr-notes: the local note (LocalSummarizer's SUMMARY, as ops/eval.py scores it) written from
  each recording's ASR transcript and from its dialogue's text, ROUGE-1 of each against the
  ACI-Bench human note.
--asr-keep DIR: each transcript saved under DIR, and reused when it is there (the note and the
  roles scored again after a change to them, without running the model; RTF is then the saving
  run's).

The last line is always `asr <config> wer=..% rtf=.. cpu_rtf=..` for the last configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Final, TextIO

from schemas.jobs import JobRequest, Transcript
from worker import constants as c

REPO: Final = Path(__file__).resolve().parent.parent
DEFAULT_RECORDINGS: Final = REPO / "ops" / "recordings"
DEFAULT_CONFIGS: Final = "tiny.en:1:none:novad,base:5:none:vad"


@dataclass(frozen=True)
class AsrConfig:
    model: c.LocalAsrModel
    beam_size: int
    prompt: str | None
    vad: bool

    @property
    def name(self) -> str:
        vad = "vad" if self.vad else "novad"
        return f"{self.model}:{self.beam_size}:{self.prompt or 'none'}:{vad}"


def parse_configs(text: str) -> list[AsrConfig]:
    configs: list[AsrConfig] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        model, beam, prompt, vad = item.split(":")
        chosen = [m for m in c.LOCAL_ASR_MODELS if m == model]
        if not chosen or vad not in ("vad", "novad"):
            raise argparse.ArgumentTypeError(f"bad configuration {item!r}")
        configs.append(
            AsrConfig(chosen[0], int(beam), None if prompt == "none" else prompt, vad == "vad")
        )
    return configs


@dataclass
class Recording:
    id: str
    path: Path
    duration_s: float
    encounter_id: str
    split: str
    reference: str
    turns: list[dict[str, Any]]


def read_manifest(folder: Path, only: Sequence[str] = ()) -> list[Recording]:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return [
        Recording(
            id=e["id"],
            path=folder / e["file"],
            duration_s=float(e["duration_s"]),
            encounter_id=e["encounter_id"],
            split=e["split"],
            reference=e["reference_text"],
            turns=e["turns"],
        )
        for e in manifest["recordings"]
        if not only or e["id"] in only
    ]


@dataclass
class Heard:
    """One recording through one configuration."""

    recording: Recording
    transcript: Transcript
    wall_s: float
    cpu_s: float


@dataclass
class Totals:
    heard: list[Heard] = field(default_factory=list)

    def audio_s(self) -> float:
        return sum(h.recording.duration_s for h in self.heard)


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER (errors over all reference words), normalised as ops/eval.py does."""
    import jiwer

    from ops.eval import _words

    return float(jiwer.wer([_words(r) for r in references], [_words(h) for h in hypotheses]))


def _roles() -> Any:
    """worker.roles.with_roles and ops.eval_roles.score_recording, or None where either is
    missing (the speaker-role work is not in this tree)."""
    try:
        return import_module("worker.roles").with_roles, import_module(
            "ops.eval_roles"
        ).score_recording
    except (ImportError, AttributeError):
        return None


def _transcriber(config: AsrConfig) -> Any:
    from worker.providers.local_asr import LocalTranscriber

    return LocalTranscriber(
        workers=1,
        model=config.model,
        beam_size=config.beam_size,
        prompt=config.prompt,
        vad=config.vad,
    )


def _job_and_audio(path: Path, duration_s: float) -> tuple[JobRequest, Any]:
    from worker.providers.base import PreparedAudio

    job = JobRequest.model_validate(
        {
            "jobId": str(uuid.uuid5(uuid.NAMESPACE_URL, path.name)),
            "audio": {"path": str(path)},
            "providers": {"transcriber": "local", "summarizer": "local", "note": "local"},
        }
    )
    audio = PreparedAudio(
        path=path,
        size_bytes=path.stat().st_size,
        duration_s=duration_s,
        mime_type="audio/ogg" if path.suffix == ".ogg" else "audio/wav",
        file_name=path.name,
        source_url=None,
    )
    return job, audio


async def _submit(transcriber: Any, path: Path, duration_s: float) -> Transcript:
    """The transcript exactly as the worker's transcribe stage gets it from the provider."""
    from worker.providers.base import Transcribed

    job, audio = _job_and_audio(path, duration_s)
    result = await transcriber.submit(job, audio)
    if not isinstance(result, Transcribed):
        raise SystemExit("scribe-eval --asr: the local transcriber did not answer at once")
    transcript: Transcript = result.transcript
    return transcript


def _kept_path(keep: Path, config: AsrConfig, recording: Recording) -> Path:
    return keep / config.name.replace(":", "_") / f"{recording.id}.json"


def save_heard(keep: Path, config: AsrConfig, heard: Heard) -> None:
    """One recording's transcript and timing, so that --asr-notes and the role figures can be
    computed again (after a change to the note or the roles) without running the model."""
    path = _kept_path(keep, config, heard.recording)
    path.parent.mkdir(parents=True, exist_ok=True)
    transcript = json.loads(heard.transcript.to_wire())
    record = {"wallS": heard.wall_s, "cpuS": heard.cpu_s, "transcript": transcript}
    path.write_text(json.dumps(record), encoding="utf-8")


def load_heard(keep: Path, config: AsrConfig, recording: Recording) -> Heard | None:
    """A transcript saved by save_heard for this configuration and recording, or None."""
    path = _kept_path(keep, config, recording)
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    transcript = _roles_again(Transcript.model_validate(record["transcript"]))
    return Heard(recording, transcript, float(record["wallS"]), float(record["cpuS"]))


def _roles_again(transcript: Transcript) -> Transcript:
    """A kept transcript's roles given again by today's worker.roles, as the local transcriber
    gives them (labelled_by_role over the diarizer's speakers; renaming keeps the speakers
    apart, so the grouping is the diarizer's): a change to the roles shows without the model.
    A change to the diarizer (worker/providers/diarize.py) needs a new transcription."""
    from worker.roles import labelled_by_role, speaker_lines

    segments = transcript.segments
    if not any(s.speaker for s in segments):
        return transcript
    labels = labelled_by_role([(s.speaker or "", s.text) for s in segments])
    again = tuple(
        s.model_copy(update={"speaker": label, "role": role})
        for s, (label, role) in zip(segments, labels, strict=True)
    )
    return transcript.model_copy(
        update={"segments": again, "text": speaker_lines(again) or transcript.text}
    )


async def transcribe_all(
    config: AsrConfig, recordings: Sequence[Recording], keep: Path | None = None
) -> Totals:
    """Every recording through the configuration; with `keep`, transcripts saved there are
    reused (their timing is the run that made them) and new ones saved."""
    totals = Totals()
    kept = {r.id: load_heard(keep, config, r) if keep else None for r in recordings}
    missing = [r for r in recordings if kept[r.id] is None]
    heard = {r.id: h for r, h in ((r, kept[r.id]) for r in recordings) if h is not None}
    if missing:
        transcriber = _transcriber(config)
        try:
            await transcriber.transcribe_file(missing[0].path, "en")  # loads the model
            for recording in missing:
                wall, cpu = time.perf_counter(), time.process_time()
                transcript = await _submit(transcriber, recording.path, recording.duration_s)
                done = Heard(
                    recording, transcript, time.perf_counter() - wall, time.process_time() - cpu
                )
                if keep is not None:
                    save_heard(keep, config, done)
                heard[recording.id] = done
        finally:
            transcriber.close()
    totals.heard.extend(heard[r.id] for r in recordings)
    return totals


def report(config: AsrConfig, totals: Totals, out: TextIO) -> float:
    cores = os.cpu_count() or 1
    roles = _roles()
    for h in totals.heard:
        line = (
            f"  {h.recording.id}: {h.recording.duration_s / 60:.1f} min "
            f"wer={100 * wer([h.recording.reference], [h.transcript.text]):.2f}% "
            f"rtf={h.wall_s / h.recording.duration_s:.3f}"
        )
        if roles is not None and any(s.speaker for s in h.transcript.segments):
            line += _role_figures(roles, h)
        print(line, file=out, flush=True)
    audio = totals.audio_s()
    total_wer = wer(
        [h.recording.reference for h in totals.heard], [h.transcript.text for h in totals.heard]
    )
    wall = sum(h.wall_s for h in totals.heard)
    cpu = sum(h.cpu_s for h in totals.heard)
    print(
        f"asr {config.name} wer={100 * total_wer:.2f}% rtf={wall / audio:.3f} "
        f"cpu_rtf={cpu / audio / cores:.3f} ({len(totals.heard)} recordings, "
        f"{audio / 60:.1f} min, {cores} cores, load {os.getloadavg()[0]:.1f})",
        file=out,
        flush=True,
    )
    return total_wer


def _role_figures(roles: Any, h: Heard) -> str:
    with_roles, score_recording = roles
    truth_type = import_module("ops.eval_roles").TruthTurn
    truth = [
        truth_type(t["speaker"], float(t["start_s"]), float(t["end_s"]), t["text"])
        for t in h.recording.turns
    ]
    speaker_acc, role_acc = score_recording(with_roles(h.transcript).segments, truth)
    return f" speaker_turns={100 * speaker_acc:.1f}% roles={100 * role_acc:.1f}%"


async def _chunked(config: AsrConfig, recording: Recording, chunk_s: float) -> str:
    from worker import chunking

    transcriber = _transcriber(config)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            decoded = await asyncio.to_thread(
                chunking.decode_to_pcm,
                recording.path,
                Path(tmp) / "audio.pcm",
                recording.duration_s + 60,
                chunking.DECODE_TIMEOUT_S,
            )
            limit = chunking.ChunkLimit(chunk_s, chunking.NO_BYTE_LIMIT)
            spans = chunking.plan_chunks(decoded.energies, decoded.samples, limit.max_samples())
            stitched: Transcript | None = None
            for span in spans:
                target = Path(tmp) / f"chunk-{span.index}.wav"
                await asyncio.to_thread(chunking.write_chunk_wav, decoded, span, target)
                part = await _submit(transcriber, target, span.duration_s)
                stitched = chunking.stitch(stitched, part, span.start_s, span.end_s)
        return stitched.text if stitched is not None else ""
    finally:
        transcriber.close()


def run_chunked(config: AsrConfig, totals: Totals, chunk_s: float, out: TextIO) -> None:
    for h in totals.heard:
        if h.recording.duration_s <= chunk_s:
            continue
        text = asyncio.run(_chunked(config, h.recording, chunk_s))
        single = wer([h.recording.reference], [h.transcript.text])
        chunked = wer([h.recording.reference], [text])
        print(
            f"chunked {config.name} {h.recording.id} ({h.recording.duration_s / 60:.1f} min, "
            f"chunks <= {chunk_s:.0f} s): wer single-pass={100 * single:.2f}% "
            f"chunked={100 * chunked:.2f}% (difference {100 * (chunked - single):+.2f} points)",
            file=out,
            flush=True,
        )


def run_notes(config: AsrConfig, totals: Totals, aci: Path, out: TextIO) -> None:
    from rouge_score import rouge_scorer

    from ops.eval import local_note, read_rows

    notes = {
        row.encounter_id: row
        for split in ("train", "valid")
        for row in read_rows(aci / f"{split}.csv")
    }
    roles = _roles()
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    text_r1 = audio_r1 = 0.0
    for h in totals.heard:
        row = notes[h.recording.encounter_id]
        transcript = roles[0](h.transcript) if roles is not None else h.transcript
        from_text = scorer.score(row.note, local_note(row.dialogue))["rouge1"].fmeasure
        from_audio = scorer.score(row.note, local_note(transcript.text))["rouge1"].fmeasure
        text_r1 += from_text
        audio_r1 += from_audio
        print(
            f"  note {h.recording.id}: rouge1 from text={100 * from_text:.2f} "
            f"from audio={100 * from_audio:.2f}",
            file=out,
            flush=True,
        )
    n = max(1, len(totals.heard))
    print(
        f"note {config.name} rouge1 from text={100 * text_r1 / n:.2f} "
        f"from audio={100 * audio_r1 / n:.2f} "
        f"(difference {100 * (audio_r1 - text_r1) / n:+.2f} points, {n} recordings)",
        file=out,
        flush=True,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--asr-configs",
        type=parse_configs,
        default=parse_configs(DEFAULT_CONFIGS),
        help="--asr: model:beam:prompt:vad,... (default %(default)s)",
    )
    parser.add_argument("--asr-only", default="", help="--asr: recording ids, comma-separated")
    parser.add_argument("--asr-chunked", action="store_true", help="--asr: chunked vs single")
    parser.add_argument("--asr-notes", action="store_true", help="--asr: note ROUGE from audio")
    parser.add_argument(
        "--asr-keep",
        type=Path,
        default=None,
        help="--asr: folder where transcripts are saved and, when there, reused (no model run)",
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    folder: Path = args.recordings or DEFAULT_RECORDINGS
    recordings = read_manifest(folder, [i for i in args.asr_only.split(",") if i])
    if not recordings:
        print("scribe-eval --asr: no recordings", file=out)
        return 2
    chunk_s = float(os.environ.get("SCRIBE_LOCAL_CHUNK_S", c.DEFAULT_LOCAL_CHUNK_S))
    print(
        f"# {len(recordings)} recordings from {folder.name}, "
        f"{sum(r.duration_s for r in recordings) / 60:.1f} min of audio",
        file=out,
        flush=True,
    )
    for config in args.asr_configs:
        totals = asyncio.run(transcribe_all(config, recordings, args.asr_keep))
        if args.asr_chunked:
            run_chunked(config, totals, chunk_s, out)
        if args.asr_notes:
            run_notes(config, totals, args.data.parent, out)
        report(config, totals, out)
    return 0
