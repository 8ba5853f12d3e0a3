"""Speaker roles from what is said: every transcript segment gets a `speaker` and a `role`.

The model (worker/roles_model.json, trained by `python -m ops.train_roles` on ACI-Bench train's
`[doctor]` / `[patient]` turns) is a logistic regression over a turn's words, word bigrams and a
few shape tokens; a turn's score is its log-odds of being the clinician's. Inference is plain
Python, so every transcriber (Intron, Invox, local) gets the same roles.

Assignment (`assign_roles`), never from who spoke first:
- segments with a speaker label: each speaker's turns are scored and averaged (each turn's score
  clipped to +-CLIP, so one long turn does not decide alone; consecutive turns of one speaker
  are scored as one); the most clinician-like speaker is
  the clinician, the most patient-like of the others the patient, any further speaker other; a
  lone speaker is clinician or patient by the sign of its score;
- segments without one (Invox's, an undiarized transcript), in order: a two-state chain over
  them (`sequence_roles`), its chance of a speaker change between neighbours fitted to the
  transcript, so a short "okay ." takes its role from its neighbours;
- a segment with no words: unknown.

A segment the provider left without a speaker gets the label UNLABELLED; a role the provider set
is kept. The local summary and note engine reads the same roles from a transcript's speaker lines
(worker/providers/localnlp/turns.py, `diarized_roles`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final, Protocol

from schemas.jobs import SpeakerRole, Transcript

MODEL_PATH: Final = Path(__file__).resolve().parent / "roles_model.json"
UNLABELLED: Final = "UNLABELLED"
CLIP: Final = 4.0
INTRO_LOG_ODDS: Final = 3.0
# Unlabelled segments (sequence_roles): scores clipped to +-SEQUENCE_CLIP; the chance of a
# speaker change between neighbours starts at SWITCH_PRIOR, worth SWITCH_PRIOR_COUNT
# neighbours, is fitted in SWITCH_ITERATIONS EM steps and kept off 0 and 1 by SWITCH_MIN.
SEQUENCE_CLIP: Final = 8.0
SWITCH_ITERATIONS: Final = 8
SWITCH_MIN: Final = 0.02
SWITCH_PRIOR: Final = 0.8
SWITCH_PRIOR_COUNT: Final = 5.0
_WORD_RE: Final = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+")
# A clinician introducing themself ("i'm dr. baker", "my name is nurse ..."): rare in ACI-Bench
# train (5 turns), so a fixed rule (INTRO_LOG_ODDS added to the score), not a learned weight.
_INTRO_RE: Final = re.compile(
    r"\b(?:i'm|i am|my name is|this is|it's)\s+(?:dr\b|doctor\b|nurse\b|the (?:doctor|nurse)\b)"
)
_SHORT_WORDS: Final = 3
_LONG_WORDS: Final = 25


def features(text: str) -> list[str]:
    """A turn's features: words, word bigrams (from a start mark), and shape tokens."""
    words = ["<num>" if w.isdigit() else w for w in _WORD_RE.findall(text.lower())]
    out = [f"w:{w}" for w in words]
    padded = ["<s>", *words]
    out += [f"b:{a}_{b}" for a, b in itertools.pairwise(padded)]
    if "?" in text:
        out.append("s:question")

    if len(words) <= _SHORT_WORDS:
        out.append("s:short")
    elif len(words) > _LONG_WORDS:
        out.append("s:long")
    return out


@dataclass(frozen=True)
class RoleModel:
    bias: float
    weights: Mapping[str, float]

    def score(self, text: str) -> float | None:
        """Log-odds that the clinician said text; None when it has no words."""
        if not _WORD_RE.search(text.lower()):
            return None
        intro = INTRO_LOG_ODDS if _INTRO_RE.search(text.lower()) else 0.0
        return intro + self.bias + sum(self.weights.get(f, 0.0) for f in set(features(text)))


@lru_cache(maxsize=1)
def load_model(path: Path = MODEL_PATH) -> RoleModel:
    """The shipped weights (read once per process)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    bias, weights = raw["bias"], raw["weights"]
    if not isinstance(bias, int | float) or not isinstance(weights, dict):
        raise ValueError("roles model: bias must be a number and weights an object")
    return RoleModel(float(bias), {str(k): float(v) for k, v in weights.items()})


def _clip_to(value: float, bound: float) -> float:
    return max(-bound, min(bound, value))


def _clip(value: float) -> float:
    return _clip_to(value, CLIP)


def _speaker_roles(scores: Mapping[str, list[float]]) -> dict[str, SpeakerRole]:
    """One role per speaker label from the clipped scores of its turns."""
    means = {s: sum(v) / len(v) for s, v in scores.items() if v}
    roles: dict[str, SpeakerRole] = {s: "unknown" for s in scores if s not in means}
    if len(means) == 1:
        (speaker, mean), *_ = means.items()
        roles[speaker] = "clinician" if mean > 0 else "patient"
        return roles
    # Ties broken by label, so the outcome never depends on who spoke first.
    ranked = sorted(means, key=lambda s: (-means[s], s))
    for position, speaker in enumerate(ranked):
        roles[speaker] = "other"
        if position == 0:
            roles[speaker] = "clinician"
    if ranked:
        roles[ranked[-1]] = "patient"
    return roles


def _run_scores(
    turns: Sequence[tuple[str | None, str]], model: RoleModel
) -> dict[str, list[float]]:
    """Each labelled speaker's clipped scores, one per run of its consecutive turns (a speaker
    line of Intron's, or the segments a diarizer gave one voice in a row, score alike)."""
    runs: list[tuple[str, list[str]]] = []
    for speaker, text in turns:
        if speaker is None:
            continue
        if runs and runs[-1][0] == speaker:
            runs[-1][1].append(text)
        else:
            runs.append((speaker, [text]))
    scores: dict[str, list[float]] = {}
    for speaker, texts in runs:
        bucket = scores.setdefault(speaker, [])
        value = model.score(" ".join(texts))
        if value is not None:
            bucket.append(_clip(value))
    return scores


def _forward(odds: Sequence[float], switch: float) -> list[float]:
    """P(clinician | segments 0..k) for each k, normalised at every step (no underflow)."""
    out: list[float] = []
    previous = 0.5
    for value in odds:
        clinician = 1.0 / (1.0 + math.exp(-value))
        prior = previous * (1.0 - switch) + (1.0 - previous) * switch
        joint = prior * clinician
        previous = joint / (joint + (1.0 - prior) * (1.0 - clinician))
        out.append(previous)
    return out


def _backward(odds: Sequence[float], switch: float) -> list[tuple[float, float]]:
    """Per segment k, P(segments k+1.. | clinician at k) and (.. | patient at k), summing to 1."""
    out = [(0.5, 0.5)] * len(odds)
    for k in range(len(odds) - 2, -1, -1):
        clinician = 1.0 / (1.0 + math.exp(-odds[k + 1]))
        after_c = clinician * out[k + 1][0]
        after_p = (1.0 - clinician) * out[k + 1][1]
        from_c = (1.0 - switch) * after_c + switch * after_p
        from_p = switch * after_c + (1.0 - switch) * after_p
        out[k] = (from_c / (from_c + from_p), from_p / (from_c + from_p))
    return out


def _posteriors(odds: Sequence[float], switch: float) -> tuple[list[float], float]:
    """P(clinician) per segment given them all, and the expected share of speaker changes
    between neighbours (forward-backward of a two-state chain)."""
    forward = _forward(odds, switch)
    backward = _backward(odds, switch)
    posterior = [
        f * b[0] / (f * b[0] + (1.0 - f) * b[1]) for f, b in zip(forward, backward, strict=True)
    ]
    changes = SWITCH_PRIOR_COUNT * SWITCH_PRIOR
    for k in range(len(odds) - 1):
        clinician = 1.0 / (1.0 + math.exp(-odds[k + 1]))
        next_c = clinician * backward[k + 1][0]
        next_p = (1.0 - clinician) * backward[k + 1][1]
        stay = forward[k] * next_c + (1.0 - forward[k]) * next_p
        move = forward[k] * next_p + (1.0 - forward[k]) * next_c
        changes += switch * move / (switch * move + (1.0 - switch) * stay)
    return posterior, changes / (len(odds) - 1 + SWITCH_PRIOR_COUNT)


def sequence_roles(scores: Sequence[float]) -> list[bool]:
    """Whether each of a run of unlabelled segments, in order, is the clinician's: a two-state
    chain whose chance of a speaker change between neighbours is fitted to this transcript by
    EM (SWITCH_ITERATIONS steps from SWITCH_PRIOR, which also weighs in as SWITCH_PRIOR_COUNT
    pseudo-neighbours, kept within [SWITCH_MIN, 1 - SWITCH_MIN]): whole turns alternate,
    sentences cut from turns less so (ACI-Bench train, 5-fold by dialogue, chose the start and
    weight). A score is the model's log-odds, used as the segment's evidence; a lone segment is
    its sign. Posterior decoding (each segment's likelier role). Symmetric in time and in the
    two roles: who spoke first decides nothing. Linear in the segments."""
    odds = [_clip_to(s, SEQUENCE_CLIP) for s in scores]
    switch = SWITCH_PRIOR
    for _ in range(SWITCH_ITERATIONS if len(odds) > 1 else 0):
        _, expected = _posteriors(odds, switch)
        switch = min(1.0 - SWITCH_MIN, max(SWITCH_MIN, expected))
    posterior, _ = _posteriors(odds, switch)
    return [p > 0.5 for p in posterior]


def assign_roles(
    turns: Sequence[tuple[str | None, str]], model: RoleModel | None = None
) -> list[SpeakerRole]:
    """A role for each (speaker label or None, text) turn, as the module docstring says."""
    model = model or load_model()
    raw = [model.score(text) for _, text in turns]
    by_speaker = _speaker_roles(_run_scores(turns, model))
    unlabelled = [
        value
        for (speaker, _), value in zip(turns, raw, strict=True)
        if speaker is None and value is not None
    ]
    in_order = iter(sequence_roles(unlabelled))
    out: list[SpeakerRole] = []
    for (speaker, _), value in zip(turns, raw, strict=True):
        if value is None:
            out.append("unknown")
        elif speaker is not None:
            out.append(by_speaker[speaker])
        else:
            out.append("clinician" if next(in_order) else "patient")
    return out


def with_roles(transcript: Transcript) -> Transcript:
    """The transcript with a speaker and a role on every segment (a role already set is kept).
    Pure CPU work, linear in the transcript: run it off the event loop."""
    segments = transcript.segments
    if all(s.speaker is not None and s.role is not None for s in segments):
        return transcript
    roles = assign_roles([(s.speaker, s.text) for s in segments])
    filled = tuple(
        s.model_copy(update={"speaker": s.speaker or UNLABELLED, "role": s.role or role})
        for s, role in zip(segments, roles, strict=True)
    )
    return transcript.model_copy(update={"segments": filled})


class _Spoken(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def speaker(self) -> str | None: ...


def speaker_lines(segments: Sequence[_Spoken]) -> str:
    """`LABEL: words` lines, one per run of one speaker's segments, as Intron writes a diarized
    transcript (the local engine reads roles from them); "" when no segment has a speaker."""
    if not any(s.speaker for s in segments):
        return ""
    lines: list[tuple[str, list[str]]] = []
    for segment in segments:
        words = " ".join(segment.text.split())
        if not words:
            continue
        speaker = segment.speaker or UNLABELLED
        if lines and lines[-1][0] == speaker:
            lines[-1][1].append(words)
        else:
            lines.append((speaker, [words]))
    return "\n".join(f"{speaker}: {' '.join(words)}" for speaker, words in lines)


async def with_roles_in_thread(transcript: Transcript) -> Transcript:
    """with_roles in a worker thread: the stages call it on every transcript they pass on."""
    return await asyncio.to_thread(with_roles, transcript)


_ROLE_ORDER: Final[dict[SpeakerRole, int]] = {
    "clinician": 0,
    "patient": 1,
    "other": 2,
    "unknown": 3,
}


def labelled_by_role(turns: Sequence[tuple[str, str]]) -> list[tuple[str, SpeakerRole]]:
    """(label, role) per (label, text) turn, the labels renamed SPEAKER_00 (the clinician),
    SPEAKER_01 (the patient), then the others: a diarizer's labels mean nothing across
    recordings, so the chunks of one long recording get the same label for the same role."""
    roles = assign_roles(turns)
    rank: dict[str, tuple[int, int]] = {}
    for position, ((label, _), role) in enumerate(zip(turns, roles, strict=True)):
        order = (_ROLE_ORDER[role], position)
        rank[label] = min(rank.get(label, order), order)
    ordered = sorted(rank, key=lambda label: rank[label])
    names = {label: f"SPEAKER_{n:02d}" for n, label in enumerate(ordered)}
    return [(names[label], role) for (label, _), role in zip(turns, roles, strict=True)]
