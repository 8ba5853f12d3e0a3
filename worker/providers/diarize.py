"""Offline speaker turns for local speech recognition: who spoke when, from the decoded audio.

Nothing is downloaded and nothing is learned ahead of time; numpy only (it comes with the
`local` extra), a few hundred milliseconds per minute of audio on one core:

1. Frames of 25 ms every 10 ms: log energy, and 12 mel-frequency cepstral coefficients (a 26-band
   mel filterbank over a 512-point spectrum, DCT-II, c0 dropped), computed in blocks so a long
   recording never holds its whole spectrum.
2. Speech: frames within SPEECH_RANGE_DB of the loud end of the recording (its 95th percentile)
   and above its quiet end; runs of speech with gaps under BRIDGE_S bridged, cut into windows of
   at most WINDOW_S (a window shorter than MIN_WINDOW_S is left out).
3. Each window's voice: the mean of its frames' coefficients, each dimension standardised over
   the recording (adding their standard deviations made odd windows outliers), and its pitch:
   the median log F0 of its voiced frames (autocorrelation peak between PITCH_MIN_HZ and
   PITCH_MAX_HZ of at least VOICED_MIN of the frame's energy), from the recording's median in
   units of PITCH_UNIT. Mean cepstra follow what is said as well as who says it: in one
   recording of the set (ACI-Bench valid D2N069) a stretch of the clinician's speech lay
   farther from the rest of it than the patient did, and the clusters split the clinician;
   with the pitch every recording's windows are 99-100 % one speaker's.
4. Two clusters by k-means (deterministic: started from the split along the windows' first
   principal component); when the clusters are not apart
   (between-centre distance under MIN_SEPARATION within-cluster deviations, or under MIN_APART
   cepstral units) it is one speaker.
5. Each recognised word (or, without word times, each segment) takes the voice of the window it
   overlaps most (the nearest window when none); a segment is split where its words change
   voice.

Labels are SPEAKER_00, SPEAKER_01 in order of first appearance. Roles come after, from what each
speaker says (worker/roles.py). CPU work: call it from a worker thread.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

SAMPLE_RATE: Final = 16_000
FRAME: Final = 400  # 25 ms
HOP: Final = 160  # 10 ms
N_FFT: Final = 512
N_MELS: Final = 26
N_CEPS: Final = 12
BLOCK_FRAMES: Final = 6_000  # one minute of frames per block
SPEECH_RANGE_DB: Final = 35.0
BRIDGE_S: Final = 0.12
WINDOW_S: Final = 1.5
MIN_WINDOW_S: Final = 0.2
# Between-centre over within-cluster distance: two espeak-ng voices gave 1.4 to 2.2, one voice
# split in two 0.9 to 1.0 (scribe-eval --roles; docs/quality.md).
MIN_SEPARATION: Final = 1.25
# And the centres' distance in cepstral units: two espeak-ng voices 21 to 30, one voice 5 to 11.
MIN_APART: Final = 15.0
KMEANS_STEPS: Final = 30
PITCH_MIN_HZ: Final = 70.0
PITCH_MAX_HZ: Final = 400.0
PITCH_FFT: Final = 1024  # >= FRAME + the longest lag, so the autocorrelation does not wrap
VOICED_MIN: Final = 0.45
# The pitch in fixed units of log F0 (not standardised: two speakers of one pitch would have
# their pitch noise blown up to a unit's spread).
PITCH_UNIT: Final = 0.1

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Piece:
    """A recognised segment, with its words when the recogniser gave word times."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class SpeakerSegment:
    start: float
    end: float
    text: str
    speaker: str


def _mel_filterbank() -> Floats:
    def mel(hz: Floats) -> Floats:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    edges_mel = np.linspace(mel(np.array(0.0)), mel(np.array(SAMPLE_RATE / 2)), N_MELS + 2)
    edges_hz = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    bins = np.floor((N_FFT + 1) * edges_hz / SAMPLE_RATE).astype(int)
    bank = np.zeros((N_MELS, N_FFT // 2 + 1))
    for m in range(1, N_MELS + 1):
        left, centre, right = bins[m - 1], bins[m], bins[m + 1]
        for k in range(left, centre):
            bank[m - 1, k] = (k - left) / max(1, centre - left)
        for k in range(centre, right):
            bank[m - 1, k] = (right - k) / max(1, right - centre)
    return bank


def _dct_matrix() -> Floats:
    n = np.arange(N_MELS)
    k = np.arange(1, N_CEPS + 1)[:, None]
    return np.asarray(np.cos(np.pi * k * (2 * n + 1) / (2 * N_MELS)), dtype=np.float64)


def frame_features(audio: npt.NDArray[np.floating]) -> tuple[Floats, Floats]:
    """(cepstra [frames, N_CEPS], log energy in dB [frames]) of 16 kHz mono samples."""
    signal = np.asarray(audio, dtype=np.float64)
    count = 0 if len(signal) < FRAME else 1 + (len(signal) - FRAME) // HOP
    ceps = np.zeros((count, N_CEPS))
    energy = np.zeros(count)
    if count == 0:
        return ceps, energy
    window = np.hamming(FRAME)
    bank, dct = _mel_filterbank(), _dct_matrix()
    frames_view = np.lib.stride_tricks.sliding_window_view(signal, FRAME)[::HOP]
    for first in range(0, count, BLOCK_FRAMES):
        block = frames_view[first : first + BLOCK_FRAMES]
        energy[first : first + len(block)] = 10.0 * np.log10(np.mean(block**2, axis=1) + 1e-12)
        power = np.abs(np.fft.rfft(block * window, n=N_FFT)) ** 2
        ceps[first : first + len(block)] = np.log(power @ bank.T + 1e-10) @ dct.T
    return ceps, energy


def frame_pitch(audio: npt.NDArray[np.floating]) -> Floats:
    """log F0 per frame (frames as frame_features), NaN where the frame is not voiced."""
    signal = np.asarray(audio, dtype=np.float64)
    count = 0 if len(signal) < FRAME else 1 + (len(signal) - FRAME) // HOP
    out = np.full(count, np.nan)
    if count == 0:
        return out
    shortest, longest = int(SAMPLE_RATE / PITCH_MAX_HZ), int(SAMPLE_RATE / PITCH_MIN_HZ)
    frames_view = np.lib.stride_tricks.sliding_window_view(signal, FRAME)[::HOP]
    for first in range(0, count, BLOCK_FRAMES):
        block = frames_view[first : first + BLOCK_FRAMES]
        block = block - block.mean(axis=1, keepdims=True)
        power = np.abs(np.fft.rfft(block, n=PITCH_FFT)) ** 2
        lags = np.fft.irfft(power, n=PITCH_FFT)[:, : longest + 1]
        best = shortest + np.argmax(lags[:, shortest:], axis=1)
        peak = lags[np.arange(len(block)), best] / (lags[:, 0] + 1e-12)
        log_f0 = np.log(SAMPLE_RATE / best)
        out[first : first + len(block)] = np.where(peak >= VOICED_MIN, log_f0, np.nan)
    return out


def speech_windows(energy: Floats) -> list[tuple[int, int]]:
    """[start, end) frame ranges of speech, cut into windows of at most WINDOW_S."""
    if len(energy) == 0:
        return []
    loud, quiet = np.percentile(energy, 95), np.percentile(energy, 5)
    threshold = max(loud - SPEECH_RANGE_DB, quiet + 3.0)
    speech = energy > threshold
    bridge, longest, shortest = (round(s * 100) for s in (BRIDGE_S, WINDOW_S, MIN_WINDOW_S))
    runs: list[list[int]] = []
    for index in np.flatnonzero(speech):
        if runs and index - runs[-1][1] <= bridge:
            runs[-1][1] = int(index) + 1
        else:
            runs.append([int(index), int(index) + 1])
    windows: list[tuple[int, int]] = []
    for start, end in runs:
        pieces = max(1, round((end - start) / longest))
        edges = np.linspace(start, end, pieces + 1).round().astype(int)
        windows += [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b - a >= shortest]
    return windows


def _standardised(matrix: Floats) -> Floats:
    spread = matrix.std(axis=0)
    return np.asarray((matrix - matrix.mean(axis=0)) / np.where(spread > 0, spread, 1.0))


def _window_pitch(log_f0: Floats, windows: Sequence[tuple[int, int]]) -> Floats:
    """Each window's median log F0; a window with no voiced frame gets the windows' median."""
    medians = np.full(len(windows), np.nan)
    for index, (a, b) in enumerate(windows):
        voiced = log_f0[a:b][np.isfinite(log_f0[a:b])]
        if len(voiced):
            medians[index] = np.median(voiced)
    known = medians[np.isfinite(medians)]
    return np.where(np.isfinite(medians), medians, np.median(known) if len(known) else 0.0)


def _embeddings(
    ceps: Floats, log_f0: Floats, windows: Sequence[tuple[int, int]]
) -> tuple[Floats, Floats]:
    """(standardised mean cepstra with the weighted standardised pitch, raw mean cepstra) of the
    windows."""
    matrix = np.asarray([ceps[a:b].mean(axis=0) for a, b in windows], dtype=np.float64)
    pitch = _window_pitch(log_f0, windows)[:, None]
    pitch = (pitch - np.median(pitch)) / PITCH_UNIT
    return np.hstack([_standardised(matrix), pitch]), matrix


def _lloyd(points: Floats, labels: npt.NDArray[np.int_]) -> tuple[npt.NDArray[np.int_], Floats]:
    centres = np.zeros((2, points.shape[1]))
    for _ in range(KMEANS_STEPS):
        for k in (0, 1):
            members = points[labels == k]
            centres[k] = members.mean(axis=0) if len(members) else points.mean(axis=0)
        distances = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=2)
        new = np.argmin(distances, axis=1)
        if (new == labels).all():
            break
        labels = new
    return labels, centres


def two_clusters(points: Floats, raw: Floats) -> npt.NDArray[np.int_]:
    """Cluster index (0 or 1) per row of points (standardised; raw: the same rows unscaled);
    all 0 when the rows do not form two groups.

    k-means started from the split of the rows along their first principal component (the
    direction in which the voices differ most), which a few odd windows do not pull aside."""
    count = len(points)
    if count < 2:
        return np.zeros(count, dtype=int)
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projection = centred @ vt[0]
    labels, centres = _lloyd(points, (projection > np.median(projection)).astype(int))
    if len(set(labels.tolist())) < 2:
        return np.zeros(count, dtype=int)
    within = np.sqrt(np.mean(np.sum((points - centres[labels]) ** 2, axis=1)))
    apart = float(np.linalg.norm(centres[0] - centres[1]))
    raw_apart = float(np.linalg.norm(raw[labels == 0].mean(axis=0) - raw[labels == 1].mean(axis=0)))
    if raw_apart < MIN_APART or apart < MIN_SEPARATION * within:
        return np.zeros(count, dtype=int)
    return labels


def _voice_at(start: float, end: float, spans: Floats, voices: npt.NDArray[np.int_]) -> int | None:
    """The voice of the window overlapping [start, end) most, else of the nearest window."""
    if len(spans) == 0:
        return None
    overlap = np.minimum(spans[:, 1], end) - np.maximum(spans[:, 0], start)
    if overlap.max() > 0:
        return int(voices[int(np.argmax(overlap))])
    middle = (start + end) / 2
    distance = np.abs((spans[:, 0] + spans[:, 1]) / 2 - middle)
    return int(voices[int(np.argmin(distance))])


def _units(piece: Piece) -> tuple[Word, ...]:
    """The piece's words when it has word times, else the piece as one unit."""
    return piece.words or (Word(piece.start, piece.end, piece.text),)


def window_voices(
    audio: npt.NDArray[np.floating],
) -> tuple[list[tuple[int, int]], npt.NDArray[np.int_]]:
    """The speech windows ([start, end) frames) and the voice (0 or 1) of each."""
    ceps, energy = frame_features(audio)
    windows = speech_windows(energy)
    if not windows:
        return [], np.zeros(0, dtype=int)
    return windows, two_clusters(*_embeddings(ceps, frame_pitch(audio), windows))


def speaker_segments(
    audio: npt.NDArray[np.floating], pieces: Sequence[Piece]
) -> list[SpeakerSegment]:
    """The recognised pieces with a speaker each; a piece whose words change voice is split
    where they do."""
    windows, voices = window_voices(audio)
    spans = np.asarray([(a / 100, b / 100) for a, b in windows], dtype=np.float64).reshape(-1, 2)
    names: dict[int, str] = {}
    out: list[SpeakerSegment] = []
    previous = 0
    for piece in pieces:
        run: int | None = None
        for unit in _units(piece):
            found = _voice_at(unit.start, unit.end, spans, voices)
            voice = previous if found is None else found
            name = names.setdefault(voice, f"SPEAKER_{len(names):02d}")
            text = unit.text.strip()
            if voice == run:
                last = out[-1]
                out[-1] = SpeakerSegment(last.start, unit.end, f"{last.text} {text}".strip(), name)
            else:
                out.append(SpeakerSegment(unit.start, unit.end, text, name))
            previous = run = voice
    return [s for s in out if s.text]
