"""scribe-eval: how good is the offline (local) path, measured on ACI-Bench.

    scribe-eval [--data valid.csv] [--train train.csv]   # notes: ROUGE + grounding
    scribe-eval --asr [--recordings ops/recordings]   # local ASR per model (ops/eval_asr.py)
    scribe-eval --asr --audio ops/samples/consultation.wav   # one recording: WER + speed
    scribe-eval --roles [--no-speech] [--recordings DIR]   # speaker roles (ops/eval_roles.py)

Rows (all computed in the same run):
- ours: LocalSummarizer's SUMMARY output (a sectioned note) for each dialogue;
- transcript: the dialogue itself copied as the note (a floor);
- human: the human-written reference notes themselves (ROUGE 100 by definition; their
  grounding figures are the bar ours must not fall below).

ROUGE-1/2/Lsum as ACI-Bench's evaluation computes them: the `rouge-score` package, no stemming,
its default tokenizer, rougeLsum over newline-split notes, F-measure per note, mean over notes,
in percent.

Grounding:
- unsupported: per note, the share of content tokens (lower-cased [a-z0-9]+ minus English stop
  words and digits, Porter-stemmed) found neither in that encounter's dialogue (same processing)
  nor among stems occurring in >= 30 % of train.csv notes (section names, stock phrasing); mean
  over notes, percent.
- stray_numbers: per note, the number of distinct numbers written in the note (digits or number
  words) whose value the dialogue never says (as digits or number words); mean over notes.

The last line is always `ours rouge1=.. rouge2=.. rougeLsum=.. unsupported=..% stray_numbers=..`.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ops import eval_asr
from schemas.jobs import Transcript
from worker.evidence import SegmentMap, align, content_stems, statement_spans
from worker.numbers import TEN_WORDS, UNIT_WORDS
from worker.providers.local_summary import summarize_text
from worker.providers.localnlp.rules import AP, CC, EXAM, HPI, RESULTS, ROS
from worker.providers.localnlp.rules import STOP_WORDS as STOP_WORDS  # NLTK's, one copy

REPO: Final = Path(__file__).resolve().parent.parent
DEFAULT_DATA: Final = REPO.parent / "shared" / "data" / "aci-bench" / "valid.csv"
DEFAULT_TRAIN: Final = REPO.parent / "shared" / "data" / "aci-bench" / "train.csv"
DEFAULT_AUDIO: Final = REPO / "ops" / "samples" / "consultation.wav"
DEFAULT_AUDIO_TEXT: Final = REPO / "ops" / "samples" / "consultation.txt"
COMMON_SHARE: Final = 0.30

_TOKEN_RE: Final = re.compile(r"[a-z0-9]+")
_UNITS: Final = UNIT_WORDS
_TENS: Final = TEN_WORDS
_SCALES: Final = {"hundred": 100, "thousand": 1000}
_NUMBER_WORDS: Final = frozenset(_UNITS) | frozenset(_TENS) | frozenset(_SCALES)
_DIGITS_RE: Final = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Row:
    encounter_id: str
    dialogue: str
    note: str


@dataclass(frozen=True)
class Scores:
    rouge1: float
    rouge2: float
    rouge_lsum: float
    unsupported: float
    stray_numbers: float


def read_rows(path: Path) -> list[Row]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            Row(row.get("encounter_id", str(i)), row["dialogue"], row["note"])
            for i, row in enumerate(csv.DictReader(handle))
        ]


_NUMBER_TOKEN_RE: Final = re.compile(r"\d+(?:\.\d+)?|[a-z]+|[.,;:?!]")


def numbers_in(text: str) -> set[float]:
    """Every number a text says, as digits or number words.

    Each number word and each run of them counts ("fifty eight" -> 50, 8, 58; "three hundred
    twenty five" also gives 300 and 325; spoken "one twenty nine" -> 129), and so do decimals
    spoken or tokenised as "ninety eight point six" / "98 . 6".
    """
    tokens = _NUMBER_TOKEN_RE.findall(text.lower())
    values: set[float] = set()
    # (start, end, values, whole values) per run of digits or number words
    runs: list[tuple[int, int, set[float], set[float]]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token[0].isdigit():
            value = float(token)
            values.add(value)
            runs.append((i, i + 1, {value}, {value}))
            i += 1
            continue
        if token in _NUMBER_WORDS:
            j = i
            while j < len(tokens) and (
                tokens[j] in _NUMBER_WORDS
                or (tokens[j] == "and" and j + 1 < len(tokens) and tokens[j + 1] in _NUMBER_WORDS)
            ):
                j += 1
            run_values, wholes = _run_values([t for t in tokens[i:j] if t != "and"])
            values |= run_values
            runs.append((i, j, run_values, wholes))
            i = j
            continue
        i += 1
    # Decimals: a number, "." or "point", then a number.
    for (_, end_a, _, wholes), (start_b, _, parts, _) in itertools.pairwise(runs):
        if start_b == end_a + 1 and tokens[end_a] in {".", "point"}:
            for whole in wholes:
                for part in parts:
                    if part == int(part) and whole == int(whole):
                        values.add(float(f"{int(whole)}.{int(part)}"))
    return values


def _run_values(run: Sequence[str]) -> tuple[set[float], set[float]]:
    """(every value a run of number words can mean, the values its suffixes add up to).

    Suffixes count because speech repeats itself: "ninety ninety seven" says 97.
    """
    values: set[float] = set()
    wholes: set[float] = set()
    for start in range(len(run)):
        part_values, whole = _run_value(run[start:])
        values |= part_values
        wholes.add(whole)
    return values, wholes


def _run_value(run: Sequence[str]) -> tuple[set[float], float]:
    values: set[float] = set()
    total, current = 0, 0
    for index, word in enumerate(run):
        if word in _UNITS:
            values.add(_UNITS[word])
            if index == 0 and 1 <= _UNITS[word] <= 9 and len(run) > 1 and run[1] in _TENS:
                current = _UNITS[word] * 100  # "one twenty nine" = 129 (blood pressure)
            else:
                current += _UNITS[word]
        elif word in _TENS:
            values.add(_TENS[word])
            current += _TENS[word]
        elif word in _SCALES:
            values.add(_SCALES[word])
            current = max(current, 1) * _SCALES[word]
            if _SCALES[word] >= 1000:
                total, current = total + current, 0
        values.add(total + current)
    return {float(v) for v in values}, float(total + current)


def note_numbers(text: str) -> set[float]:
    """Numbers written in a note: digit strings and number-word runs."""
    return numbers_in(text)


class Grounding:
    def __init__(self, train_notes: Iterable[str]) -> None:
        from nltk.stem.porter import PorterStemmer

        self._stemmer = PorterStemmer()
        self._cache: dict[str, str] = {}
        notes = list(train_notes)
        counts: dict[str, int] = {}
        for note in notes:
            for stem in set(self.stems(note)):
                counts[stem] = counts.get(stem, 0) + 1
        self.common = frozenset(s for s, n in counts.items() if n >= COMMON_SHARE * len(notes))

    def _stem(self, token: str) -> str:
        stem = self._cache.get(token)
        if stem is None:
            stem = self._stemmer.stem(token)
            self._cache[token] = stem
        return stem

    def stems(self, text: str) -> list[str]:
        return [
            self._stem(t)
            for t in _TOKEN_RE.findall(text.lower())
            if t not in STOP_WORDS and not t.isdigit()
        ]

    def unsupported_share(self, note: str, dialogue: str) -> float:
        stems = self.stems(note)
        if not stems:
            return 0.0
        known = set(self.stems(dialogue)) | self.common
        return sum(1 for s in stems if s not in known) / len(stems)

    @staticmethod
    def stray_numbers(note: str, dialogue: str) -> int:
        return len(note_numbers(note) - numbers_in(dialogue))


def score(
    predictions: Sequence[str], rows: Sequence[Row], grounding: Grounding, scorer: Any
) -> Scores:
    r1 = r2 = rl = unsupported = stray = 0.0
    for prediction, row in zip(predictions, rows, strict=True):
        result = scorer.score(row.note, prediction)
        r1 += result["rouge1"].fmeasure
        r2 += result["rouge2"].fmeasure
        rl += result["rougeLsum"].fmeasure
        unsupported += grounding.unsupported_share(prediction, row.dialogue)
        stray += grounding.stray_numbers(prediction, row.dialogue)
    n = max(1, len(rows))
    return Scores(100 * r1 / n, 100 * r2 / n, 100 * rl / n, 100 * unsupported / n, stray / n)


def local_note(dialogue: str) -> str:
    summary = summarize_text(dialogue, "SUMMARY")
    return summary.text or ""


# Section coverage (issue 16): the sections a human note has, by its headers, and ours.
_SECTION_OF_HEADER: Final = (
    (re.compile(r"^(?:CHIEF COMPLAINT|CC)\b"), CC),
    (re.compile(r"^(?:HISTORY OF PRESENT ILLNESS|HPI)\b"), HPI),
    (re.compile(r"^REVIEW OF SYSTEMS\b"), ROS),
    (re.compile(r"^(?:PHYSICAL EXAM|EXAM)"), EXAM),
    (re.compile(r"^RESULTS\b"), RESULTS),
    (re.compile(r"^(?:ASSESSMENT|PLAN|IMPRESSION)\b"), AP),
)


def note_sections(note: str) -> set[str]:
    """The sections (ours: CC, HPI, ROS, EXAM, RESULTS, AP) whose header a note has."""
    found: set[str] = set()
    for line in note.splitlines():
        header = line.strip().rstrip(":")
        if header and header.isupper():
            found |= {section for pattern, section in _SECTION_OF_HEADER if pattern.match(header)}
    return found


@dataclass
class EvidenceFigures:
    """Evidence and section figures over a set of encounters (shares, 0..1)."""

    statements: int = 0
    with_evidence: int = 0
    aligned: int = 0
    precise: float = 0.0  # summed: aligned ids that the recorded evidence has too
    content: float = 0.0  # summed: content words of the sentence in its aligned segments
    human: int = 0
    human_supported: int = 0
    required: int = 0
    covered: int = 0

    def add(self, dialogue: str, human_note: str) -> None:
        segmap = SegmentMap.of(Transcript(provider="local", text=dialogue))
        summary = summarize_text(dialogue, "SUMMARY", segmap=segmap)
        text, evidence = summary.text or "", summary.evidence or ()
        self.statements += len(evidence)
        self.with_evidence += sum(1 for e in evidence if e.supported)
        sentences = [text[e.text_start or 0 : e.text_end or 0] for e in evidence]
        for sentence, recorded, found in zip(
            sentences, evidence, align(sentences, segmap), strict=True
        ):
            if found.supported:
                self._aligned(segmap, sentence, set(recorded.segment_ids), found.segment_ids)
        spans = statement_spans(human_note)
        self.human += len(spans)
        self.human_supported += sum(
            a.supported for a in align([human_note[a:b] for a, b in spans], segmap)
        )
        required = note_sections(human_note)
        self.required += len(required)
        self.covered += len(required & note_sections(text))

    def _aligned(
        self, segmap: SegmentMap, sentence: str, truth: set[int], ids: tuple[int, ...]
    ) -> None:
        """One of our sentences aligned as if another provider wrote it: against the evidence
        the engine recorded, and against the content words of the segments it was given."""
        self.aligned += 1
        self.precise += sum(i in truth for i in ids) / len(ids)
        cited = set(content_stems(" ".join(segmap.segments[i].text for i in ids)))
        words = content_stems(sentence)
        self.content += sum(w in cited for w in words) / max(1, len(words))

    def line(self) -> str:
        def pct(part: float, whole: int) -> str:
            return f"{100 * part / max(1, whole):.2f}%"

        return (
            f"evidence share={pct(self.with_evidence, self.statements)} "
            f"section_coverage={pct(self.covered, self.required)} "
            f"aligner_precision={pct(self.precise, self.aligned)} "
            f"aligner_content={pct(self.content, self.aligned)} "
            f"aligner_found={pct(self.aligned, self.statements)} "
            f"human_supported={pct(self.human_supported, self.human)}"
        )


def format_row(name: str, s: Scores) -> str:
    return (
        f"{name} rouge1={s.rouge1:.2f} rouge2={s.rouge2:.2f} rougeLsum={s.rouge_lsum:.2f} "
        f"unsupported={s.unsupported:.2f}% stray_numbers={s.stray_numbers:.2f}"
    )


def run_notes(data: Path, train: Path, out: Any) -> Scores:
    from rouge_score import rouge_scorer

    rows = read_rows(data)
    grounding = Grounding(row.note for row in read_rows(train))
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeLsum"], use_stemmer=False)
    started = time.perf_counter()
    ours = [local_note(row.dialogue) for row in rows]
    elapsed = time.perf_counter() - started
    words = sum(len(n.split()) for n in ours) / max(1, len(ours))
    human_words = sum(len(r.note.split()) for r in rows) / max(1, len(rows))
    print(
        f"# {len(rows)} encounters from {data.name}; common stems from {train.name}; "
        f"ours: {words:.0f} words/note (human {human_words:.0f}), {elapsed:.2f} s total",
        file=out,
    )
    reference = score([row.dialogue for row in rows], rows, grounding, scorer)
    human = score([row.note for row in rows], rows, grounding, scorer)
    result = score(ours, rows, grounding, scorer)
    print(format_row("transcript", reference), file=out)
    print(format_row("human", human), file=out)
    figures = EvidenceFigures()
    for row in rows:
        figures.add(row.dialogue, row.note)
    print(figures.line(), file=out)
    print(format_row("ours", result), file=out)
    return result


def _words(text: str) -> str:
    """Normalised words for WER: lower case, [a-z0-9'] only, speaker tags dropped."""
    text = re.sub(r"^\s*\w+\s*:", " ", text, flags=re.MULTILINE)
    text = re.sub(r"\b(\w+) n't\b", r"\1n't", text.lower())
    text = re.sub(r"\s+'", "'", text)
    return " ".join(re.findall(r"[a-z0-9']+", text))


def run_asr(audio: Path, reference_text: Path, workers: int, out: Any) -> tuple[float, float]:
    import asyncio

    import jiwer

    from worker.providers.local_asr import LocalTranscriber

    async def transcribe() -> tuple[str, float, float, float]:
        transcriber = LocalTranscriber(workers=workers)
        try:
            started = time.perf_counter()
            await transcriber.transcribe_file(audio)  # loads the model
            load_and_first = time.perf_counter() - started
            started = time.perf_counter()
            result = await transcriber.transcribe_file(audio)
            return result.text, result.duration_s, time.perf_counter() - started, load_and_first
        finally:
            transcriber.close()

    text, duration, elapsed, first = asyncio.run(transcribe())
    wer = jiwer.wer(_words(reference_text.read_text(encoding="utf-8")), _words(text))
    speed = duration / elapsed if elapsed > 0 else float("inf")
    print(
        f"# {audio.name}: {duration:.1f} s of audio; first call (with model load) {first:.2f} s; "
        f"{os.cpu_count()} cores",
        file=out,
    )
    print(
        f"asr wer={100 * wer:.2f}% rtf={elapsed / duration:.3f} speed={speed:.1f}x_realtime",
        file=out,
    )
    return wer, speed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scribe-eval", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ACI-Bench style CSV")
    parser.add_argument("--train", type=Path, default=DEFAULT_TRAIN, help="for common stems")
    parser.add_argument("--asr", action="store_true", help="evaluate local speech recognition")
    parser.add_argument("--audio", type=Path, default=None, help="--asr: one recording only")
    parser.add_argument("--audio-text", type=Path, default=DEFAULT_AUDIO_TEXT)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--roles", action="store_true", help="speaker roles (ops/eval_roles.py)")
    parser.add_argument("--no-speech", action="store_true", help="--roles: text only")
    parser.add_argument(
        "--recordings", type=Path, default=None, help="a folder with manifest.json (--roles)"
    )
    eval_asr.add_arguments(parser)
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    if args.roles:
        from ops.eval_roles import run_roles

        return run_roles(args.data, not args.no_speech, args.recordings, sys.stdout)
    if args.asr and args.audio is not None:
        run_asr(args.audio, args.audio_text, args.workers, sys.stdout)
        return 0
    if args.asr:
        return eval_asr.run(args, sys.stdout)
    for path in (args.data, args.train):
        if not path.is_file():
            print(f"scribe-eval: no such file: {path}", file=sys.stderr)
            return 2
    run_notes(args.data, args.train, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
