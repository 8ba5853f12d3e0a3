"""Real encoded recordings made at test time with PyAV (FFmpeg's encoders), a few seconds each.

A tone with a pause, so a decoder has something that is not silence; the duration is the
number of samples written, so a probe's answer can be checked against it.
"""

from __future__ import annotations

import math
from pathlib import Path

from ops.audio_encode import FORMATS, encode_pcm

__all__ = ["FORMATS", "encode", "encode_pcm", "tone_samples"]


def tone_samples(seconds: float, rate: int) -> list[int]:
    """A 440 Hz tone, silent for the middle fifth: 16-bit samples."""
    total = round(seconds * rate)
    quiet = range(total * 2 // 5, total * 3 // 5)
    return [
        0 if i in quiet else int(8000 * math.sin(2 * math.pi * 440 * i / rate))
        for i in range(total)
    ]


def encode(
    path: Path,
    container: str,
    seconds: float = 3.0,
    *,
    channels: int = 1,
    options: dict[str, str] | None = None,
) -> Path:
    """Writes seconds of tone to path in the container's usual codec; returns path. options go
    to FFmpeg's muxer (webm live=1 writes no duration, as a browser's MediaRecorder does; mp4
    movflags=+faststart puts the index first)."""
    rate = FORMATS[container][3]
    samples = tone_samples(seconds, rate)
    pcm = b"".join(v.to_bytes(2, "little", signed=True) * channels for v in samples)
    return encode_pcm(path, container, pcm, rate, channels=channels, options=options)
