"""Diarization alone on the recording set, without speech recognition (seconds, not an hour).

    python -m ops.eval_diarize [--recordings ops/recordings]

Per recording of the manifest (ops/make_recordings.py writes each turn's true times):
- window purity: the speech windows worker/providers/diarize.py clusters, each window's true
  speaker the turn it overlaps most, the two clusters mapped to speakers one-to-one the way
  that agrees with the most windows: the share of windows that agree;
- one voice alone: each speaker's turns cut out and joined (0.3 s between), diarized again:
  the number of speakers found (1 is right).

Speaker-turn and role accuracy with Whisper's words are `scribe-eval --asr` / `--roles`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from worker.providers import diarize

DEFAULT_RECORDINGS: Final = Path(__file__).resolve().parent / "recordings"
GAP_S: Final = 0.3


def _truth(turns: Sequence[dict[str, Any]], windows: Sequence[tuple[int, int]]) -> list[str]:
    """Per window, the speaker of the turn it overlaps most ("" for none)."""
    out: list[str] = []
    for a, b in windows:
        start, end = a / 100, b / 100
        best, most = "", 0.0
        for turn in turns:
            overlap = min(end, float(turn["end_s"])) - max(start, float(turn["start_s"]))
            if overlap > most:
                best, most = str(turn["speaker"]), overlap
        out.append(best)
    return out


def window_purity(clusters: Sequence[int], truth: Sequence[str]) -> float:
    """The share of windows with a true speaker whose cluster maps to it (best one-to-one)."""
    pairs = [(c, t) for c, t in zip(clusters, truth, strict=True) if t]
    speakers = sorted({t for _, t in pairs})
    best = 0
    for first in speakers:
        for second in speakers:
            if second != first or len(speakers) == 1:
                names = {0: first, 1: second}
                best = max(best, sum(names[c] == t for c, t in pairs))
    return best / max(1, len(pairs))


def one_voice(audio: npt.NDArray[np.floating], turns: Sequence[dict[str, Any]], who: str) -> int:
    """Speakers found in one speaker's turns alone."""
    rate = diarize.SAMPLE_RATE
    gap = np.zeros(int(GAP_S * rate), dtype=audio.dtype)
    parts = [
        piece
        for t in turns
        if t["speaker"] == who
        for piece in (audio[int(float(t["start_s"]) * rate) : int(float(t["end_s"]) * rate)], gap)
    ]
    if not parts:
        return 0
    return len(set(diarize.window_voices(np.concatenate(parts))[1].tolist()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eval_diarize", description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", type=Path, default=DEFAULT_RECORDINGS)
    args = parser.parse_args(argv)
    manifest_path = args.recordings / "manifest.json"
    if not manifest_path.is_file():
        print(f"eval_diarize: no manifest at {manifest_path}", file=sys.stderr)
        return 2
    from faster_whisper import decode_audio

    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    alone_right = alone_total = 0
    for entry in manifest["recordings"]:
        audio = decode_audio(
            str(args.recordings / entry["file"]), sampling_rate=diarize.SAMPLE_RATE
        )
        windows, clusters = diarize.window_voices(audio)
        purity = window_purity(clusters.tolist(), _truth(entry["turns"], windows))
        found = {who: one_voice(audio, entry["turns"], who) for who in ("doctor", "patient")}
        alone_right += sum(n == 1 for n in found.values())
        alone_total += len(found)
        print(
            f"diarize {entry['id']}: {len(windows)} windows, window purity {100 * purity:.1f} %, "
            f"one voice alone: clinician {found['doctor']}, patient {found['patient']} speakers"
        )
    print(f"diarize one voice alone: one speaker found in {alone_right} of {alone_total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
